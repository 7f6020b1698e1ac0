"""The Task interface every task implements, and the JSONL reader the real datasets go through."""
import json
import os

from nanor1.reflection import REFLECTION_MARKERS
from nanor1.verify import answers_match, check_grader

DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "data")


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

    name = None  # the registry's key (nanor1/tasks/__init__.py)
    templates = ("base", "instruct")  # the first is the default
    eval_splits = ("test",)  # the first is the default
    completion_len = 1024  # sample.py's default generation budget on this task
    reflection_markers = REFLECTION_MARKERS  # words that mark a self-check (nanor1/reflection.py); a task may differ
    graders = ("builtin",)  # answer comparisons the reward can use (verify.answers_match); the first is the default

    def __init__(self, template=None, data_dir=None, grader="builtin"):
        template = template or self.templates[0]
        if template not in self.templates:
            raise ValueError(f"task {self.name!r} has no template {template!r}; choose from {self.templates}")
        if grader not in self.graders:
            raise ValueError(f"task {self.name!r} has no grader {grader!r}; choose from {self.graders}")
        check_grader(grader)  # math_verify: fail here, with the pip command, not as reward errors in the worker
        self.template = template
        self.data_dir = data_dir or DATA_DIR
        self.grader = grader  # how answers_match compares: builtin (nanor1/verify.py) or math_verify
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

    def answers_match(self, pred, gold):
        """Whether the extracted answer `pred` equals `gold`, by this task's grader."""
        return answers_match(pred, gold, self.grader)

