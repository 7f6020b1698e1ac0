"""Verifier throughput: 4096 completions of ~1 kB per task, in-process vs through the killable worker.

    python bench/bench_verify.py
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nanor1.tasks import get_task  # noqa: E402
from nanor1.verifier import Verifier  # noqa: E402

ANSWERS = [("countdown", "</think>\n<answer> (44 + 19) + 35 </answer>"),
           ("gsm8k", "<think> x </think> <answer> $18.00 </answer>"),
           ("math", "<answer> \\boxed{\\dfrac{1}{2}} </answer>")]


def main():
    print("| task | n | in-process ms | Verifier, first call ms | Verifier, warm ms | us / completion |")
    print("|---|---|---|---|---|---|")
    for name, answer in ANSWERS:
        task = get_task(name)
        rows = task.train_rows()[:4096]
        completions = ["blah " * 200 + answer] * len(rows)  # ~1 kB of text before the answer
        t0 = time.perf_counter()
        inproc = [task.reward(c, r) for c, r in zip(completions, rows)]
        t1 = time.perf_counter()
        with Verifier(task, timeout=5) as v:
            first = v.score(completions, rows)
            t2 = time.perf_counter()
            warm = v.score(completions, rows)
            t3 = time.perf_counter()
        assert first == inproc == warm
        print(f"| {name} | {len(rows)} | {1e3 * (t1 - t0):.0f} | {1e3 * (t2 - t1):.0f} | {1e3 * (t3 - t2):.0f} | "
              f"{1e6 * (t3 - t2) / len(rows):.0f} |", flush=True)


if __name__ == "__main__":
    main()
