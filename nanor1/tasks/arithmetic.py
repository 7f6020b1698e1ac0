"""A synthetic task for the tiny base model: add two 2- or 3-digit numbers, thinking first.

    prompt      User: What is 347+585? Think, then answer in <answer> </answer>.
                Assistant: <think>
    careful     " 7+5=12, 4+8+1=13, 3+5+1=9.</think> <answer>932</answer>"     (carries the one)
    sloppy      " 7+5=2, 4+8=2, 3+5=8.</think> <answer>822</answer>"           (forgets every carry)

The same generator writes the pretraining corpus (data/build_tiny.py) and the task rows (`Arithmetic`), so
the base model and the RL task agree on every character.

Why two writers. R1-Zero works because the base model can already reason some of the time: RL samples
a group of completions, and the better ones get a positive advantage (DeepSeek-R1 paper; Yue et al. 2025,
"Does Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs Beyond the Base Model?", find
that a base's pass@k at large k bounds what RL reaches). The corpus mimics such a base: every document
works column by column, right to left, but only `CAREFUL_SHARE` of them are by a careful writer, who
carries the one (and slips on a column now and then, `SLIP_RATE`); the rest forget every carry.
The writers differ only at the first column whose digits sum to 10 or more, and a model of the corpus
carries there with probability about CAREFUL_SHARE. So greedy decoding forgets the carry (right only
on carry-free problems), while samples at temperature 1 carry often enough that pass@8 is high. RL then
has a real signal: within a group, the completions that carried are the ones that got it right.

Split (fixed, seeded): the held-out "test" split is `EVAL_SIZE` distinct problems drawn with `EVAL_SEED`.
A problem and its mirror (b + a) are both held out: `train_problem` never draws either, so neither the
pretraining corpus nor the RL "train" split (`TRAIN_SIZE` rows drawn with `TRAIN_SEED`) contains them.

Reward (the countdown rule): 1.0 when the last <answer> block holds the right sum, 0.1 when it holds
anything else, 0.0 when there is no <answer>...</answer> at all.
"""
import functools
import random
import re

from nanor1.tasks.base import Task
from nanor1.verify import last_tag_block

DIGITS = (2, 3)  # both operands have the same number of digits, chosen from these
EVAL_SEED, EVAL_SIZE = 1234, 500  # the held-out test split
TRAIN_SEED, TRAIN_SIZE = 5678, 20000  # the RL train split
CAREFUL_SHARE = 0.3  # documents by the careful writer; a minority, so greedy decoding forgets to carry
SLIP_RATE = 0.1  # careful documents with one column added wrong (by one), carried through to the answer

PROMPT = "User: What is {a}+{b}? Think, then answer in <answer> </answer>.\nAssistant: <think>"
ANSWER = "</think> <answer>{answer}</answer>"


def random_problem(rng):
    """Two operands with the same number of digits, the leading digit nonzero."""
    n = rng.choice(DIGITS)
    lo, hi = 10 ** (n - 1), 10 ** n - 1
    return rng.randint(lo, hi), rng.randint(lo, hi)


@functools.cache
def eval_problems():
    """The held-out problems (a constant list, identical on every machine) and the set of them and their
    mirrors. Drawn on first use, not at import."""
    rng, seen, out = random.Random(EVAL_SEED), set(), []
    while len(out) < EVAL_SIZE:
        a, b = random_problem(rng)
        if (a, b) not in seen:
            seen.update({(a, b), (b, a)})
            out.append((a, b))
    return out, frozenset(seen)


def train_problem(rng):
    """A random problem that is not in the held-out split (nor its mirror)."""
    held_out = eval_problems()[1]
    while True:
        a, b = random_problem(rng)
        if (a, b) not in held_out:
            return a, b


def digits(x, n):
    """The n lowest digits of x, least significant first: digits(347, 3) = [7, 4, 3]."""
    return [(x // 10 ** i) % 10 for i in range(n)]


def has_carry(a, b):
    n = max(len(str(a)), len(str(b)))
    return any(x + y >= 10 for x, y in zip(digits(a, n), digits(b, n)))


def solution(a, b, careful=True, slip_rng=None):
    """One writer's completion: an `x+y(+1)=s` step per column, right to left, then the answer the steps
    spell. The sloppy writer (careful=False) writes each column's sum mod 10 and never carries. With
    `slip_rng`, the careful writer gets one column off by one with probability SLIP_RATE; the carry and the
    answer then follow what was written, as a human's would."""
    n = len(str(a))
    slip = slip_rng.randrange(n) if careful and slip_rng is not None and slip_rng.random() < SLIP_RATE else -1
    steps, out_digits, carry = [], [], 0
    for i, (x, y) in enumerate(zip(digits(a, n), digits(b, n))):
        s = x + y + carry
        if i == slip:  # a slip: one off, staying within 0..19 so a carry is still 0 or 1
            s = s + 1 if s == 0 or (s < 19 and slip_rng.random() < 0.5) else s - 1
        if not careful:
            s %= 10
        steps.append(f"{x}+{y}" + ("+1" if carry else "") + f"={s}")
        carry = s // 10
        out_digits.append(s % 10)
    answer = int(("1" if carry else "") + "".join(str(d) for d in reversed(out_digits)))  # int: no leading 0
    return " " + ", ".join(steps) + "." + ANSWER.format(answer=answer)


def carried(completion):
    """Whether a completion carries somewhere (writes a two-digit column sum): the careful writer's mark."""
    return re.search(r"=\d\d", completion.split("</think>")[0]) is not None


def document(rng):
    """One pretraining document as (prompt, completion): a training problem and one writer's solution."""
    a, b = train_problem(rng)
    return PROMPT.format(a=a, b=b), solution(a, b, careful=rng.random() < CAREFUL_SHARE, slip_rng=rng)


class Arithmetic(Task):
    """Addition of two 2- or 3-digit numbers, for the tiny base model (data/tiny); see the module docstring."""

    name = "arithmetic"
    templates = ("base",)  # plain text for a base model; the tiny base never saw ChatML
    completion_len = 64  # a solution is about 30 tokens

    def load(self, split):
        if split == "train":
            rng = random.Random(TRAIN_SEED)
            problems = [train_problem(rng) for _ in range(TRAIN_SIZE)]
        else:
            problems = eval_problems()[0]
        return [{"id": f"arithmetic/{split}/{i}", "index": i, "a": a, "b": b, "gold": str(a + b)}
                for i, (a, b) in enumerate(problems)]

    def prompt(self, row, tokenizer):
        return PROMPT.format(a=row["a"], b=row["b"])

    def extract(self, completion, row):
        block = last_tag_block(completion, "answer")
        return None if block is None else block.strip()

    def reward(self, completion, row):
        pred = self.extract(completion, row)
        if pred is None:
            return 0.0
        # digits only, and few of them: int() of a 10k-digit string would be slow, and "+932" is not an answer
        return 1.0 if re.fullmatch(r"\d{1,8}", pred) and int(pred) == int(row["gold"]) else 0.1
