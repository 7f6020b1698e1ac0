"""The tiny base model (data/tiny) and its task (nanor1/tasks/arithmetic.py): the shipped files, the build script at
toy size, the held-out split and the reward."""
import hashlib
import json
import random
import sys
from pathlib import Path

import pytest
import torch

from nanor1.tasks import arithmetic
from nanor1.model import Transformer
from nanor1.rollout import Stop, generate
from nanor1.tasks import get_task
from nanor1.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "data" / "tiny"
sys.path.insert(0, str(ROOT / "data"))
import build_tiny  # noqa: E402


@pytest.fixture(scope="module")
def shipped():
    model = Transformer.from_pretrained(TINY, dtype=torch.float32).eval()
    return model, Tokenizer.from_pretrained(TINY)


def test_shipped_files_load_and_match_the_readme(shipped):
    model, tok = shipped
    cfg = json.loads((TINY / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["tie_word_embeddings"]
    assert model.config.vocab_size >= tok.vocab_size
    assert tok.eos_token_ids == [tok.token_to_id("<|endoftext|>")]
    # Greedy on the whole held-out split reproduces the README's pass@1 (a near-tie may flip on another CPU).
    task = get_task("arithmetic")
    rows = task.eval_rows()
    prompts = [tok.encode(task.prompt(r, tok)) for r in rows]
    torch.set_num_threads(1)
    out = generate(model, prompts, 64, temperature=0,
                   stop=Stop(eos=tok.eos_token_ids, strings=task.stop, decode=tok.decode))
    texts = tok.decode_batch(out.tokens)
    rewards = [task.reward(t, r) for t, r in zip(texts, rows)]
    acc = sum(map(task.is_correct, rewards)) / len(rows)
    readme = (TINY / "README.md").read_text()
    stated = float(readme.split("| greedy pass@1 | ")[1].split(" ")[0])
    print(f"greedy pass@1 {acc:.3f}, README {stated:.3f}; first completion: {texts[0]!r}")
    assert abs(acc - stated) <= 0.01
    assert 0.1 <= acc <= 0.5  # imperfect, as a real base model is
    assert min(rewards) > 0, "every greedy completion should hold an <answer> block"


def test_build_script_end_to_end_at_toy_size_and_reproducible(tmp_path):
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        metrics = build_tiny.main(["--toy", "--out", str(out), "--threads", "1"])
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                     "generation_config.json", "README.md"):
            assert (out / name).is_file(), name
        model = Transformer.from_pretrained(out, dtype=torch.float32)
        tok = Tokenizer.from_pretrained(out)
        assert model.config.vocab_size % 64 == 0 and model.config.vocab_size >= tok.vocab_size
        assert 0 <= metrics["greedy_pass@1"] <= 1 and "greedy pass@1" in (out / "README.md").read_text()
        digests.append(hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest())
    assert digests[0] == digests[1], "same seed and threads must give the same weights"


def test_prompt_and_completion_tokenize_apart_as_together():
    """Pretraining encodes prompt and completion apart, as the rollout does; the text must split cleanly."""
    tok = Tokenizer.from_pretrained(TINY)
    rng = random.Random(0)
    for _ in range(200):
        p, c = arithmetic.document(rng)
        assert tok.encode(p) + tok.encode(c) == tok.encode(p + c)
        assert tok.decode(tok.encode(p + c)) == p + c


def test_split_is_fixed_and_disjoint():
    task = get_task("arithmetic")
    test, train = task.eval_rows(), task.train_rows()
    assert len(test) >= 200 and len({(r["a"], r["b"]) for r in test}) == len(test)
    held = {(r["a"], r["b"]) for r in test} | {(r["b"], r["a"]) for r in test}
    assert not held & {(r["a"], r["b"]) for r in train}
    rng = random.Random(7)
    assert not held & {arithmetic.train_problem(rng) for _ in range(20000)}  # nor in the corpus
    assert all(r["gold"] == str(r["a"] + r["b"]) for r in test + train)
    assert get_task("arithmetic").eval_rows()[:3] == test[:3]  # seeded: the same on every call


def test_writers():
    rng = random.Random(3)
    for _ in range(2000):
        a, b = arithmetic.train_problem(rng)
        careful, sloppy = arithmetic.solution(a, b), arithmetic.solution(a, b, careful=False)
        assert careful.endswith(f"<answer>{a + b}</answer>")
        # the writers agree exactly on carry-free problems, and only the careful one carries
        assert (careful == sloppy) == (not arithmetic.has_carry(a, b))
        assert arithmetic.carried(careful) == arithmetic.has_carry(a, b) and not arithmetic.carried(sloppy)
    assert arithmetic.solution(347, 585) == " 7+5=12, 4+8+1=13, 3+5+1=9.</think> <answer>932</answer>"
    assert arithmetic.solution(347, 585, careful=False) == " 7+5=2, 4+8=2, 3+5=8.</think> <answer>822</answer>"


@pytest.mark.parametrize("completion, reward", [
    (" 7+5=12, 4+8+1=13, 3+5+1=9.</think> <answer>932</answer>", 1.0),
    (" 7+5=12, 4+8+1=13, 3+5+1=9.</think> <answer>932</answer><|endoftext|>", 1.0),
    ("</think> <answer> 932 </answer>", 1.0),  # spaces inside the tags are fine
    ("<answer>1</answer> then <answer>932</answer>", 1.0),  # the last block counts
    ("<answer>932</answer> then <answer>1</answer>", 0.1),
    (" 7+5=2, 4+8=2, 3+5=8.</think> <answer>822</answer>", 0.1),  # wrong
    ("</think> <answer>+932</answer>", 0.1),  # not a plain number
    ("</think> <answer>9" + "3" * 50 + "</answer>", 0.1),  # absurdly long
    ("</think> <answer></answer>", 0.1),
    (" 7+5=12, 4+8+1=13, 3+5+1=9.</think> 932", 0.0),  # no answer block
    ("</think> <answer>932", 0.0),  # unclosed
])
def test_reward(completion, reward):
    task = get_task("arithmetic")
    row = {"id": "x", "index": 0, "a": 347, "b": 585, "gold": "932"}
    assert task.reward(completion, row) == reward
