"""The reflection demo's figure: held-out accuracy, completion length and reflection_rate against step (one line
per run, e.g. one per seed), and greedy completions of the base and of the trained model on held-out problems.

    python scripts/plot_reflection.py out/run-A out/run-B --out docs/reflection.png
    python scripts/plot_reflection.py out/run-A --before data/tiny_recheck --after out/run-A/ckpt-150

--after defaults to the first run's newest checkpoint. The completions are greedy (temperature 0), on the first
--problems problems of the task's held-out split, so the text panel is the same each time it is drawn.
matplotlib is needed by this script alone (pip install matplotlib); nanor1 itself does not use it.
"""
import argparse
import json
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere


def load_rows(run):
    """(training rows, eval rows) of a run folder's metrics.jsonl."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        sys.exit(f"error: no metrics file at {path}")
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [r for r in rows if "reward" in r], [r for r in rows if "eval_accuracy" in r]


def greedy_completions(model_path, task_name, n, max_new_tokens):
    """(prompt, completion, correct) for the first n held-out problems, greedy."""
    import torch
    from nanor1.model import load_model_and_tokenizer
    from nanor1.rollout import Stop, generate
    from nanor1.tasks import get_task
    model, tok = load_model_and_tokenizer(str(model_path), torch.float32, torch.device("cpu"))
    task = get_task(task_name)
    rows = task.eval_rows()[:n]
    prompts = [task.prompt(r, tok) for r in rows]
    out = generate(model, [tok.encode(p) for p in prompts], max_new_tokens, temperature=0,
                   stop=Stop(eos=tok.eos_token_ids, strings=task.stop, decode=tok.decode))
    texts = tok.decode_batch(out.tokens)
    return [(p, t, task.is_correct(task.reward(t, r))) for p, t, r in zip(prompts, texts, rows)]


def newest_checkpoint(run):
    ckpts = sorted(Path(run).glob("ckpt-*"), key=lambda p: int(p.name.split("-")[1]))
    if not ckpts:
        sys.exit(f"error: {run} holds no ckpt-* folder; name one with --after")
    return ckpts[-1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders (metrics.jsonl each)")
    ap.add_argument("--before", default="data/tiny_recheck", help="the base model")
    ap.add_argument("--after", default=None, help="the trained model (default: the first run's newest ckpt)")
    ap.add_argument("--task", default="recheck")
    ap.add_argument("--problems", type=int, default=2, help="held-out problems shown before / after")
    ap.add_argument("--max_new_tokens", type=int, default=72)
    ap.add_argument("--labels", default="", help="comma-separated legend labels, one per run (default: folder names)")
    ap.add_argument("--out", default="docs/reflection.png")
    args = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        sys.exit("error: this script needs matplotlib: pip install matplotlib")
    labels = args.labels.split(",") if args.labels else [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        sys.exit(f"error: --labels names {len(labels)} runs, but {len(args.runs)} were given")
    runs = [(label, *load_rows(r)) for label, r in zip(labels, args.runs)]
    after = Path(args.after) if args.after else newest_checkpoint(args.runs[0])
    before_c = greedy_completions(args.before, args.task, args.problems, args.max_new_tokens)
    after_c = greedy_completions(after, args.task, args.problems, args.max_new_tokens)

    fig = plt.figure(figsize=(12, 6))
    grid = fig.add_gridspec(2, 3, height_ratios=[1, 0.5])
    panels = [("held-out greedy pass@1", None), ("mean completion length (tokens)", "response_length"),
              ("reflection_rate (share of rollouts with a marker)", "reflection_rate")]
    for j, (title, key) in enumerate(panels):
        ax = fig.add_subplot(grid[0, j])
        for name, train, evals in runs:
            if key is None:
                ax.plot([r["step"] for r in evals], [r["eval_accuracy"] for r in evals], "o-", lw=1.4, ms=3,
                        label=name)
            else:
                ax.plot([r["step"] for r in train], [r[key] for r in train], lw=1.1, label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if j == 0 and len(runs) > 1:
            ax.legend(fontsize=7)
    text = fig.add_subplot(grid[1, :])
    text.axis("off")
    lines = []
    for label, comps in ((f"before ({args.before}), greedy:", before_c), (f"after ({after.parent.name}/{after.name}), greedy:", after_c)):
        lines.append(label)
        for prompt, completion, ok in comps:
            body = prompt.split("?")[0].removeprefix("User: ") + "?  <think>" + completion  # question, then the model
            mark = "right" if ok else "wrong"
            lines += textwrap.wrap(f"[{mark}] {body}", 150, subsequent_indent="        ")
        lines.append("")
    text.text(0.0, 1.0, "\n".join(lines), va="top", family="monospace", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
