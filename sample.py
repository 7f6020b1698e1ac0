"""Sample from a model, or evaluate it on a task.

    python sample.py                                   the tiny base (or the newest demo checkpoint) talks
    python sample.py --model DIR --prompt "1+1=" --max_new_tokens 32 --temperature 0.7
    python sample.py --model DIR --chat --prompt "What is 2+3?"      ChatML, through the tokenizer
    python sample.py --model DIR --task math500 --eval --num_samples 8 --temperature 0.6 --limit 100

--eval prints pass@1 (greedy, or the mean over samples) and the unbiased pass@k for k up to
--num_samples, and writes one JSON line per problem (completions, rewards) to --out.
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from nanor1.checkpoint import list_checkpoints
from nanor1.evaluate import evaluate
from nanor1.model import Transformer
from nanor1.rollout import generate
from nanor1.tasks import get_task
from nanor1.tokenizer import Tokenizer
from nanor1.verifier import Verifier

TINY = "data/tiny"


def default_model():
    """The newest checkpoint of any run under out/, else the shipped tiny base."""
    ckpts = [c for run in Path("out").glob("*") if run.is_dir() for c in list_checkpoints(run)]
    return str(max(ckpts, key=lambda p: p.stat().st_mtime)) if ckpts else TINY


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="HF-layout folder (default: newest out/*/ckpt-*, else data/tiny)")
    ap.add_argument("--prompt", default=None, help="prompt text (default: a held-out problem of --task)")
    ap.add_argument("--chat", action="store_true", help="wrap --prompt in the ChatML template")
    ap.add_argument("--task", default="arithmetic", help="task for --eval and for the default prompt")
    ap.add_argument("--template", default=None, help="the task's prompt template (base / instruct)")
    ap.add_argument("--split", default=None, help="evaluation split of --task (default: its first)")
    ap.add_argument("--eval", action="store_true", help="evaluate on --task instead of sampling one prompt")
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N problems (0 = all)")
    ap.add_argument("--out", default=None, help="per-problem JSON lines of --eval (default: out/eval-*.jsonl)")
    ap.add_argument("--max_new_tokens", type=int, default=None, help="generation budget (default 64; 1024 for --eval on real tasks)")
    ap.add_argument("--temperature", type=float, default=None, help="0 = greedy (default: 1.0, or 0 for --eval)")
    ap.add_argument("--top_k", type=int, default=0, help="0 = off")
    ap.add_argument("--top_p", type=float, default=1.0, help="1 = off")
    ap.add_argument("--num_samples", type=int, default=1, help="completions per prompt / problem")
    ap.add_argument("--batch_size", type=int, default=64, help="problems per generate call in --eval")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    if args.num_samples < 1 or (args.max_new_tokens is not None and args.max_new_tokens < 1):
        raise ValueError("--num_samples and --max_new_tokens must be >= 1")

    path = args.model or default_model()
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    tok = Tokenizer.from_pretrained(path)
    model = Transformer.from_pretrained(path, dtype=dtype, device=args.device).eval()
    tok.check_model(model.config.vocab_size)
    model.vocab_limit = tok.vocab_size  # never sample the embedding's padding rows (nanor1/model.py)
    task = get_task(args.task, args.template)
    if args.eval:
        return run_eval(args, path, model, tok, task)

    temperature = 1.0 if args.temperature is None else args.temperature
    text = args.prompt
    if text is None:  # show the model on a problem of its task
        text = task.prompt(task.eval_rows()[0], tok)
    elif args.chat:
        text = tok.apply_chat_template([{"role": "user", "content": text}])
    print(f"# {path}  T={temperature} top_k={args.top_k} top_p={args.top_p}\n{text}", end="", flush=True)
    ids = tok.encode(text)
    kw = dict(temperature=temperature, top_k=args.top_k, top_p=args.top_p, eos_token_id=sorted(tok.eos_token_ids),
              seed=args.seed)
    if args.num_samples == 1:  # stream: print each new piece of decoded text as tokens arrive
        got, shown = [], ""

        def stream(_, token):
            nonlocal shown
            got.append(token)
            now = tok.decode(got)
            if not now.endswith("\ufffd"):  # wait for the rest of a multi-byte character
                print(now[len(shown):], end="", flush=True)
                shown = now
        generate(model, [ids], args.max_new_tokens or 64, stream=stream, **kw)
        print()
    else:
        for i, c in enumerate(generate(model, [ids], args.max_new_tokens or 64, n=args.num_samples, **kw)):
            print(f"\n--- sample {i}\n{tok.decode(c)}")


def run_eval(args, path, model, tok, task):
    rows = list(task.eval_rows(args.split))
    rows = rows[:args.limit] if args.limit else rows
    temperature = 0.0 if args.temperature is None else args.temperature
    budget = args.max_new_tokens or (64 if args.task == "arithmetic" else 1024)
    t0 = time.time()
    with Verifier(task) as verifier:
        summary, records = evaluate(model, tok, task, rows, verifier, budget, num_samples=args.num_samples,
                                    temperature=temperature, top_p=args.top_p, top_k=args.top_k,
                                    batch_size=args.batch_size, seed=args.seed)
    out = Path(args.out or time.strftime(f"out/eval-{task.name}-%Y%m%d-%H%M%S.jsonl"))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    ks = " ".join(f"{k}={v:.4f}" for k, v in summary.items() if k.startswith("pass@"))
    print(f"{task.name} ({args.split or task.eval_splits[0]}): {summary['problems']} problems x "
          f"{summary['samples_per_problem']} samples, T={temperature}, {budget} new tokens | {ks} | "
          f"{time.time() - t0:.1f}s | model {path} | per-problem: {out}")
    return summary


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, KeyError, NotImplementedError) as e:
        if os.environ.get("NANOR1_TRACEBACK") == "1":  # debugging: the whole traceback instead
            raise
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)  # (str(KeyError) adds quotes)
        sys.exit(2)
