"""GRPO, Dr. GRPO, RLOO, REINFORCE++ and PPO side by side on the CPU demo (the shipped tiny base, arithmetic).

    python scripts/compare.py                          the five runs, then docs/compare.png and a markdown table
    python scripts/compare.py --threads 1              on a shared machine: one thread per run
    python scripts/compare.py --only ppo --steps 40    some of the runs, fewer steps
    python scripts/compare.py --plot_only              redraw the figure and the table from finished runs
    python scripts/compare.py --out out/cmp-gsm8k --model Qwen2.5-0.5B --task gsm8k --lr 1e-6
                                                       any other option goes to every run's train.py

Each run is `python train.py` with the demo's defaults (32 prompts x 8 completions, lr 3e-5, greedy pass@1 on
200 held-out problems every 10 steps), the same --seed and --steps, plus only what names the algorithm (RUNS
below). They run one after another, each in its own process, into OUT/<name>/. A run whose folder already
holds its last evaluation is not run again (its timings are read from OUT/<name>/compare.json); delete the
folder to rerun it.

The table (for BENCHMARKS.md): held-out accuracy at steps 0, 10, 20, 30, 40 and at the end; the first evaluated
step at or above 0.9; completion length and entropy (means of the last 10 steps); the command's wall time and
its CPU time (user + sys, children included: on a machine shared with other jobs the wall time grows and the
CPU time does not); the mean step time (rollout + update, as the run logged it). The figure: held-out accuracy
against step and against training time (the summed rollout and update times, evaluation excluded), the
rollouts' reward, completion length, entropy, and PPO's explained variance.

matplotlib is needed by the figure alone (pip install matplotlib); nanor1 itself does not use it.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> the options that make it that algorithm; everything else is the demo's default.
RUNS = {
    "grpo": [],
    "dr_grpo": ["--loss_type", "dr_grpo", "--scale_rewards", "none"],
    "rloo": ["--algo", "rloo"],
    "reinforce_pp": ["--algo", "reinforce_pp"],
    "ppo": ["--algo", "ppo"],
}


def read_metrics(folder):
    rows = [json.loads(x) for x in (Path(folder) / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "reward" in r], [r for r in rows if "eval_accuracy" in r]


def finished(folder, steps):
    if not (Path(folder) / "metrics.jsonl").is_file() or not (Path(folder) / "compare.json").is_file():
        return False
    _, evals = read_metrics(folder)
    return bool(evals) and evals[-1]["step"] == steps


def run_one(name, args, a):
    """train.py in a child process; returns its timings (also written to OUT/name/compare.json)."""
    out = Path(a.out) / name
    cmd = [sys.executable, "train.py", "--out", str(out), "--seed", str(a.seed), "--steps", str(a.steps),
           "--log_samples_every", "0", *(["--threads", str(a.threads)] if a.threads else []), *args]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    before, load0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), os.getloadavg()[0], time.time()
    p = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall, after = time.time() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode:
        sys.exit(f"error: {name} failed (exit {p.returncode}); its log is in {out}")
    timing = {"wall_s": wall, "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
              "load_start": load0, "load_end": os.getloadavg()[0], "args": args, "date": time.strftime("%Y-%m-%d")}
    (out / "compare.json").write_text(json.dumps(timing, indent=2) + "\n")
    print(f"   {wall:.0f} s wall, {timing['cpu_s']:.0f} s CPU, load {load0:.1f} -> {timing['load_end']:.1f}",
          flush=True)
    return timing


def summary(name, folder):
    """One row of the table."""
    train, evals = read_metrics(folder)
    timing = json.loads((Path(folder) / "compare.json").read_text())
    last = train[-10:]  # the last 10 steps: the per-step means of 256 rollouts are noisy
    return {"name": name, "options": " ".join(timing["args"]) or "(the demo's defaults)",
            "acc": {e["step"]: e["eval_accuracy"] for e in evals},
            "to_0.9": next((e["step"] for e in evals if e["eval_accuracy"] >= 0.9), None),
            "length": sum(r["response_length"] for r in last) / len(last),
            "entropy": sum(r["entropy"] for r in last if "entropy" in r) / max(1, sum("entropy" in r for r in last)),
            "wall_s": timing["wall_s"], "cpu_s": timing["cpu_s"],
            "step_s": sum(r["rollout_s"] + r["train_s"] for r in train) / len(train),
            "load": (timing["load_start"], timing["load_end"])}


def table(rows, at=(0, 10, 20, 30, 40)):
    """Held-out pass@1 at the steps `at` and at the end; length and entropy as the last 10 steps' means."""
    end = max(max(r["acc"]) for r in rows)
    steps = [s for s in at if s < end] + [end]
    cols = ["run", "options", *[f"pass@1 step {s}" for s in steps], "first step >= 0.9", "length (tokens)",
            "entropy (nats/token)", "wall", "CPU (user + sys)", "mean step (rollout + update)", "load avg start -> end"]
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for r in rows:
        acc = [f"{r['acc'][s]:.3f}" if s in r["acc"] else "" for s in steps]
        cells = [r["name"], f"`{r['options']}`", *acc, str(r["to_0.9"]) if r["to_0.9"] is not None else "never",
                 f"{r['length']:.1f}", f"{r['entropy']:.4f}", f"{r['wall_s'] / 60:.1f} min", f"{r['cpu_s'] / 60:.1f} min",
                 f"{r['step_s']:.2f} s", f"{r['load'][0]:.1f} -> {r['load'][1]:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def smooth(xs, k=5):
    """The mean of the last k values at each point: the per-step metrics of 256 rollouts are noisy."""
    return [sum(xs[max(0, i - k + 1):i + 1]) / len(xs[max(0, i - k + 1):i + 1]) for i in range(len(xs))]


def plot(names, out, png):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: the figure needs matplotlib: pip install matplotlib")
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    for name in names:
        train, evals = read_metrics(Path(out) / name)
        clock, t = {0: 0.0}, 0.0  # training time at the end of each step (evaluation not counted)
        for r in train:
            t += r["rollout_s"] + r["train_s"]
            clock[r["step"]] = t
        steps = [r["step"] for r in train]
        axes[0, 0].plot([e["step"] for e in evals], [e["eval_accuracy"] for e in evals], "o-", ms=3, label=name)
        load = json.loads((Path(out) / name / "compare.json").read_text())  # the other jobs' share of the CPU
        axes[0, 1].plot([clock[e["step"]] / 60 for e in evals], [e["eval_accuracy"] for e in evals], "o-", ms=3,
                        label=f"{name} (load {load['load_start']:.0f} -> {load['load_end']:.0f})")
        axes[0, 2].plot(steps, smooth([r["reward"] for r in train]), lw=1, label=name)
        axes[1, 0].plot(steps, smooth([r["response_length"] for r in train]), lw=1, label=name)
        ent = [r for r in train if "entropy" in r]  # (not logged in PPO's critic warm-up steps)
        axes[1, 1].plot([r["step"] for r in ent], smooth([r["entropy"] for r in ent]), lw=1, label=name)
        if any("explained_variance" in r for r in train):
            axes[1, 2].plot(steps, [r["explained_variance"] for r in train], lw=1, label=name)
    titles = [("held-out greedy pass@1 (200 problems)", "step"),
              ("held-out greedy pass@1 against time: grows with the machine's load", "training time, min (rollout + update)"),
              ("mean reward of the rollouts (5-step mean)", "step"), ("completion length, tokens (5-step mean)", "step"),
              ("entropy, nats / token (5-step mean)", "step"), ("critic: explained variance (ppo)", "step")]
    for ax, (title, xlabel) in zip(axes.flat, titles):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle("the CPU demo (tiny base, arithmetic), one run per algorithm, same seed and steps", fontsize=10)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    print(f"wrote {png}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                 allow_abbrev=False)
    ap.add_argument("--out", default="out/compare", help="folder of the runs (one subfolder each)")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="--threads of every run (0: the demo's default)")
    ap.add_argument("--only", default="", help="comma-separated names of RUNS (default: all)")
    ap.add_argument("--png", default=str(ROOT / "docs" / "compare.png"))
    ap.add_argument("--plot_only", action="store_true", help="no runs: the figure and table from finished ones")
    a, shared = ap.parse_known_args()  # the rest goes to every run: --model DIR --task NAME ...
    names = a.only.split(",") if a.only else list(RUNS)
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        sys.exit(f"error: --only {unknown[0]!r} is not a run (choose from {', '.join(RUNS)})")
    t0 = time.time()
    for name in names:
        if a.plot_only or finished(Path(a.out) / name, a.steps):
            continue
        if (Path(a.out) / name).exists():
            sys.exit(f"error: {Path(a.out) / name} holds an unfinished or other run: delete it to rerun")
        run_one(name, shared + RUNS[name], a)
    done = [n for n in names if finished(Path(a.out) / n, a.steps)]
    if not done:
        sys.exit(f"error: no finished run of {a.steps} steps in {a.out}")
    if not a.plot_only:
        print(f"all runs: {(time.time() - t0) / 60:.1f} min wall (runs already finished not counted)")
    print(table([summary(n, Path(a.out) / n) for n in done]), flush=True)
    plot(done, a.out, a.png)  # last: without matplotlib the runs and the table are still there


if __name__ == "__main__":
    main()
