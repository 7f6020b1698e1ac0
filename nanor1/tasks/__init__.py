r"""Tasks: real data, a prompt template, and a rule-based reward, looked up by name.

    task = get_task("countdown", template="base")
    rows = task.train_rows()                    # list of dicts, each with "id" (str) and "index" (int)
    text = task.prompt(rows[0], tokenizer)      # the prompt as text; encode it with tokenizer.encode
    r = task.reward(completion_text, rows[0])   # in [0, 1]; task.is_correct(r) <=> r == 1.0

`completion_text` is the decoded completion alone (no prompt), decoded with special tokens kept (the
tokenizer's default) and including the stop string when the rollout stopped on one of `task.stop`. A trailing
EOS token's text (`<|im_end|>`) is harmless to every reward. Rewards are computed in a killable worker process
with a timeout per completion: see `nanor1.verifier.Verifier`.

    base.py        Task (the interface) and read_jsonl
    countdown.py   TinyZero's countdown
    multiplication.py  TinyZero's multiplication
    mathqa.py      GSM8K and MATH (+ MATH-500, AIME24, AMC23)
    arithmetic.py  the tiny base's addition task
    recheck.py     the same additions, by four writers, one of which re-checks its guess (data/tiny_recheck)

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
| gsm8k, base         | the number after the last     | the last <answer> block, then its      | 1 numerically  |
|                     | "####", commas removed        | final numeric expression (verify.      | equal, else 0  |
|                     |                               | last_number: "56/2", "−20", "60 ft^2") |                |
| gsm8k, instruct     | same                          | the last \boxed{}, then the same       | same           |
| math (and math500,  | the "answer" string (AMC's    | base: the last <answer> block, then    | 1 if verify.   |
| aime24, amc23),     | float 27.0 becomes "27.0")    | verify.answer_span (its \boxed{}, its  | math_equal,    |
| both                |                               | last $...$, or the sentence's answer); | else 0         |
|                     |                               | instruct: the last \boxed{}            |                |

Graders (`--grader`, gsm8k, math and jsonl): "builtin" is the table above; "math_verify" gives the <answer> block
or the \boxed{} content to the optional math-verify package instead (verify.answers_match).

Splits (fixed; `eval_rows(split)`):
- countdown: train = rows 0..9001 of the shipped 10,002; eval "test" = rows 9002..10001 (1000 rows).
- gsm8k: train = train.jsonl (7473); eval "test" = test.jsonl (1319).
- math: train = MATH train (7470, from DeepScaleR, empty answers dropped); eval "math500" (default, 500),
  "aime24" (30), "amc23" (40). Tasks `math500`, `aime24`, `amc23` are `math` with that default eval split.

- arithmetic: the shipped tiny base's synthetic task (arithmetic.py); recheck: the same rows (recheck.py).

A new task is a `Task` subclass (base.py: a name, templates, load(split), prompt, extract, reward) in a module
of this package, and one entry in `TASKS` below: the registry is that list, nothing registers itself at import.
"""
from nanor1.tasks.arithmetic import Arithmetic
from nanor1.tasks.base import DATA_DIR, Task, read_jsonl  # noqa: F401  (the package's interface)
from nanor1.tasks.countdown import Countdown
from nanor1.tasks.jsonl import JsonlTask, RewardFn
from nanor1.tasks.mathqa import AIME24, AMC23, GSM8K, MATH, MATH500
from nanor1.tasks.multiplication import Multiplication
from nanor1.tasks.recheck import Recheck

TASKS = {cls.name: cls for cls in (Arithmetic, Recheck, Countdown, Multiplication, GSM8K, MATH, MATH500, AIME24,
                                   AMC23, JsonlTask)}


def get_task(name, template=None, data_dir=None, grader="builtin", reward_fn="", **jsonl):
    """The task registered as `name`, with `template` (None: the task's default), data under `data_dir`, answers
    compared by `grader`; `jsonl` options (data, eval_data, answer_key, reward) go to --task jsonl. With
    `reward_fn` ("file.py:function") the task's reward is replaced by that function."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; tasks: {', '.join(sorted(TASKS))}")
    task = TASKS[name](template=template, data_dir=data_dir, grader=grader, **(jsonl if name == "jsonl" else {}))
    return RewardFn(task, reward_fn) if reward_fn else task
