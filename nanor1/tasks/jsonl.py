"""Your own data, and your own reward, without writing a Task class.

    python train.py --task jsonl --data my.jsonl [--eval_data held_out.jsonl] --reward math|number|exact|countdown
    python train.py --task gsm8k --reward_fn my_reward.py:score        any task, your reward function

A row of --data is a JSON object with
    the prompt:  "prompt": "text used as it is (no template around it)", or
                 "messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...] for the chat template
    the answer:  "answer" (or the field --answer_key names); countdown also needs "nums", a list of ints

--reward checks the completion against the answer:
    math       the MATH verifier (nanor1/verify.py math_equal) on the last <answer> block (a \\boxed{} inside it wins),
               else the last \\boxed{}
    number     GSM8K-style: the last number of that block (or of the completion), compared as numbers
    exact      the block's text, stripped, equals the answer's
    countdown  the block is an equation that uses each of "nums" once and equals the answer (TinyZero's rule
               without its last-line requirement)
1.0 means correct. Without --eval_data, a fixed seeded slice of --data is held out (the count is printed).

--reward_fn path/to/file.py:function replaces any task's reward with `function(completion: str, row: dict)
-> float`. It runs in the verifier worker under the same timeout; a raise or a non-number scores 0 and counts as
a verifier error. A file that does not exist, or has no such function, is one clear error before training.
"""
import importlib.util
import os
import random
import re
import sys

from nanor1.tasks.base import Task, read_jsonl
from nanor1.verify import ARITH_CHARS, eval_arith, last_boxed, last_number, last_tag_block, math_equal

EVAL_SEED, EVAL_SHARE, EVAL_MAX = 1234, 0.05, 500  # held out of --data when no --eval_data: 5%, at most 500


class JsonlTask(Task):
    name = "jsonl"
    graders = ("builtin", "math_verify")
    templates = ("base",)  # the rows carry their prompt (text or messages): no template of ours

    def __init__(self, template=None, data_dir=None, data="", eval_data="", answer_key="answer", reward="math",
                 **kw):
        super().__init__(template, data_dir, **kw)
        if not data:
            raise ValueError("--task jsonl needs --data FILE.jsonl (rows with a prompt and an answer)")
        for path in (data, eval_data):
            if path and not os.path.isfile(path):
                raise FileNotFoundError(f"data file {path} not found")
        if reward not in REWARDS:
            raise ValueError(f"--reward must be one of {', '.join(REWARDS)}, got {reward!r}")
        self.data, self.eval_data, self.answer_key, self.kind = data, eval_data, answer_key, reward

    def load(self, split):
        if split == "test" and self.eval_data:
            return self._read(self.eval_data)
        rows = self._read(self.data)
        n_held = min(EVAL_MAX, max(1, int(len(rows) * EVAL_SHARE))) if len(rows) > 1 else 0
        held = set(random.Random(EVAL_SEED).sample(range(len(rows)), n_held))
        if self.eval_data or not held:
            return rows if split == "train" else []
        if split == "train":
            print(f"--task jsonl: {len(held)} of the {len(rows)} rows of {self.data} are held out for evaluation "
                  f"(give --eval_data to choose them)", file=sys.stderr)  # stdout may be --dry_run's JSON
        return [r for i, r in enumerate(rows) if (i in held) == (split == "test")]

    def _read(self, path):
        rows = []
        for i, obj in enumerate(read_jsonl(path, required=(self.answer_key,)), 1):
            if not isinstance(obj.get("prompt"), str) and not isinstance(obj.get("messages"), list):
                raise ValueError(f"{path}:{i}: a row needs a 'prompt' string or a 'messages' list")
            if self.kind == "countdown" and not (isinstance(obj.get("nums"), list) and obj["nums"]):
                raise ValueError(f"{path}:{i}: --reward countdown needs 'nums', a list of ints")
            rows.append(dict(obj, id=f"{os.path.basename(path)}/{i}", index=i - 1, gold=str(obj[self.answer_key])))
        if not rows:
            raise ValueError(f"{path}: no rows")
        return rows

    @property
    def stop(self):
        """Stop at </answer> when every prompt asks for <answer> tags (then the answer is complete there)."""
        rows = self._cached("train")
        return ["</answer>"] if all("<answer>" in str(r.get("prompt", r.get("messages"))) for r in rows) else []

    def prompt(self, row, tokenizer):
        if "prompt" in row and isinstance(row["prompt"], str):
            return row["prompt"]
        return tokenizer.apply_chat_template(row["messages"], add_generation_prompt=True)

    def extract(self, completion, row):
        block = last_tag_block(completion, "answer")
        if block is not None:
            inner = last_boxed(block)
            return (inner if inner is not None else block).strip()
        return last_boxed(completion)

    def reward(self, completion, row):
        return REWARDS[self.kind](self, completion, row)


def _math(task, completion, row):
    return 1.0 if task.answers_match(task.extract(completion, row), row["gold"]) else 0.0


def _number(task, completion, row):
    block = task.extract(completion, row)
    pred = last_number(block if block is not None else completion)
    return 1.0 if pred is not None and task.answers_match(pred, row["gold"]) else 0.0


def _exact(task, completion, row):
    return 1.0 if task.extract(completion, row) == row["gold"].strip() else 0.0


def _countdown(task, completion, row):
    eq = last_tag_block(completion, "answer")
    if eq is None:
        return 0.0
    used = sorted(int(n) for n in re.findall(r"\d{1,9}", eq))
    if used != sorted(int(n) for n in row["nums"]) or not ARITH_CHARS.match(eq):
        return 0.0
    value = eval_arith(eq)
    try:
        return 1.0 if value is not None and abs(value - float(row["gold"])) < 1e-5 else 0.0
    except (TypeError, ValueError):  # a complex value, or a gold that is not a number
        return 0.0


REWARDS = {"math": _math, "number": _number, "exact": _exact, "countdown": _countdown}


class RewardFn:
    """Any task with its reward replaced by a user's function `file.py:function(completion, row) -> float`. The
    function is loaded by path in whichever process scores (the verifier worker), so it needs no package."""

    def __init__(self, task, spec):
        self.task, self.spec = task, spec
        self._fn = None
        self._load()  # here, in the trainer: a missing file or function fails before training starts

    def __getattr__(self, name):  # everything but the reward is the wrapped task's
        if name in ("task", "spec", "_fn"):
            raise AttributeError(name)
        return getattr(self.task, name)

    def __getstate__(self):  # the worker gets the path, not the loaded module
        return {"task": self.task, "spec": self.spec, "_fn": None}

    def __setstate__(self, state):
        self.__dict__.update(state)

    def _load(self):
        path, _, name = self.spec.rpartition(":")
        if not path or not name:
            raise ValueError(f"--reward_fn {self.spec!r}: expected path/to/file.py:function")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--reward_fn: file {path} not found")
        module_spec = importlib.util.spec_from_file_location("nanor1_user_reward", path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:  # the user's file does not import: say so, as a bad input
            raise ValueError(f"--reward_fn: importing {path} failed: {type(e).__name__}: {e}") from None
        fn = getattr(module, name, None)
        if not callable(fn):
            raise ValueError(f"--reward_fn: {path} has no function {name!r}")
        self._fn = fn

    def reward(self, completion, row):
        if self._fn is None:
            self._load()
        value = self._fn(completion, row)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"the reward function returned {type(value).__name__}, not a number")
        return float(value)

    def is_correct(self, reward):
        return self.task.is_correct(reward)
