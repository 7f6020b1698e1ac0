"""Word and competition math: GSM8K and MATH (with MATH-500, AIME24 and AMC23 as evaluation splits)."""
import os
import re

from nanor1.tasks.base import Task, read_jsonl
from nanor1.verify import answer_span, last_boxed, last_number, last_tag_block


# The R1-Zero template (DeepSeek-R1 paper, Table 1), with the question in place of "prompt".
R1_ZERO_TEMPLATE = ("A conversation between User and Assistant. The user asks a question, and the Assistant solves "
                    "it. The assistant first thinks about the reasoning process in the mind and then provides the "
                    "user with the answer. The reasoning process and answer are enclosed within <think> </think> "
                    "and <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
                    "<answer> answer here </answer>. User: {question}\nAssistant:")
# Qwen2.5-Math's chain-of-thought system prompt, for instruct models.
BOXED_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


class _QATask(Task):
    """A question with one gold answer string: the R1-Zero or the boxed-instruct template."""

    graders = ("builtin", "math_verify")

    def prompt(self, row, tokenizer):
        if self.template == "base":
            return R1_ZERO_TEMPLATE.format(question=row["question"])
        msgs = [{"role": "system", "content": BOXED_SYSTEM}, {"role": "user", "content": row["question"]}]
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=True)

    def _block(self, completion):
        """The text holding the answer: the last <answer> block (base) or the last \\boxed{} (instruct)."""
        if self.template == "base":
            return last_tag_block(completion, "answer")
        return last_boxed(completion)


class GSM8K(_QATask):
    """Grade-school word problems; the gold answer is the number after "####"."""

    name = "gsm8k"

    def load(self, split):
        path = os.path.join(self.data_dir, "gsm8k", f"{split}.jsonl")
        rows = []
        for i, obj in enumerate(read_jsonl(path, required=("question", "answer"))):
            answer = obj["answer"]
            if type(answer) in (int, float):  # a bare JSON number is the gold answer itself
                answer = f"#### {answer}"
            if not isinstance(answer, str) or not isinstance(obj["question"], str):
                raise ValueError(f"{path}:{i + 1}: 'question' must be a string and 'answer' a string ending in "
                                 f"'#### <number>' (or a number), got {obj['answer']!r}"[:300])
            gold = answer.rsplit("####", 1)[-1].strip().replace(",", "") if "####" in answer else ""
            if not re.fullmatch(r"-?\d+(\.\d+)?", gold):
                raise ValueError(f"{path}:{i + 1}: answer has no number after '####'")
            rows.append({"id": f"gsm8k/{split}/{i}", "index": i, "question": obj["question"], "gold": gold})
        return rows

    def extract(self, completion, row):
        block = self._block(completion)
        if block is None or self.grader == "math_verify":  # math-verify finds the number in the block itself
            return block
        return last_number(block)

    def reward(self, completion, row):
        return 1.0 if self.answers_match(self.extract(completion, row), row["gold"]) else 0.0


# split -> (file under data/, key of the problem text)
MATH_FILES = {"train": ("math_train/train.jsonl", "problem"), "math500": ("math500/test.jsonl", "problem"),
              "aime24": ("aime24/test.jsonl", "problem"), "amc23": ("amc23/test.jsonl", "problem")}


class MATH(_QATask):
    """Competition math, answers in LaTeX; compared by the grader (builtin: verify.math_equal, normalised strings then exact numbers)."""

    name = "math"
    eval_splits = ("math500", "aime24", "amc23")

    def load(self, split):
        file, key = MATH_FILES[split]
        path = os.path.join(self.data_dir, file)
        rows = []
        for i, obj in enumerate(read_jsonl(path, required=(key, "answer"))):
            gold = obj["answer"]
            if isinstance(gold, (int, float)) and not isinstance(gold, bool):
                gold = str(gold)  # AMC23 stores answers as JSON floats, 27.0
            if not isinstance(gold, str) or not gold.strip():
                raise ValueError(f"{path}:{i + 1}: empty or non-string answer {obj['answer']!r}")
            if not isinstance(obj[key], str):
                raise ValueError(f"{path}:{i + 1}: {key!r} must be a string, got {obj[key]!r}"[:300])
            rows.append({"id": f"{split}/{i}", "index": i, "question": obj[key], "gold": gold})
        return rows

    def extract(self, completion, row):
        block = self._block(completion)
        if block is not None and self.template == "base" and self.grader == "builtin":
            block = answer_span(block)  # a \boxed{}, a $...$ or a sentence inside the tags
        return block

    def reward(self, completion, row):
        return 1.0 if self.answers_match(self.extract(completion, row), row["gold"]) else 0.0


class MATH500(MATH):
    name = "math500"
    eval_splits = ("math500",)


class AIME24(MATH):
    name = "aime24"
    eval_splits = ("aime24",)


class AMC23(MATH):
    name = "amc23"
    eval_splits = ("amc23",)

