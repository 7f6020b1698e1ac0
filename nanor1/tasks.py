r"""Tasks: real data, a prompt template, and a rule-based reward, looked up by name.

    task = get_task("countdown", template="base")
    rows = task.train_rows()                    # list of dicts, each with "id" (str) and "index" (int)
    text = task.prompt(rows[0], tokenizer)      # the prompt as text; encode it with tokenizer.encode
    r = task.reward(completion_text, rows[0])   # in [0, 1]; task.is_correct(r) <=> r == 1.0

`completion_text` is the decoded completion alone (no prompt), decoded with special tokens kept (the
tokenizer's default) and including the stop string when the rollout stopped on one of `task.stop`. A trailing
EOS token's text (`<|im_end|>`) is harmless to every reward. Rewards are computed in a killable worker process
with a timeout per completion: see `nanor1.verifier.Verifier`.

Templates. `base` is plain text for base models, ending where the model should start writing; `instruct` is
ChatML written by `tokenizer.apply_chat_template`, for instruct models. Rollouts may stop on `task.stop`:
["</answer>"] for templates that ask for <answer> tags (countdown's two, the `base` of the others), nothing
(EOS only) for the boxed instruct templates. TinyZero itself samples to EOS, and its reward is 0 for an answer
followed by another line; stopping at "</answer>" saves the tokens a base model writes after its answer but rules
that failure out. A trainer that wants TinyZero's exact dynamics passes no stop strings.

| task, template      | gold parser                   | model-answer extractor                 | reward         |
|---------------------|-------------------------------|----------------------------------------|----------------|
| countdown, both     | the row's "target" and "nums" | TinyZero's: in prompt + completion,    | 1 correct,     |
|                     |                               | after the first "Assistant:" (else     | 0.1 malformed  |
|                     |                               | "<|im_start|>assistant"), on the LAST  | or wrong,      |
|                     |                               | LINE only, the last <answer> block     | 0 no answer    |
| gsm8k, base         | the number after the last     | the last <answer> block, then its last | 1 numerically  |
|                     | "####", commas removed        | number ($ and commas dropped)          | equal, else 0  |
| gsm8k, instruct     | same                          | the last \boxed{}, then its last       | same           |
|                     |                               | number                                 |                |
| math (and math500,  | the "answer" string (AMC's    | base: the last <answer> block, or the  | 1 if verify.   |
| aime24, amc23),     | float 27.0 becomes "27.0")    | last \boxed{} inside it if it has one; | math_equal,    |
| both                |                               | instruct: the last \boxed{}            | else 0         |

Splits (fixed; `eval_rows(split)`):
- countdown: train = rows 0..9001 of the shipped 10,002; eval "test" = rows 9002..10001 (1000 rows).
- gsm8k: train = train.jsonl (7473); eval "test" = test.jsonl (1319).
- math: train = MATH train (7470, from DeepScaleR, empty answers dropped); eval "math500" (default, 500),
  "aime24" (30), "amc23" (40). Tasks `math500`, `aime24`, `amc23` are `math` with that default eval split.

A new task subclasses `Task` and registers itself; in a module named after it (nanor1/arithmetic.py), get_task
imports it on first use:

    @register_task("arithmetic")
    class Arithmetic(Task): ...      # templates, load(split), prompt, extract, reward
"""

import importlib
import importlib.util
import json
import os
import re

from nanor1.tokenizer import chatml
from nanor1.verify import ARITH_CHARS, eval_arith, last_boxed, last_number, last_tag_block, math_equal

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data")

TASKS = {}  # name -> Task subclass, filled by @register_task


def register_task(name):
    """Class decorator: make a Task subclass available as get_task(name)."""
    def deco(cls):
        if name in TASKS:
            raise ValueError(f"task {name!r} is registered twice ({TASKS[name].__name__} and {cls.__name__})")
        cls.name = name
        TASKS[name] = cls
        return cls
    return deco


def get_task(name, template=None, data_dir=None):
    """The task registered as `name`, with `template` (None: the task's default) and data under `data_dir`.

    A task defined in its own module `nanor1/<name>.py` (e.g. nanor1/arithmetic.py) is imported on first use.
    """
    if name not in TASKS and re.fullmatch(r"[a-z_][a-z0-9_]*", name) and \
            importlib.util.find_spec(f"nanor1.{name}") is not None:
        importlib.import_module(f"nanor1.{name}")  # its @register_task runs on import
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name](template=template, data_dir=data_dir)


def read_jsonl(path, required=()):
    """The JSON objects of a .jsonl file; a bad line fails with `file:line` and what is wrong."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file {path} not found (see data/*/SOURCE.md)")
    out = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise ValueError(f"{path}:{n}: not UTF-8 text") from None
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            missing = [k for k in required if k not in obj]
            if missing:
                raise ValueError(f"{path}:{n}: missing key(s) {missing}")
            out.append(obj)
    if not out:  # caught here, not as a ZeroDivisionError when the trainer draws its first prompt
        raise ValueError(f"data file {path} is empty: no rows")
    return out


class Task:
    """A dataset, a prompt template and a reward. Subclasses set the class attributes and the four methods."""

    name = None  # set by @register_task
    templates = ("base", "instruct")  # the first is the default
    eval_splits = ("test",)  # the first is the default

    def __init__(self, template=None, data_dir=None):
        template = template or self.templates[0]
        if template not in self.templates:
            raise ValueError(f"task {self.name!r} has no template {template!r}; choose from {self.templates}")
        self.template = template
        self.data_dir = data_dir or DATA_DIR
        self._rows = {}  # split -> rows, loaded on first use

    def __getstate__(self):  # the verifier worker gets the task without its loaded rows
        return {**self.__dict__, "_rows": {}}

    @property
    def stop(self):
        """Strings that may end a rollout (kept in the completion)."""
        return ["</answer>"] if self.template == "base" else []

    def train_rows(self):
        return self._cached("train")

    def eval_rows(self, split=None):
        split = split or self.eval_splits[0]
        if split not in self.eval_splits:
            raise ValueError(f"task {self.name!r} has no eval split {split!r}; choose from {self.eval_splits}")
        return self._cached(split)

    def _cached(self, split):
        if split not in self._rows:
            rows = self.load(split)
            if not rows:  # a file too short for the split's rows: training or scoring nothing is no result
                raise ValueError(f"task {self.name!r}: split {split!r} has no rows (data under {self.data_dir})")
            self._rows[split] = rows
        return self._rows[split]

    def load(self, split):
        """Rows of `split` ("train" or one of eval_splits), each a dict with "id" and "index"."""
        raise NotImplementedError

    def prompt(self, row, tokenizer):
        """The prompt text for `row` (instruct templates go through tokenizer.apply_chat_template)."""
        raise NotImplementedError

    def extract(self, completion, row):
        """The model's answer in `completion`, as a string (None when there is none); for logs and evals."""
        raise NotImplementedError

    def reward(self, completion, row):
        """A float in [0, 1]; exactly 1.0 means correct."""
        raise NotImplementedError

    def is_correct(self, reward):
        return reward == 1.0


# ---------------------------------------------------------------------------------------------------------------
# Countdown (TinyZero): reach the target with each given number used once and + - * /

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


@register_task("countdown")
class Countdown(Task):
    """TinyZero's countdown: prompts and reward as in data/countdown/SOURCE.md, reproduced exactly.

    TinyZero scores decode(prompt + response) and reads only its LAST LINE after the first "Assistant:" (or
    "<|im_start|>assistant"). The trainer passes the completion alone; the task rebuilds its own prompt text
    and applies the rule to prompt + completion, so an answer followed by any further line scores 0.
    """

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


# ---------------------------------------------------------------------------------------------------------------
# Word and competition math: GSM8K, MATH

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


@register_task("gsm8k")
class GSM8K(_QATask):
    """Grade-school word problems; the gold answer is the number after "####"."""

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
        return None if block is None else last_number(block)

    def reward(self, completion, row):
        pred = self.extract(completion, row)
        return 1.0 if pred is not None and math_equal(pred, row["gold"]) else 0.0


# split -> (file under data/, key of the problem text)
MATH_FILES = {"train": ("math_train/train.jsonl", "problem"), "math500": ("math500/test.jsonl", "problem"),
              "aime24": ("aime24/test.jsonl", "problem"), "amc23": ("amc23/test.jsonl", "problem")}


@register_task("math")
class MATH(_QATask):
    """Competition math, answers in LaTeX; compared by `math_equal` (normalised strings, then exact numbers)."""

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
        if block is not None and self.template == "base":
            inner = last_boxed(block)  # a base model may box its answer inside the tags
            block = inner if inner is not None else block.strip()
        return block

    def reward(self, completion, row):
        return 1.0 if math_equal(self.extract(completion, row), row["gold"]) else 0.0


@register_task("math500")
class MATH500(MATH):
    eval_splits = ("math500",)


@register_task("aime24")
class AIME24(MATH):
    eval_splits = ("aime24",)


@register_task("amc23")
class AMC23(MATH):
    eval_splits = ("amc23",)


# The shipped tiny base's synthetic task lives in its own file; importing it registers it by name.
from nanor1 import arithmetic  # noqa: E402,F401  (after Task and register_task exist)
