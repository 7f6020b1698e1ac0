"""A synthetic task where self-checking exists in the base and can pay: addition, written by four writers.

Problems, prompt, split and reward are arithmetic.py's (add two 2- or 3-digit numbers; 1.0 for the right sum
in the last <answer> block, 0.1 for another answer, 0 for none). Only the pretraining corpus differs (data/
build_tiny.py --task recheck): its documents come from four writers, in the shares of `WRITERS`. For 347+585:

    short        " Guess: 457.</think> <answer>457</answer>"
                 a guess and nothing else: a random number of about the right size, right by luck only
    careful      " 7+5=12, 4+8+1=13, 3+5+1=9.</think> <answer>932</answer>"
                 column by column, carrying the one (arithmetic.py's careful writer, slips included)
    recheck      " Guess: 457. Wait, let me re-check: 7+5=12, 4+8+1=13, 3+5+1=9.</think> <answer>932</answer>"
                 a guess, a reflection phrase, then the careful columns, whose sum replaces the guess
    superficial  " Guess: 457. Wait, let me re-check: yes, 457.</think> <answer>457</answer>"
                 a guess, the same phrase, and the guess again: it looks like a check and keeps the wrong answer

The phrase is one of `PHRASES`; `MARKERS` are their words, the task's reflection markers.

Why this mix. R1-Zero's three curves (accuracy, length, self-checking) need a base that already writes a
long self-checking strategy that is sometimes right, as Oat-Zero found real base models do. Here the short
guess is the majority, so greedy decoding guesses (and is wrong); reflection is a minority and much of it is
superficial. Nothing in the reward mentions length or reflection, but a reflecting completion is right when
its re-check does the columns, so GRPO raises reflection, and with it length, because the right strategy is
the long one. The careful writer is also right, and shorter: with the same reward per right answer, GRPO
ends up preferring it whenever it is common enough to be found, and reflection then dies out again.

How data/tiny_recheck was built (its README has both commands and figures). Stage 1 pretrains from nothing on
WRITERS (careful 8%): enough column documents (careful + recheck, 28%) for the 0.84M-parameter model to learn
to add; a first build with 25% column documents (careful 3%) never did (its samples were right 0.4% of the
time). Stage 2 continues that model for 200 steps on the mix short 0.70, careful 0.02, recheck 0.20,
superficial 0.08 (build_tiny.py --init --mix): careful becomes rare (1.8% of samples) while the columns stay
learnt (sampled re-checks right 83% of the time, careful ones 76%). On the stage-1 base, where careful is 8% of
the samples, GRPO raised reflection_rate from 0.28 to about 0.6 by step 20-30, then the careful writer took
over and reflection fell to 0.01 by step 40 (Dr. GRPO's loss delayed that by some 10 steps); on the stage-2
base reflection rises to 0.85-0.9 and stays there over 60 steps (BENCHMARKS.md).

Why the guess is random rather than a wrong sum. An earlier design guessed each column's sum mod 10 (the
carry-forgetting sum, right on carry-free problems). The base learned that the re-check's column sums end in
the guess's digits and copied them from its own wrong guess: its re-checks were right 8% of the time against
42% for the careful writer, and RL did not raise reflection. A random guess carries nothing to copy.
"""
import re

from nanor1.reflection import reflects
from nanor1.tasks.arithmetic import ANSWER, PROMPT, Arithmetic, solution, train_problem

# Shares of the stage-1 pretraining documents by writer (they sum to 1; stage 2's are in the docstring): short
# guesses the majority, so greedy decoding guesses; reflection (recheck + superficial) 30%, a third superficial.
WRITERS = {"short": 0.62, "careful": 0.08, "recheck": 0.20, "superficial": 0.10}
PHRASES = ("Wait, let me re-check:", "Wait, let me check again:", "Let me double-check:")
MARKERS = ("wait", "re-check", "check again", "double-check")  # the words of PHRASES


def guess(a, rng):
    """A random guess of about the size of a sum of two numbers as long as `a`: 10..199 for two digits,
    100..1999 for three. Independent of the problem, so a re-check cannot learn to copy from it."""
    n = len(str(a))
    return rng.randint(10 ** (n - 1), 2 * 10 ** n - 1)


def completion(a, b, writer, rng):
    """One writer's completion of the prompt for a + b; `rng` draws the guess, the phrase and the slips."""
    if writer == "careful":
        return solution(a, b, slip_rng=rng)
    if writer not in WRITERS:
        raise ValueError(f"unknown writer {writer!r}; choose from {list(WRITERS)}")
    g = guess(a, rng)
    first = f" Guess: {g}."
    if writer == "short":
        return first + ANSWER.format(answer=g)
    phrase = rng.choice(PHRASES)
    if writer == "recheck":
        return f"{first} {phrase}" + solution(a, b, slip_rng=rng)
    return f"{first} {phrase} yes, {g}." + ANSWER.format(answer=g)  # superficial


def document(rng, writers=None):
    """One pretraining document as (prompt, completion): a training problem and one writer's completion,
    the writer drawn with probability its share in `writers` (default WRITERS)."""
    a, b = train_problem(rng)
    u, acc = rng.random(), 0.0
    for writer, share in (writers or WRITERS).items():  # the writer whose share covers u (the last absorbs rounding)
        acc += share
        if u < acc:
            break
    return PROMPT.format(a=a, b=b), completion(a, b, writer, rng)


STRATEGIES = ("short", "careful", "recheck", "superficial", "other")  # what `strategy` returns
_COLUMN = re.compile(r"\d\+\d(\+1)?=\d")  # one column step, "7+5=12" or "4+8+1=13"
_GUESS = re.compile(r" Guess: \d+\.")  # the short guess, " Guess: 822."


def strategy(text, markers=MARKERS):
    """Which writer a completion looks like, from its <think> part: "recheck" (a marker, then column steps),
    "superficial" (a marker, no column step), "careful" (column steps, no marker), "short" (the guess alone,
    then the answer) or "other"."""
    think = text.split("</think>")[0]
    columns = _COLUMN.search(think) is not None
    if reflects(think, markers):
        return "recheck" if columns else "superficial"
    if columns:
        return "careful"
    if _GUESS.fullmatch(think) and "</think>" in text:
        return "short"
    return "other"


class Recheck(Arithmetic):
    """arithmetic's problems and reward, for the base pretrained on the four writers (data/tiny_recheck)."""

    name = "recheck"
    reflection_markers = MARKERS
    completion_len = 72  # a recheck of two 3-digit numbers is about 50 tokens

    def load(self, split):
        return [{**row, "id": row["id"].replace("arithmetic/", "recheck/", 1)} for row in super().load(split)]
