"""Turn a run's metrics.jsonl into one PNG: reward, accuracy, completion length and entropy vs step, and, when the
run logged them (nanor1/reflection.py), the reflection metrics: how often completions check themselves, and
the accuracy of those that do and those that do not.

    python scripts/plot.py out/run-20261125-130000            writes out/run-.../metrics.png
    python scripts/plot.py out/run-.../metrics.jsonl --out curve.png

matplotlib is needed by this script alone (pip install matplotlib); nanor1 itself does not use it.
"""
import argparse
import json
import sys
from pathlib import Path


def load(path):
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        sys.exit(f"error: no metrics file at {path}")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            sys.exit(f"error: {path}:{i}: not JSON ({e})")
    return path, rows


def choose_panels(train):
    """(title, [(key, legend label)]) per panel: the four every run logs, plus two for runs that logged the
    reflection metrics (older metrics.jsonl files have none and get the four)."""
    panels = [("mean reward (rollouts)", [("reward", None)]), ("accuracy", [("accuracy", "train rollouts (sampled)")]),
              ("completion length (tokens)", [("response_length", None)]),
              ("entropy (nats / token)", [("entropy", None)])]
    if any("reflection_rate" in r for r in train):
        panels += [("self-checking (markers: nanor1/reflection.py)",
                    [("reflection_rate", "reflection_rate: share of completions"),
                     ("superficial_reflection_rate", "superficial: share of those that end wrong")]),
                   ("accuracy by reflection", [("accuracy_reflect", "reflecting completions"),
                                               ("accuracy_no_reflect", "the others")])]
    return panels


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="run folder or metrics.jsonl")
    ap.add_argument("--out", default=None, help="PNG path (default: metrics.png beside the metrics)")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: this script needs matplotlib: pip install matplotlib")
    path, rows = load(args.run)
    train = [r for r in rows if "reward" in r]
    evals = [r for r in rows if "eval_accuracy" in r]
    panels = choose_panels(train)
    fig, axes = plt.subplots(len(panels) // 2, 2, figsize=(10, 3.25 * len(panels) // 2), sharex=True)
    for ax, (title, lines) in zip(axes.flat, panels):
        for key, label in lines:
            pts = [(r["step"], r[key]) for r in train if r.get(key) is not None]  # None: an empty subset that step
            ax.plot([s for s, _ in pts], [v for _, v in pts], lw=1.2, label=label)
        if lines[0][0] == "accuracy" and evals:
            ax.plot([r["step"] for r in evals], [r["eval_accuracy"] for r in evals], "o-", lw=1.5,
                    label="held-out greedy pass@1")
        if any(label for _, label in lines):
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("step")
    fig.suptitle(str(path.parent), fontsize=9)
    fig.tight_layout()
    out = Path(args.out) if args.out else path.with_name("metrics.png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
