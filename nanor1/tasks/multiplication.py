r"""TinyZero's multiplication task: the product of two numbers below 1000, thinking first. Data, prompt and
reward are TinyZero's (github.com/Jiayi-Pan/TinyZero: examples/data_preprocess/multiply.py and
verl/utils/reward_score/multiply.py); data/multiplication/SOURCE.md has the commits and the row recipe.

    prompt      A conversation between User and Assistant. ... User: Give me the answer of the following
                equation: 347 * 85 = Assistant: Ok let me think about it.
                <think>
    completion  " 347 * 85 = 347 * 80 + 347 * 5 = 27760 + 1735 = 29495 </think> <answer>29495</answer>"

Reward, TinyZero's `compute_score` (format_score 0.1, score 1). TinyZero scores the decoded prompt + response,
so the task rebuilds its prompt text and applies the rule to prompt + completion:
1. keep the text after the first "Assistant:" (none: 0);
2. take the LAST match of `<answer>(.*?)</answer>` (no DOTALL: the answer sits on one line), stripped;
3. that text must parse as Python's `int()` would ("0042", "+7", "1_000" parse; "12.0", "29,495" do not),
   else the answer counts as missing: 0;
4. 1.0 when the integer equals num1 * num2, else 0.1.
Unlike countdown there is no last-line rule: text after the answer does not matter.

Rollouts stop at "</answer>" (the `base` template's stop string), so the answer scored is the first one the
model writes; TinyZero samples to EOS and would score the last. Pass no stop strings for its exact dynamics.

Splits (fixed; data/multiplication/): train = train.jsonl (32,768 rows), eval "test" = test.jsonl (4,096).
"""
import os
import re
import unicodedata

from nanor1.tasks.base import Task, read_jsonl
from nanor1.verify import last_tag_block

PROMPT = ("A conversation between User and Assistant. The user asks a question, and the Assistant solves it. The "
          "assistant first thinks about the reasoning process in the mind and then provides the user with the answer. "
          "The reasoning process and answer are enclosed within <think> </think> and <answer> </answer> tags, "
          "respectively, i.e., <think> reasoning process here </think> <answer> RESULT_NUMBER </answer>. User: Give "
          "me the answer of the following equation: {num1} * {num2} = Assistant: Ok let me think about it.\n<think>")
FILES = {"train": "multiplication/train.jsonl", "test": "multiplication/test.jsonl"}
# What Python's int() accepts in base 10, after strip(): a sign, then digits (any Unicode decimal digit, as
# int() takes them: \d on str is exactly category Nd) with single underscores between them.
_INT = re.compile(r"([+-]?)(\d+(?:_\d+)*)")


def parse_int(text):
    """int(text) as TinyZero's Python does it, or None where int() raises. Written out instead of calling int(),
    whose 4300-digit limit (Python >= 3.11) would turn a long digit string into "no answer" (0) rather than
    the wrong answer (0.1) it is under TinyZero's Python 3.9."""
    m = _INT.fullmatch(text.strip())
    if m is None:
        return None
    digits = "".join(str(unicodedata.decimal(c)) for c in m.group(2) if c != "_").lstrip("0") or "0"
    if len(digits) > 18:  # more than any product here (< 10**6); keep the magnitude, skip the long conversion
        return 10 ** 18 * (-1 if m.group(1) == "-" else 1)
    return int(m.group(1) + digits)


def last_answer_on_a_line(text):
    """The last match of TinyZero's `re.finditer(r"<answer>(.*?)</answer>", text)` (unstripped), or None.

    Without re.DOTALL `.` stops at "\n", so no match spans lines and the matches of the text are those of its
    lines, in order: the last one is the last match of the last line that has one. Line by line with str.find
    is linear, where the regex is quadratic on a line with many openings and no closing tag."""
    for line in reversed(text.split("\n")):
        block = last_tag_block(line, "answer")
        if block is not None:
            return block
    return None


class Multiplication(Task):
    """num1 * num2 with num1, num2 in 0..999, TinyZero's data, prompt and reward (see the module docstring)."""

    name = "multiplication"
    templates = ("base",)  # TinyZero has one plain-text template and feeds it to the model without a chat template

    def load(self, split):
        path = os.path.join(self.data_dir, FILES[split])
        rows = []
        for i, obj in enumerate(read_jsonl(path, required=("num1", "num2", "result"))):
            a, b, c = obj["num1"], obj["num2"], obj["result"]
            if not (type(a) is int and type(b) is int and type(c) is int and a * b == c):
                raise ValueError(f"{path}:{i + 1}: expected ints num1, num2 and result = num1 * num2, got {obj}")
            rows.append({"id": f"multiplication/{split}/{i}", "index": i, "num1": a, "num2": b, "gold": str(c)})
        return rows

    def prompt(self, row, tokenizer):
        return PROMPT.format(num1=row["num1"], num2=row["num2"])

    def extract(self, completion, row):
        """The stripped text of the last <answer> block after the first "Assistant:", if it parses as an int."""
        text = self.prompt(row, None) + completion
        if "Assistant:" not in text:  # never, with this prompt; kept because TinyZero's rule has the branch
            return None
        block = last_answer_on_a_line(text.split("Assistant:", 1)[1])
        return None if block is None or parse_int(block) is None else block.strip()

    def reward(self, completion, row):
        pred = self.extract(completion, row)
        if pred is None:
            return 0.0
        return 1.0 if parse_int(pred) == int(row["gold"]) else 0.1
