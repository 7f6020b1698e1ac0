"""The recheck task (nanor1/tasks/recheck.py): its four writers, the strategy reader, the reward, the toy build."""
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from nanor1.tasks import arithmetic, recheck
from nanor1.reflection import reflection_metrics
from nanor1.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "data"))
import build_tiny  # noqa: E402

ROW = {"id": "x", "index": 0, "a": 347, "b": 585, "gold": "932"}


def test_writers_by_hand():
    rng = random.Random(0)
    g = recheck.guess(347, random.Random(0))
    assert 100 <= g <= 1999 and 10 <= recheck.guess(34, rng) <= 199
    assert recheck.completion(347, 585, "short", random.Random(0)) == f" Guess: {g}.</think> <answer>{g}</answer>"
    careful = recheck.completion(347, 585, "careful", random.Random(1))  # seed 1: no slip
    assert careful == " 7+5=12, 4+8+1=13, 3+5+1=9.</think> <answer>932</answer>"
    r = random.Random(3)  # the same draws as the writers below make: guess, phrase, then (no) slip
    g, phrase = recheck.guess(347, r), r.choice(recheck.PHRASES)
    good = recheck.completion(347, 585, "recheck", random.Random(3))
    bad = recheck.completion(347, 585, "superficial", random.Random(3))
    assert good == f" Guess: {g}. {phrase} 7+5=12, 4+8+1=13, 3+5+1=9.</think> <answer>932</answer>"
    assert bad == f" Guess: {g}. {phrase} yes, {g}.</think> <answer>{g}</answer>"
    with pytest.raises(ValueError, match="unknown writer"):
        recheck.completion(1, 2, "lazy", rng)


def test_corpus_shares_and_correctness():
    """Each writer appears at its share, and is right when the docstring says it is."""
    task, rng, n = get_task("recheck"), random.Random(7), 10000
    seen, right = Counter(), Counter()
    for _ in range(n):
        prompt, text = recheck.document(rng)
        a, b = map(int, prompt.split("What is ")[1].split("?")[0].split("+"))
        ok = task.is_correct(task.reward(text, {"gold": str(a + b)}))
        kind = recheck.strategy(text)
        seen[kind] += 1
        right[kind] += ok
    assert seen["other"] == 0
    for writer, share in recheck.WRITERS.items():
        assert abs(seen[writer] / n - share) < 0.015, (writer, seen[writer] / n)
    # a guess is right by luck only (about 1 in 190 two-digit guesses); the columns unless a column slipped
    assert right["short"] / seen["short"] < 0.01 and right["superficial"] / seen["superficial"] < 0.01
    for writer in ("careful", "recheck"):
        assert 1 - arithmetic.SLIP_RATE - 0.02 < right[writer] / seen[writer] < 1.0


@pytest.mark.parametrize("text, kind", [
    (" Guess: 822.</think> <answer>822</answer>", "short"),
    (" 7+5=12, 4+8+1=13, 3+5+1=9.</think> <answer>932</answer>", "careful"),
    (" Guess: 822. Wait, let me re-check: 7+5=12, 4+8+1=13, 3+5+1=9.</think> <answer>932</answer>", "recheck"),
    (" Guess: 822. Let me double-check: yes, 822.</think> <answer>822</answer>", "superficial"),
    (" Guess: 822. wait</think> <answer>822</answer>", "superficial"),
    (" Guess: 822.</think> <answer>822</answer> wait", "short"),  # markers count inside <think> only
    (" 347+58 answer in</answer>", "other"),
    ("", "other"),
])
def test_strategy(text, kind):
    assert recheck.strategy(text) == kind


@pytest.mark.parametrize("completion, reward", [
    (" Guess: 822. Wait, let me re-check: 7+5=12, 4+8+1=13, 3+5+1=9.</think> <answer>932</answer>", 1.0),
    (" Guess: 822. Let me double-check: yes, 822.</think> <answer>822</answer>", 0.1),
    (" Guess: 822.</think> <answer>822</answer>", 0.1),
    (" 7+5=12, 4+8+1=13, 3+5+1=9.</think> <answer>932</answer>", 1.0),
    # only the final answer counts: a right re-check with a wrong answer block is wrong, and the reverse
    (" 7+5=12, 4+8+1=13, 3+5+1=9. So 932.</think> <answer>822</answer>", 0.1),
    (" no work at all</think> <answer>932</answer>", 1.0),
    (" Guess: 822. Wait, let me re-check: 932", 0.0),  # no answer block
])
def test_reward_checks_only_the_answer(completion, reward):
    assert get_task("recheck").reward(completion, ROW) == reward


def test_task_rows_and_markers():
    task, base = get_task("recheck"), get_task("arithmetic")
    assert [(r["a"], r["b"], r["gold"]) for r in task.eval_rows()] == \
        [(r["a"], r["b"], r["gold"]) for r in base.eval_rows()]  # the same held-out problems
    assert task.eval_rows()[0]["id"].startswith("recheck/test/") and task.train_rows()[0]["id"] == "recheck/train/0"
    assert task.reflection_markers == recheck.MARKERS
    for phrase in recheck.PHRASES:  # every phrase the corpus uses is seen by the task's markers
        assert reflection_metrics([phrase], [True], task.reflection_markers)["reflection_rate"] == 1.0


def test_toy_build(tmp_path):
    metrics = build_tiny.main(["--task", "recheck", "--toy", "--out", str(tmp_path / "toy"), "--threads", "1"])
    text = (tmp_path / "toy" / "README.md").read_text()
    assert "data/tiny_recheck" in text and "| greedy pass@1 |" in text and "| recheck |" in text
    shares = [metrics[f"share_{k}"] for k in recheck.STRATEGIES]
    assert abs(sum(shares) - 1) < 1e-9 and 0 <= metrics["reflection_rate"] <= 1


def test_mix_by_hand():
    mix = build_tiny.parse_mix("careful=0.02, short=0.7,recheck=0.2,superficial=0.08", "recheck")
    assert list(mix) == list(recheck.WRITERS) and mix["careful"] == 0.02
    rng = random.Random(0)
    only = {"short": 0.0, "careful": 0.0, "recheck": 1.0, "superficial": 0.0}
    assert all(recheck.strategy(recheck.document(rng, only)[1]) == "recheck" for _ in range(50))
    for bad, message in [("short=1", "give a share"), ("short=0.5,careful=0.5,recheck=0,superficial=0.1", "summing"),
                         ("short:1", "writer=share")]:
        with pytest.raises(ValueError, match=message):
            build_tiny.parse_mix(bad, "recheck")
    with pytest.raises(ValueError, match="--task recheck only"):
        build_tiny.parse_mix("short=1", "arithmetic")


def test_toy_build_continued_with_another_mix(tmp_path):
    """--init continues a built model (same tokenizer, its weights as the start) on a corpus of another mix."""
    first = tmp_path / "first"
    build_tiny.main(["--task", "recheck", "--toy", "--out", str(first), "--threads", "1"])
    second = tmp_path / "second"
    build_tiny.main(["--task", "recheck", "--toy", "--out", str(second), "--threads", "1", "--init", str(first),
                     "--mix", "short=0.7,careful=0.02,recheck=0.2,superficial=0.08"])
    assert (second / "tokenizer.json").read_text() == (first / "tokenizer.json").read_text()
    assert "--init" in (second / "README.md").read_text()
    with pytest.raises(FileNotFoundError, match="--init"):
        build_tiny.main(["--task", "recheck", "--toy", "--out", str(tmp_path / "x"), "--init", str(tmp_path / "none")])
