"""Countdown (TinyZero): reach the target with each given number used once and + - * /."""
import os
import re

from nanor1.tasks.base import Task, read_jsonl
from nanor1.tokenizer import chatml
from nanor1.verify import ARITH_CHARS, eval_arith, last_tag_block

COUNTDOWN_FILE = "countdown/countdown_tasks_3to4_rows0-10001.jsonl"
COUNTDOWN_TRAIN_ROWS = 9002  # rows 0..9001 train, the remaining 1000 (9002..10001) are the held-out test split
_CD_QUESTION = ("Using the numbers {nums}, create an equation that equals {target}. You can use basic arithmetic "
                "operations (+, -, *, /) and each number can only be used once. Show your work in <think> </think> "
                "tags. And return the final answer in <answer> </answer> tags, for example <answer> (1 + 2) / 3 "
                "</answer>.")
_CD_BASE = ("A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
            "The assistant first thinks about the reasoning process in the mind and then provides the user with "
            "the answer.\nUser: {question}\nAssistant: Let me solve this step by step.\n<think>")
_CD_SYSTEM = ("You are a helpful assistant. You first thinks about the reasoning process in the mind and then "
              "provides the user with the answer.")
_CD_ASSISTANT_PREFIX = "Let me solve this step by step.\n<think>"  # TinyZero starts the assistant's turn with it


class Countdown(Task):
    """TinyZero's countdown: prompts and reward as in data/countdown/SOURCE.md, reproduced exactly.

    TinyZero scores decode(prompt + response) and reads only its LAST LINE after the first "Assistant:" (or
    "<|im_start|>assistant"). The trainer passes the completion alone; the task rebuilds its own prompt text
    and applies the rule to prompt + completion, so an answer followed by any further line scores 0.
    """

    name = "countdown"

    def load(self, split):
        path = os.path.join(self.data_dir, COUNTDOWN_FILE)
        rows = []
        for i, obj in enumerate(read_jsonl(path, required=("target", "nums"))):
            ok = type(obj["target"]) is int and isinstance(obj["nums"], list) and obj["nums"] \
                and all(type(x) is int for x in obj["nums"])
            if not ok:
                raise ValueError(f"{path}:{i + 1}: expected an int 'target' and a list of int 'nums', got {obj}")
            if (split == "train") == (i < COUNTDOWN_TRAIN_ROWS):
                rows.append({"id": f"countdown/{i}", "index": i, "target": obj["target"], "nums": obj["nums"],
                             "gold": str(obj["target"])})
        return rows

    @property
    def stop(self):
        return ["</answer>"]  # both countdown templates ask for <answer> tags

    def _messages(self, row):
        # TinyZero's user turn starts with a space; nums print as a Python list, [44, 19, 35]
        question = _CD_QUESTION.format(nums=row["nums"], target=row["target"])
        return [{"role": "system", "content": _CD_SYSTEM}, {"role": "user", "content": " " + question}]

    def _prompt_text(self, row):
        """The prompt without a tokenizer: the reward needs it, and the worker process has no tokenizer."""
        if self.template == "base":
            return _CD_BASE.format(question=_CD_QUESTION.format(nums=row["nums"], target=row["target"]))
        return chatml(self._messages(row)) + _CD_ASSISTANT_PREFIX

    def prompt(self, row, tokenizer):
        if self.template == "base":
            return self._prompt_text(row)
        return tokenizer.apply_chat_template(self._messages(row), add_generation_prompt=True) + _CD_ASSISTANT_PREFIX

    def extract(self, completion, row):
        text = self._prompt_text(row) + completion
        for marker in ("Assistant:", "<|im_start|>assistant"):
            if marker in text:
                last_line = text.split(marker, 1)[1].split("\n")[-1]
                block = last_tag_block(last_line, "answer")
                return None if block is None else block.strip()
        return None

    def reward(self, completion, row):
        eq = self.extract(completion, row)
        if eq is None:
            return 0.0
        try:  # every given number exactly once, and no other literal
            used = sorted(int(n) for n in re.findall(r"\d+", eq))
        except ValueError:  # a literal too long for int(): not the given numbers
            return 0.1
        if used != sorted(row["nums"]) or not ARITH_CHARS.match(eq):
            return 0.1
        value = eval_arith(eq)  # None where TinyZero's eval would fail (or, here, refuse a huge power)
        return 1.0 if value is not None and abs(value - row["target"]) < 1e-5 else 0.1

