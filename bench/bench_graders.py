"""The reward graders against the adversarial corpus (bench/grader_corpus.py): agreement with the truth, false
positives, false negatives and microseconds per completion, per task and category.

    python bench/bench_graders.py                  # builtin, math-verify (if installed), veRL gsm8k, TinyZero
    python bench/bench_graders.py --show 20        # also print up to 20 disagreements per grader
    python bench/bench_graders.py --no-math-verify

Graders:
- builtin: nanoR1's task.reward (nanor1/verify.py), timed in this process.
- math_verify: task.reward with grader="math_verify" (the math-verify package), run as in training: in the
  killable verifier worker with a 10 s timeout per completion (a timeout scores 0); its time per completion
  includes the worker's pipe (tens of microseconds).
- veRL gsm8k (peer, GSM8K only): veRL's "flexible" rule, restated from volcengine/verl
  verl/utils/reward_score/gsm8k.py: the last match of -?[0-9.,]+ that is not "" or ".", equal as a string to the
  gold; applied to the same <answer> block / \\boxed{} content as ours (veRL's "strict" rule needs "#### N").
- TinyZero (peer, countdown only): compute_score as data/countdown/SOURCE.md states it, with Python's eval;
  answers with `**` are skipped (a tower would run eval for ever).
A verdict is "correct" when the reward is 1.0 (countdown: when the reward equals the truth, 0.1 included);
a false positive scores 1.0 where the truth is lower, a false negative scores below 1.0 where the truth is 1.0.
"""
import argparse
import importlib.util
import os
import re
import sys
import time
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.grader_corpus import SEED, build  # noqa: E402
from nanor1.tasks import get_task  # noqa: E402
from nanor1.verifier import Verifier  # noqa: E402
from nanor1.verify import last_boxed, last_tag_block  # noqa: E402


def _row(case):
    if case["task"] == "countdown":
        return {"nums": case["nums"], "target": case["target"], "gold": case["gold"]}
    return {"gold": case["gold"]}


def score_builtin(cases):
    tasks, out = {}, []
    for c in cases:
        key = (c["task"], c["template"])
        task = tasks.get(key) or tasks.setdefault(key, get_task(c["task"], c["template"]))
        t0 = time.perf_counter()
        r = task.reward(c["completion"], _row(c))
        out.append((r, time.perf_counter() - t0))
    return out


def score_math_verify(cases, timeout=10.0):
    """Rewards through the verifier worker, one batch per (task, template, category) so times are per category."""
    out = [None] * len(cases)
    groups = defaultdict(list)
    for i, c in enumerate(cases):
        if c["task"] != "countdown":
            groups[(c["task"], c["template"], c["category"])].append(i)
    verifiers = {}
    try:
        for (task, template, _), idx in groups.items():
            v = verifiers.get((task, template))
            if v is None:
                v = verifiers[(task, template)] = Verifier(get_task(task, template, grader="math_verify"), timeout)
                v.score(["warm-up"], [{"gold": "1"}])  # start the worker outside the timing
            t0 = time.perf_counter()
            rewards = v.score([cases[i]["completion"] for i in idx], [_row(cases[i]) for i in idx])
            dt = (time.perf_counter() - t0) / len(idx)
            for i, r in zip(idx, rewards):
                out[i] = (r, dt)
    finally:
        for v in verifiers.values():
            v.close()
    return out


def verl_gsm8k(case):
    """veRL's flexible gsm8k rule (see the module docstring) on the block our extraction reads."""
    block = last_tag_block(case["completion"]) if case["template"] == "base" else last_boxed(case["completion"])
    if block is None:
        return 0.0
    found = [m for m in re.findall(r"(\-?[0-9\.\,]+)", block) if m not in ("", ".")]
    return 1.0 if found and found[-1] == case["gold"] else 0.0


def tinyzero(case):
    """TinyZero's compute_score with eval, on the prompt + completion (None: skipped)."""
    if "**" in case["completion"]:
        return None
    task = get_task("countdown", case["template"])
    text = task._prompt_text(_row(case)) + case["completion"]
    marker = next((m for m in ("Assistant:", "<|im_start|>assistant") if m in text), None)
    if marker is None:
        return 0.0
    text = text.split(marker, 1)[1]
    matches = list(re.finditer(r"<answer>(.*?)</answer>", text.split("\n")[-1]))
    if not matches:
        return 0.0
    eq = matches[-1].group(1).strip()
    try:
        if sorted(int(n) for n in re.findall(r"\d+", eq)) != sorted(case["nums"]):
            return 0.1
        if not re.match(r"^[\d+\-*/().\s]+$", eq):
            return 0.1
        result = eval(eq, {"__builtins__": None}, {})
    except Exception:
        return 0.1
    return 1.0 if abs(result - case["target"]) < 1e-5 else 0.1


def _verdicts(case, r):
    """(agrees, false positive, false negative) of reward r against the case's truth."""
    if r is None:
        return None
    truth = case["truth"]
    agree = r == truth if case["task"] == "countdown" else (r == 1.0) == (truth == 1.0)
    return agree, r == 1.0 and truth < 1.0, r < 1.0 and truth == 1.0


def _cells(cases, idx, results):
    """'agree% | FP | FN | us' for one grader over the cases idx (blank when it did not score them)."""
    rows = [(_verdicts(cases[i], results[i][0]), results[i][1]) for i in idx if results[i] is not None]
    rows = [(v, t) for v, t in rows if v is not None]
    if not rows:
        return " | | |"
    agree = sum(v[0] for v, _ in rows) / len(rows)
    times = [t for _, t in rows if t is not None]
    us = f"{1e6 * sum(times) / len(times):.0f}" if times else ""
    return f" {100 * agree:.1f} | {sum(v[1] for v, _ in rows)} | {sum(v[2] for v, _ in rows)} | {us}"


def table(cases, graders):
    names = list(graders)
    print("| task | category | n | " + " | ".join(f"{g} agree % | FP | FN | us" for g in names) + " |")
    print("|---|---|---" + "|---|---|---|---" * len(names) + "|")
    groups = defaultdict(list)
    for i, c in enumerate(cases):
        groups[(c["task"], c["category"])].append(i)
    for task in ("gsm8k", "math", "countdown"):
        keys = sorted(k for k in groups if k[0] == task)
        for key in keys + [(task, "ALL")]:
            idx = groups[key] if key[1] != "ALL" else [i for k in keys for i in groups[k]]
            cells = "|".join(_cells(cases, idx, graders[g]) for g in names)
            bold = "**" if key[1] == "ALL" else ""
            print(f"| {task} | {bold}{key[1]}{bold} | {len(idx)} |{cells} |")


def rule(cases, builtin, mv):
    """Issue 24's rule: no false positive, and wrong on at most 2% of the cases math-verify gets right."""
    fp = [i for i, c in enumerate(cases) if _verdicts(c, builtin[i][0])[1]]
    print(f"\nbuiltin false positives (all tasks): {len(fp)}")
    if mv is None:
        return fp, []
    mv_right = [i for i, c in enumerate(cases) if mv[i] is not None and _verdicts(c, mv[i][0])[0]]
    lost = [i for i in mv_right if not _verdicts(cases[i], builtin[i][0])[0]]
    won = [i for i, c in enumerate(cases) if mv[i] is not None and not _verdicts(c, mv[i][0])[0]
           and _verdicts(c, builtin[i][0])[0]]
    print(f"math-verify right on {len(mv_right)} gsm8k/math cases; builtin wrong on {len(lost)} of them "
          f"({100 * len(lost) / max(1, len(mv_right)):.2f}%; the rule: at most 2%). Builtin right where "
          f"math-verify is wrong: {len(won)}.")
    mv_fp = sum(_verdicts(cases[i], mv[i][0])[1] for i in range(len(cases)) if mv[i] is not None)
    print(f"math-verify false positives: {mv_fp}")
    return fp, lost


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--no-math-verify", action="store_true")
    p.add_argument("--show", type=int, default=0, help="print up to this many disagreements per grader")
    args = p.parse_args()
    cases = build(args.seed)
    print(f"{len(cases)} cases (bench/grader_corpus.py, seed {args.seed})\n")
    graders = {"builtin": score_builtin(cases)}
    mv = None
    if not args.no_math_verify and importlib.util.find_spec("math_verify") is not None:
        mv = graders["math_verify"] = score_math_verify(cases)
    elif not args.no_math_verify:
        print("math-verify not installed (pip install math-verify): its columns are left out\n")
    graders["veRL gsm8k"] = [(verl_gsm8k(c), None) if c["task"] == "gsm8k" else None for c in cases]
    graders["TinyZero"] = [(tinyzero(c), None) if c["task"] == "countdown" else None for c in cases]
    table(cases, graders)
    fp, lost = rule(cases, graders["builtin"], mv)
    if args.show:
        for title, idx in (("builtin false positives", fp), ("builtin wrong, math-verify right", lost),
                           ("math-verify wrong", [i for i in range(len(cases)) if mv and mv[i] is not None
                                                  and not _verdicts(cases[i], mv[i][0])[0]])):
            print(f"\n{title}:")
            for i in idx[:args.show]:
                c = cases[i]
                print(f"  [{c['task']}/{c['category']}] truth {c['truth']} builtin {graders['builtin'][i][0]} "
                      f"gold {c['gold']!r}: {c['completion'][-120:]!r}")


if __name__ == "__main__":
    main()
