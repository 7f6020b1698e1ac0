"""Where one training step's time goes, phase by phase: the demo (`python train.py`) or any train.py options.

    python bench/profile_step.py                             the demo's step, one thread, 3 timed steps
    python bench/profile_step.py --steps 5 --torch_profile   + the top ops of one step (torch.profiler)
    python bench/profile_step.py --pyinstrument FILE.txt     + a Python sampling profile of the timed steps
    python bench/profile_step.py -- --micro_batch_size 64    train.py options after `--`

The step runs exactly as train.py runs it (nanor1.step's collect, score, update); each phase is timed by
wrapping the function that does it, so nothing in nanor1/ carries timing code. Two clocks per phase:
wall (what a user waits) and this process's CPU time (what the phase costs; on a shared machine wall time
also counts the time the process waited for a core, so CPU time is the steadier figure). The verifier works in
another process: its phase is wall time in which this process waits. Warm-up steps are not timed.
"""
import argparse
import os
import sys
import time
from collections import defaultdict

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import train  # noqa: E402
from nanor1 import distributed, rollout  # noqa: E402
from nanor1 import step as rl  # noqa: E402
from nanor1.config import parse_args  # noqa: E402
from nanor1.model import KVCache, load_model_and_tokenizer  # noqa: E402
from nanor1.precision import choose  # noqa: E402

# (phase, its parent): each row of the table; "other" rows are a parent's time outside its listed children.
PHASES = [("collect", None), ("prefill", "collect"), ("decode forward", "collect"), ("sample", "collect"),
          ("sampler log-probs", "collect"), ("stop checks", "collect"), ("compaction", "collect"),
          ("decode ids to text", "collect"), ("rewards (verifier)", "collect"),
          ("score", None), ("pack", "score"),
          ("update", None), ("forward + loss", "update"), ("backward", "update"), ("optimiser step", "update")]


class Clock:
    """Totals of wall and CPU seconds per phase, filled by `wrap`."""

    def __init__(self):
        self.wall, self.cpu, self.on = defaultdict(float), defaultdict(float), False

    def wrap(self, owner, name, phase):
        fn = getattr(owner, name)

        def timed(*a, **k):
            if not self.on:
                return fn(*a, **k)
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                self.wall[phase] += time.perf_counter() - w
                self.cpu[phase] += time.process_time() - c
        setattr(owner, name, timed)


def instrument(clock, run):
    """Wrap the functions each phase runs (where the step's modules look them up)."""
    for owner, name, phase in ((rl, "collect", "collect"), (rl, "score", "score"), (rl, "update", "update"),
                               (rollout, "prefill", "prefill"), (rollout, "decode_step", "decode forward"),
                               (rollout, "sample", "sample"), (rollout, "logprobs_of", "sampler log-probs"),
                               (rollout.Stop, "finished", "stop checks"), (KVCache, "compact", "compaction"),
                               (run.tok, "decode_batch", "decode ids to text"),
                               (run.verifier, "score", "rewards (verifier)"), (rl, "pack", "pack"),
                               (rl.PolicyLearner, "loss", "forward + loss"), (torch.Tensor, "backward", "backward"),
                               (rl, "optimiser_step", "optimiser step")):
        clock.wrap(owner, name, phase)
    train.collect, train.score, train.update = rl.collect, rl.score, rl.update


def table(clock, n):
    """The phase table, per step."""
    total_w = sum(clock.wall[p] for p, parent in PHASES if parent is None) / n
    total_c = sum(clock.cpu[p] for p, parent in PHASES if parent is None) / n
    lines = ["| phase | wall s / step | CPU s / step | share of CPU |", "|---|---|---|---|"]

    def line(name, w, c):
        lines.append(f"| {name} | {w / n:.3f} | {c / n:.3f} | {100 * c / n / max(total_c, 1e-9):.0f}% |")
    for top, parent in PHASES:
        if parent is not None:
            continue
        line(f"**{top}**", clock.wall[top], clock.cpu[top])
        kids = [p for p, q in PHASES if q == top]
        for k in kids:
            line(f"  {k}", clock.wall[k], clock.cpu[k])
        line(f"  other ({top})", clock.wall[top] - sum(clock.wall[k] for k in kids),
             clock.cpu[top] - sum(clock.cpu[k] for k in kids))
    lines.append(f"| **step** | {total_w:.3f} | {total_c:.3f} | 100% |")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3, help="timed steps (after the warm-up)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--torch_profile", action="store_true", help="also print torch.profiler's top ops of one step")
    p.add_argument("--pyinstrument", default="", help="write a pyinstrument profile of the timed steps here")
    p.add_argument("train_args", nargs="*", help="train.py options (after --)")
    args = p.parse_args()
    cfg = parse_args(["--out", "/dev/null", "--threads", str(args.threads)] + args.train_args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(cfg.seed)
    d = distributed.setup()
    prec = choose(d.device, cfg.precision)
    policy, tok = load_model_and_tokenizer(cfg.model, torch.float32, d.device)
    run = train.prepare(cfg, d, prec, policy, tok)
    learner = rl.PolicyLearner(policy, train.adamw(policy, cfg, cfg.lr), run)
    clock = Clock()
    instrument(clock, run)
    cursor, opt_step = 0, 0

    def one(step):
        nonlocal cursor, opt_step
        groups, _, cursor = rl.collect(run, policy, step, cursor, cfg.max_completion_len)
        batch, sums = rl.score(run, groups, policy, None, None, cfg.max_completion_len)
        opt_step = rl.update(run, batch, [learner], opt_step, lambda _: cfg.lr, sums, cfg.max_completion_len)

    for s in range(1, args.warmup + 1):
        one(s)
    prof = None
    if args.pyinstrument:
        from pyinstrument import Profiler  # a benchmark's own optional dependency (pip install pyinstrument)
        prof = Profiler(interval=0.001)
        prof.start()
    clock.on = True
    for s in range(args.warmup + 1, args.warmup + 1 + args.steps):
        one(s)
    clock.on = False
    if prof is not None:
        prof.stop()
        with open(args.pyinstrument, "w") as f:
            f.write(prof.output_text(unicode=False, color=False))
    load = os.getloadavg()
    print(f"# {args.steps} steps after {args.warmup} warm-up, {args.threads} thread(s), load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, train options: {' '.join(args.train_args) or '(the demo)'}")
    print(table(clock, args.steps))
    if args.torch_profile:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as tp:
            one(args.warmup + args.steps + 1)
        print(tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
    run.verifier.close()


if __name__ == "__main__":
    main()
