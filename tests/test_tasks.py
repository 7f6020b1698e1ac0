"""Tasks and rewards on the real rows in data/, against hand-written cases and a TinyZero oracle."""

import itertools
import json
import os
import random
import re
import time
from fractions import Fraction

import pytest

from nanor1.tasks import TASKS, Task, get_task
from nanor1.tokenizer import Tokenizer
from nanor1.verifier import Verifier, score_batch
from nanor1.verify import eval_arith, last_boxed, last_tag_block, math_equal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _raw(path):
    with open(os.path.join(ROOT, "data", path), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_pretrained(os.path.join(ROOT, "data", "qwen2_tokenizer"))


# --------------------------------------------------------------------------------------------------- registry, data

def test_registry_and_splits():
    sizes = {"countdown": (9002, {"test": 1000}), "gsm8k": (7473, {"test": 1319}),
             "math": (7470, {"math500": 500, "aime24": 30, "amc23": 40}), "math500": (7470, {"math500": 500}),
             "aime24": (7470, {"aime24": 30}), "amc23": (7470, {"amc23": 40})}
    for name, (n_train, evals) in sizes.items():
        t = get_task(name)
        assert len(t.train_rows()) == n_train
        for split, n in evals.items():
            rows = t.eval_rows(split)
            assert len(rows) == n and len({r["id"] for r in rows}) == n
        assert len(t.eval_rows()) == next(iter(evals.values()))  # the first split is the default
    cd = get_task("countdown")
    assert [r["index"] for r in cd.eval_rows()] == list(range(9002, 10002))  # the documented held-out rows
    assert cd.train_rows()[0] == {"id": "countdown/0", "index": 0, "target": 98, "nums": [44, 19, 35], "gold": "98"}
    assert {r["id"] for r in cd.train_rows()}.isdisjoint(r["id"] for r in cd.eval_rows())
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        get_task("nope")
    with pytest.raises(ValueError, match="no template 'chat'"):
        get_task("gsm8k", template="chat")
    with pytest.raises(ValueError, match="no eval split"):
        get_task("gsm8k").eval_rows("train2")
    assert all(name == cls.name for name, cls in TASKS.items())  # one registry, keyed by each class's name


def test_malformed_data_lines(tmp_path):
    (tmp_path / "countdown").mkdir()
    f = tmp_path / "countdown" / "countdown_tasks_3to4_rows0-10001.jsonl"
    f.write_text('{"target": 1, "nums": [1]}\n{"target": 2, "nums": [1, 2\n')
    with pytest.raises(ValueError, match=r"rows0-10001\.jsonl:2: not valid JSON"):
        get_task("countdown", data_dir=str(tmp_path)).train_rows()
    f.write_text('{"target": 1, "nums": [1]}\n{"target": 1}\n')
    with pytest.raises(ValueError, match=r"\.jsonl:2: missing key"):
        get_task("countdown", data_dir=str(tmp_path)).train_rows()
    f.write_text('{"target": "1", "nums": [1]}\n')
    with pytest.raises(ValueError, match=r"\.jsonl:1: expected an int 'target'"):
        get_task("countdown", data_dir=str(tmp_path)).train_rows()
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text('{"question": "q", "answer": "#### 3"}\n{"question": "q", "answer": "3"}\n')
    with pytest.raises(ValueError, match=r"test\.jsonl:2: answer has no number"):
        get_task("gsm8k", data_dir=str(tmp_path)).eval_rows()
    with pytest.raises(FileNotFoundError, match="math500"):
        get_task("math", data_dir=str(tmp_path)).eval_rows()


# --------------------------------------------------------------------------------------------------- countdown

CD_BASE_ROW0 = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant "
    "first thinks about the reasoning process in the mind and then provides the user with the answer.\nUser: Using "
    "the numbers [44, 19, 35], create an equation that equals 98. You can use basic arithmetic operations (+, -, *, /) "
    "and each number can only be used once. Show your work in <think> </think> tags. And return the final answer in "
    "<answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.\nAssistant: Let me solve this step by step."
    "\n<think>")


def _tinyzero_instruct(nums, target):  # TinyZero's qwen-instruct f-string, written out as in SOURCE.md
    return (f"<|im_start|>system\nYou are a helpful assistant. You first thinks about the reasoning process in the mind "
            f"and then provides the user with the answer.<|im_end|>\n<|im_start|>user\n Using the numbers {nums}, "
            f"create an equation that equals {target}. You can use basic arithmetic operations (+, -, *, /) and each "
            f"number can only be used once. Show your work in <think> </think> tags. And return the final answer in "
            f"<answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.<|im_end|>\n<|im_start|>assistant\n"
            f"Let me solve this step by step.\n<think>")


def test_countdown_prompts_are_tinyzeros(tok):
    row = get_task("countdown").train_rows()[0]
    assert get_task("countdown", "base").prompt(row, tok) == CD_BASE_ROW0
    for r in get_task("countdown").eval_rows()[:20]:
        assert get_task("countdown", "instruct").prompt(r, tok) == _tinyzero_instruct(r["nums"], r["target"])


def _solve(nums, target):
    """Brute force over + - * / on exact fractions: an expression using every number once, or None."""
    def rec(items):
        if len(items) == 1:
            return items[0][1] if items[0][0] == target else None
        for i, j in itertools.permutations(range(len(items)), 2):
            (a, ea), (b, eb) = items[i], items[j]
            rest = [items[k] for k in range(len(items)) if k not in (i, j)]
            for v, e in ((a + b, f"({ea} + {eb})"), (a - b, f"({ea} - {eb})"), (a * b, f"({ea} * {eb})"),
                         (a / b if b else None, f"({ea} / {eb})")):
                if v is not None and (found := rec(rest + [(v, e)])):
                    return found
        return None
    return rec([(Fraction(n), str(n)) for n in nums])


def _tinyzero_score(text, nums, target):
    """TinyZero's compute_score as SOURCE.md describes it, with the real eval: an oracle for safe inputs only."""
    if "Assistant:" in text:
        text = text.split("Assistant:", 1)[1]
    elif "<|im_start|>assistant" in text:
        text = text.split("<|im_start|>assistant", 1)[1]
    else:
        return 0.0
    matches = list(re.finditer(r"<answer>(.*?)</answer>", text.split("\n")[-1]))
    if not matches:
        return 0.0
    eq = matches[-1].group(1).strip()
    if sorted(int(n) for n in re.findall(r"\d+", eq)) != sorted(nums):
        return 0.1
    try:
        assert re.match(r"^[\d+\-*/().\s]+$", eq)
        result = eval(eq, {"__builtins__": None}, {})
    except Exception:
        return 0.1
    return 1.0 if abs(result - target) < 1e-5 else 0.1


def test_countdown_rewards_by_hand():
    task = get_task("countdown")
    rows = task.eval_rows()[:6]
    for row in rows:
        sol = _solve(row["nums"], row["target"])
        assert sol is not None  # SOURCE.md: every row is solvable
        a, b = row["nums"][0], row["nums"][1]
        assert task.reward(f"... so </think>\n<answer> {sol} </answer>", row) == 1.0
        assert task.reward(f"<answer> {sol} </answer><|im_end|>", row) == 1.0  # no newline; EOS text after it
        assert task.reward(f"</think>\n<answer>{sol}</answer>\nThat is all.", row) == 0.0  # not on the last line
        assert task.reward(f"</think>\n<answer>{sol}</answer>\n", row) == 0.0  # the last line is empty
        assert task.reward(f"</think> the answer is {sol}", row) == 0.0  # no tags
        assert task.reward(f"<answer>{sol}", row) == 0.0  # no closing tag
        assert task.reward(f"<answer>{sol}</answer> <answer>{a} + {b}</answer>", row) == 0.1  # the last one counts
        assert task.reward(f"<answer>{a} + {b}</answer> <answer>{sol}</answer>", row) == 1.0
        assert task.reward(f"<answer>{sol} + {a} - {a}</answer>", row) == 0.1  # a number used twice
        assert task.reward(f"<answer>{sol} * 1</answer>", row) == 0.1  # a literal that is not given
        assert task.reward(f"<answer>{sol[1:]}</answer>", row) == 0.1  # unbalanced: eval fails
        assert task.reward(f"<answer>{sol} + x</answer>", row) == 0.1  # outside the whitelist
        assert task.is_correct(1.0) and not task.is_correct(0.1)
    # TinyZero quirks kept: `44.19` reads as the numbers 44 and 19; `2(3)` is a call, which eval rejects
    row = task.train_rows()[0]
    assert task.reward("<answer>44.19 + 35</answer>", row) == 0.1
    assert task.reward("<answer>(44 + 19) + 35</answer>", row) == 1.0


def _random_equation(rng, nums):
    ops = ["+", "-", "*", "/", "//"]
    items = [str(n) for n in rng.sample(nums, len(nums))]
    mutation = rng.random()
    if mutation < 0.15:
        items.pop()  # a number missing
    elif mutation < 0.3:
        items.append(items[0])  # a number repeated
    elif mutation < 0.35:
        items.append(str(rng.randrange(1, 10)))  # a foreign literal
    while len(items) > 1:
        i = rng.randrange(len(items) - 1)
        e = f"{items[i]} {rng.choice(ops)} {items[i + 1]}"
        items[i:i + 2] = [f"({e})" if rng.random() < 0.6 else e]
    eq = items[0]
    if rng.random() < 0.1:
        eq = eq.replace(")", "", 1)  # unbalanced
    return eq


def test_countdown_matches_tinyzero_oracle():
    """Random answers, mutations and layouts on real rows: our reward equals TinyZero's (with real eval)."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    for template in ("base", "instruct"):
        task = get_task("countdown", template)
        rows = task.train_rows()
        for _ in range(1500):
            row = rng.choice(rows)
            eq = _solve(row["nums"], row["target"]) if rng.random() < 0.1 else _random_equation(rng, row["nums"])
            layout = rng.choice(["</think>\n<answer>{}</answer>", "<answer> {} </answer>", "<answer>{}</answer>\nok",
                                 "x <answer>{}</answer> <answer>1</answer>", "<answer>{}", "Assistant: <answer>{}</answer>",
                                 "</think>\n<answer>{}</answer><|endoftext|>", "no tags {}"])
            completion = layout.format(eq)
            want = _tinyzero_score(task._prompt_text(row) + completion, row["nums"], row["target"])
            assert task.reward(completion, row) == want, f"seed {seed}: {completion!r} for {row}"


# --------------------------------------------------------------------------------------------------- gsm8k

def test_gsm8k_real_rows():
    base, inst = get_task("gsm8k", "base"), get_task("gsm8k", "instruct")
    # every row's own worked solution, with its final answer in the template's place, scores 1
    for split in ("train", "test"):
        raw = _raw(f"gsm8k/{split}.jsonl")
        rows = base.train_rows() if split == "train" else base.eval_rows()
        for r, row in zip(raw, rows):
            work, final = r["answer"].rsplit("####", 1)
            assert base.reward(f"<think>{work}</think> <answer>{final}</answer>", row) == 1.0, row["id"]
            assert inst.reward(f"{work}So the answer is $\\boxed{{{final.strip()}}}$.", row) == 1.0, row["id"]
    row = base.eval_rows()[0]  # Janet's ducks: 18
    assert row["gold"] == "18"
    for good in ("18", " $18.00 ", "18 dollars", "She makes $18.", "9 * 2 = 18", "\\boxed{18}", "20-2=18"):
        assert base.reward(f"<think>16-3-4=9</think><answer>{good}</answer>", row) == 1.0, good
    for bad in ("17", "18.5", "-18", "180", "", "eighteen"):
        assert base.reward(f"<answer>{bad}</answer>", row) == 0.0, bad
    assert base.reward("<think>...</think> the answer is 18", row) == 0.0  # missing tags
    assert base.reward("<answer>18</answer> wait, <answer>17</answer>", row) == 0.0  # the last block counts
    assert inst.reward("The answer is 18.", row) == 0.0  # no box
    assert inst.reward("\\boxed{17} no, \\boxed{18}", row) == 1.0
    comma = next(r for r in base.train_rows() if r["gold"] == "1200")  # gold written "1,200" in the data
    assert base.reward("<answer>$1,200</answer>", comma) == 1.0 and base.reward("<answer>1200.0</answer>", comma) == 1.0
    assert base.reward("<answer>1{,}200</answer>", comma) == 1.0  # LaTeX's thousands separator


# --------------------------------------------------------------------------------------------------- math

def test_math_real_rows():
    inst, base = get_task("math500", "instruct"), get_task("math500", "base")
    # MATH-500's solutions end in \boxed{answer} (nested braces and all): every one scores 1
    for r, row in zip(_raw("math500/test.jsonl"), inst.eval_rows()):
        assert inst.reward(r["solution"], row) == 1.0, row["id"]
        assert base.reward(f"<think>...</think> <answer> {r['answer']} </answer>", row) == 1.0, row["id"]
        assert base.reward(f"<answer> ${r['answer']}$ </answer>", row) == 1.0, row["id"]
        assert inst.reward(r["solution"].replace("\\boxed", "\\mathrm"), row) == 0.0  # no box
    rows = {r["gold"]: r for r in inst.eval_rows()}
    frac = rows["\\frac{14}{3}"]
    for good in ("\\frac{14}{3}", "\\dfrac{14}{3}", "\\tfrac{14}3", "14/3", "4\\frac{2}{3}", "\\left(\\frac{14}{3}\\right)"):
        assert inst.reward(f"so $x = \\boxed{{{good}}}$.", frac) == 1.0, good
    for bad in ("\\frac{3}{14}", "4.67", "\\frac{14}{3", "14", "\\frac{28}{3}"):
        assert inst.reward(f"\\boxed{{{bad}}}", frac) == 0.0, bad
    deg = rows["90^\\circ"]
    assert inst.reward("\\boxed{90}", deg) == 1.0 and inst.reward("\\boxed{90^{\\circ}}", deg) == 1.0
    pol = rows["\\left( 3, \\frac{\\pi}{2} \\right)"]
    assert inst.reward("\\boxed{(3,\\frac{\\pi}{2})}", pol) == 1.0
    assert inst.reward("\\boxed{(3,\\frac{\\pi}{3})}", pol) == 0.0 and inst.reward("\\boxed{[3,\\frac{\\pi}{2}]}", pol) == 0.0
    assert inst.reward("\\boxed{Evelyn}", rows["\\text{Evelyn}"]) == 1.0
    assert inst.reward("\\boxed{5}", rows["x=5"]) == 1.0 and inst.reward("\\boxed{x = 5}", rows["x=5"]) == 1.0
    # AIME: "025" is the integer 25; AMC: the float 27.0 is 27
    aime = get_task("aime24", "instruct")
    row = next(r for r in aime.eval_rows() if r["gold"] == "025")
    assert aime.reward("\\boxed{25}", row) == 1.0 and aime.reward("\\boxed{025}", row) == 1.0
    assert aime.reward("\\boxed{250}", row) == 0.0 and aime.reward("\\boxed{2.5}", row) == 0.0
    amc = get_task("amc23", "base")
    row = amc.eval_rows()[0]
    assert row["gold"] == "27.0"
    assert amc.reward("<answer>27</answer>", row) == 1.0 and amc.reward("<answer>\\boxed{27}</answer>", row) == 1.0
    assert amc.reward("<answer>28</answer>", row) == 0.0 and amc.reward("27", row) == 0.0


def test_math_equal_forms():
    for a, b in [("\\frac{1}{2}", "0.5"), ("\\dfrac12", "0.5"), ("\\dfrac12", "\\frac{1}{2}"), (".5", "1/2"),
                 ("1,000", "1000"), ("1{,}000", "1000"), ("10\\text{ cm}^2", "10"), ("50\\%", "50"), ("\\$42409", "42409"),
                 ("-\\frac{5}{2}", "-2.5"), ("\\sqrt2", "\\sqrt{2}"), ("(0.5, 2)", "(\\frac12,2)"), ("5.", "5")]:
        assert math_equal(a, b) and math_equal(b, a), (a, b)
    for a, b in [("\\frac{1}{3}", "0.333"), ("3", "-3"), ("(1,2)", "[1,2]"), ("1,2", "1,3"), ("(1,2)", "(2,1)"), ("x+1", "x-1"),
                 ("\\frac{1}{2}", "\\frac{1}{20}"), (None, "1"), ("1" * 5000, "1" * 5000)]:
        assert not math_equal(a, b), (a, b)
    assert last_boxed("\\boxed{\\frac{\\sqrt{3}}{2}}.") == "\\frac{\\sqrt{3}}{2}" and last_boxed("\\boxed{1") is None
    assert last_tag_block("<answer>a<answer>b</answer>") == "a<answer>b"  # as re.finditer(r"<answer>(.*?)</answer>")


# --------------------------------------------------------------------------------------------------- bounds, worker

def _adversarial():
    big = "<answer>" * 12500  # 100k characters of openings, no closing tag: quadratic for the regex
    return [
        ("countdown", "<answer>44**19**35</answer>"),  # passes the whitelist and the number check
        ("countdown", "<answer>" + "(" * 5000 + "44 + 19 + 35" + ")" * 5000 + "</answer>"),
        ("countdown", "<answer>" + "-" * 100_000 + "44 + 19 + 35</answer>"),
        ("countdown", big), ("countdown", "x" * 100_000 + "<answer>(44 + 19) + 35</answer>"),
        ("countdown", "<answer>" + "9" * 100_000 + "</answer>"),
        ("gsm8k", big + "</answer>"), ("gsm8k", "<answer>" + "9" * 100_000 + "</answer>"),
        ("gsm8k", "<answer>" + "1," * 50_000 + "</answer>"),
        ("math", "\\boxed{" * 50_000), ("math", "\\boxed{" + "{" * 50_000 + "1" + "}" * 50_001),
        ("math", "<answer>" + "\\frac" * 20_000 + "</answer>"), ("math", "<answer>" + "1" * 100_000 + "</answer>"),
    ]


def test_adversarial_strings_are_bounded():
    assert eval_arith("1**99999999") == 1 and eval_arith("9**9**9**9") is None and eval_arith("2**10") == 1024
    assert eval_arith("99**9999") is None and eval_arith("(" * 300 + "1" + ")" * 300) is None
    want = {"x" * 100_000 + "<answer>(44 + 19) + 35</answer>": 1.0}
    for name, completion in _adversarial():
        task = get_task(name)
        row = task.train_rows()[0]
        t0 = time.perf_counter()
        r = task.reward(completion, row)
        assert time.perf_counter() - t0 < 3.0, (name, completion[:40])  # ms in fact; backtracking: far longer
        expected = want.get(completion, 0.1 if name == "countdown" and "</answer>" in completion else 0.0)
        assert r == expected, (name, completion[:40], r)


class _Slow(Task):
    """A reward that hangs or raises on request, to test the worker's kill path."""

    def reward(self, completion, row):
        if completion == "hang":
            while True:
                pass
        if completion == "boom":
            raise ZeroDivisionError("boom")
        return 1.0


def test_verifier_kills_hung_rewards():
    comps = ["ok", "hang", "ok", "boom", "hang", "ok"]
    with Verifier(_Slow(), timeout=2.0) as v:  # generous: a loaded CI box must not time out an "ok"
        t0 = time.perf_counter()
        assert v.score(comps, [{}] * len(comps)) == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
        assert time.perf_counter() - t0 < 40  # two timeouts of 2 s plus restarts, not for ever
        assert v.stats["timeouts"] == 2 and v.stats["errors"] == 1 and "boom" in v.stats["last_error"]
        assert v.score(["ok"] * 3, [{}] * 3) == [1.0] * 3  # the worker is reused after a batch
        v._proc.kill()  # a worker that died between batches (say, the OOM killer) is replaced
        v._proc.join()
        assert v.score(["ok", "boom"], [{}] * 2) == [1.0, 0.0] and v.stats["timeouts"] == 2
    with pytest.raises(ValueError, match="2 completions but 1 rows"):
        Verifier(_Slow()).score(["a", "b"], [{}])


def test_verifier_matches_in_process_rewards():
    """The real tasks through the worker: the adversarial strings and ordinary answers, no timeout needed."""
    for name in ("countdown", "gsm8k", "math"):
        task = get_task(name)
        rows = task.train_rows()[:50]
        comps = [f"<answer>{r['gold']}</answer>" if i % 2 else "<answer>0</answer>" for i, r in enumerate(rows)]
        comps += [c for n, c in _adversarial() if n == name]
        rows = rows + [rows[0]] * (len(comps) - len(rows))
        with Verifier(task, timeout=5.0) as v:
            assert v.score(comps, rows) == [task.reward(c, r) for c, r in zip(comps, rows)]
            assert v.stats["timeouts"] == 0 and v.stats["errors"] == 0
    assert score_batch(get_task("gsm8k"), ["<answer>18</answer>"], [get_task("gsm8k").eval_rows()[0]]) == [1.0]
