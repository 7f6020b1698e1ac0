"""TinyZero's multiplication task (nanor1/tasks/multiplication.py, data/build_multiplication.py): the shipped rows come
from the build script, the prompt is TinyZero's, and the reward matches TinyZero's rule by hand and against an
oracle written from the rule's documented behaviour."""
import hashlib
import json
import random
import re
import sys
from pathlib import Path

import pytest

from nanor1.tasks.multiplication import parse_int
from nanor1.tasks import get_task

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data" / "multiplication"
sys.path.insert(0, str(ROOT / "data"))
import build_multiplication  # noqa: E402


# ---------------------------------------------------------------------------------------------------------------
# Oracles: TinyZero's code paths transcribed from Jiayi-Pan/TinyZero (multiply.py @ 3647ec2, the reward @ HEAD)

def tinyzero_draws(n):
    """multiply.py's gen_dataset loop as written there: the module-level random after seed(1)."""
    from random import randint, seed
    seed(1)
    out = []
    for _ in range(n):
        def get_random_num():
            r = randint(0, 3)
            if r == 0:
                max_num = 10 ** (3 - 2)
                return randint(0, max_num - 1)
            elif r == 1:
                max_num = 10 ** (3 - 1)
                return randint(0, max_num - 1)
            else:
                max_num = 10 ** 3
                return randint(0, max_num - 1)
        num1 = get_random_num()
        num2 = get_random_num()
        out.append((num1, num2, num1 * num2))
    return out


def tinyzero_prefix(num1, num2):
    """make_prefix, the f-string copied character for character."""
    return f"""A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The assistant first thinks about the reasoning process in the mind and then provides the user with the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> RESULT_NUMBER </answer>. User: Give me the answer of the following equation: {num1} * {num2} = Assistant: Ok let me think about it.\n<think>"""  # noqa: E501


def tinyzero_score(solution_str, ground_truth):
    """compute_score(format_score=0.1, score=1.): after the first "Assistant:", the last non-DOTALL
    <answer>(.*?)</answer> match, stripped, must survive int(); then 1 if equal to the truth, else 0.1."""
    if "Assistant:" not in solution_str:
        return 0
    solution_str = solution_str.split("Assistant:", 1)[1]
    matches = list(re.finditer(r"<answer>(.*?)</answer>", solution_str))
    answer = matches[-1].group(1).strip() if matches else None
    if answer is not None:
        try:
            int(answer)
        except ValueError:
            answer = None
    if answer is None:
        return 0
    return 1.0 if int(answer) == int(ground_truth) else 0.1


# ---------------------------------------------------------------------------------------------------------------
# Data

def test_shipped_files_are_the_build_scripts_output(tmp_path):
    sums = build_multiplication.main(["--out", str(tmp_path)])
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == sums[name]
        assert sums[name] in (DATA / "SOURCE.md").read_text(), f"SOURCE.md does not record {name}'s sha256"


def test_draws_and_split_follow_tinyzeros_loop():
    ours = build_multiplication.draws()
    assert ours == tinyzero_draws(build_multiplication.N_DRAWS)
    train, test = build_multiplication.split()
    unique = list(set(ours))  # TinyZero's dedupe, in this interpreter's set order
    assert train == unique[:32768] and test == unique[-4096:]
    assert not set(train) & set(test)


def test_task_rows_and_prompt():
    task = get_task("multiplication")
    train, test = task.train_rows(), task.eval_rows()
    assert (len(train), len(test)) == (32768, 4096)
    first = json.loads((DATA / "train.jsonl").read_text().split("\n", 1)[0])
    assert (train[0]["num1"], train[0]["num2"]) == (first["num1"], first["num2"])
    assert train[0]["gold"] == str(first["result"])
    for row in train[:50] + test[:50]:
        assert int(row["gold"]) == row["num1"] * row["num2"]
        assert task.prompt(row, None) == tinyzero_prefix(row["num1"], row["num2"])
    assert task.stop == ["</answer>"]


def test_a_bad_row_is_one_error_naming_the_line(tmp_path):
    (tmp_path / "multiplication").mkdir()
    (tmp_path / "multiplication" / "train.jsonl").write_text(
        '{"num1": 2, "num2": 3, "result": 6}\n{"num1": 2, "num2": 3, "result": 7}\n')
    with pytest.raises(ValueError, match=r"train\.jsonl:2: expected ints num1, num2 and result = num1 \* num2"):
        get_task("multiplication", data_dir=str(tmp_path)).train_rows()


# ---------------------------------------------------------------------------------------------------------------
# Reward

ROW = {"num1": 347, "num2": 85, "gold": "29495"}
BY_HAND = [  # completion, reward, why
    (" 347*85 = 29495 </think> <answer>29495</answer>", 1.0, "right"),
    (" </think> <answer> 29495 </answer>", 1.0, "stripped"),
    (" </think> <answer>029495</answer>", 1.0, "int() takes leading zeros"),
    (" </think> <answer>+29_495</answer>", 1.0, "int() takes a sign and underscores"),
    (" </think> <answer>29494</answer>", 0.1, "wrong number: the format score"),
    (" </think> <answer>-29495</answer>", 0.1, "wrong sign"),
    (" </think> <answer>29495.0</answer>", 0.0, "int('29495.0') raises: counts as no answer"),
    (" </think> <answer>29,495</answer>", 0.0, "commas: no int"),
    (" </think> <answer>347 * 85</answer>", 0.0, "an expression is not an int"),
    (" </think> <answer>\n29495\n</answer>", 0.0, "no DOTALL: an answer across lines does not match"),
    (" <answer>1</answer> then <answer>29495</answer>", 1.0, "the last answer counts"),
    (" <answer>29495</answer> then <answer>1</answer>", 0.1, "the last answer counts"),
    (" <answer>29495</answer>\nmore text after it", 1.0, "no last-line rule, unlike countdown"),
    (" <answer>29495", 0.0, "unclosed"),
    ("", 0.0, "nothing written"),
    (" <answer>29495</answer>\n<answer>oops", 1.0, "an unclosed later opening is ignored"),
    (" <answer>١٢</answer>", 0.1, "int() takes any Unicode decimal digit: 12, wrong"),
    (" <answer>" + "9" * 5000 + "</answer>", 0.1, "a 5000-digit number is a wrong number, as under Python 3.9"),
]


@pytest.mark.parametrize("completion,expected,why", BY_HAND, ids=[w for _, _, w in BY_HAND])
def test_reward_by_hand(completion, expected, why):
    assert get_task("multiplication").reward(completion, ROW) == expected, why


def fuzz_completions(rng, n):
    """Completions assembled from the pieces that exercise each branch of the rule."""
    answers = ["29495", " 29495 ", "029495", "+29495", "-29495", "29_495", "29__495", "_29495", "29495_", "29494",
               "2949.5", "29,495", "", " ", "x", "29495\n", "\n29495", "0", "-0", "1e4", "٢٩٤٩٥"]
    pieces = ["<answer>", "</answer>", "\n", " ", "Assistant:", "<think>", "</think>", "text", "<answer"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 6)):
            kind = rng.random()
            if kind < 0.5:
                parts.append(f"<answer>{rng.choice(answers)}</answer>")
            else:
                parts.append(rng.choice(pieces))
        out.append("".join(parts))
    return out


def test_reward_matches_tinyzeros_rule_on_many_completions():
    task = get_task("multiplication")
    rng = random.Random(0)
    completions = [c for c, _, _ in BY_HAND[:-1]] + fuzz_completions(rng, 3000)  # the 5000-digit case: int() limit
    rows = task.eval_rows()[:20] + [{"num1": 0, "num2": 7, "gold": "0"}, ROW]
    seen = set()
    for i, completion in enumerate(completions):
        row = rows[i % len(rows)] if i % 3 else ROW  # a third against 29495, where the fuzz answers can be right
        expected = tinyzero_score(task.prompt(row, None) + completion, row["gold"])
        assert task.reward(completion, row) == expected, (completion, row)
        seen.add(expected)
    assert seen == {0, 0.1, 1.0}  # every branch was exercised


def test_parse_int_is_pythons_int():
    cases = ["7", " 7 ", "-7", "+0", "007", "1_000", "1__0", "_1", "1_", "1.0", "", " ", "+", "0x10", "١٢", "1 2"]
    for text in cases:
        try:
            want = int(text)
        except ValueError:
            want = None
        assert parse_int(text) == want, text
