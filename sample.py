"""Sample from a model, or evaluate it on a task.

    python sample.py                                   the tiny base (or the newest demo checkpoint) talks
    python sample.py --model DIR --prompt "1+1=" --max_new_tokens 32 --temperature 0.7
    python sample.py --model DIR --chat --prompt "What is 2+3?"      ChatML, through the tokenizer
    python sample.py --model DIR --task math500 --eval --num_samples 8 --temperature 0.6 --limit 100
    python sample.py --model DIR --task arithmetic --num_samples 4 --save traces.jsonl --only_correct
    python sample.py --help                            every option with its one-line help

--eval prints pass@1 (greedy, or the mean over samples) and the unbiased pass@k for k up to --num_samples, and
writes one JSON line per problem (completions, rewards) to --out.

--save samples --num_samples completions per problem of --split (default: the train split) at --temperature
(default 1), scores them with the task's reward and writes one JSON line per completion, an SFT row for
`train.py --algo sft --data FILE` (nanor1/sft.py): {"prompt", "completion", "reward", "id" (the task's row id)}.
With --only_correct only the correct ones are kept: the rejection sampling that builds R1's distillation data.
"""
import json
import sys
import time
from pathlib import Path

import torch

from nanor1 import distributed
from nanor1.checkpoint import list_checkpoints, verify_checkpoint
from nanor1.config import SampleConfig, parse_args
from nanor1.evaluate import evaluate
from nanor1.model import load_model_and_tokenizer
from nanor1.precision import choose as choose_precision
from nanor1.rollout import Stop, check_memory, generate
from nanor1.tasks import get_task
from nanor1.verifier import Verifier

TINY = "data/tiny"


def default_model():
    """The newest intact checkpoint of any run under out/ (a damaged one is skipped, with a warning), else the
    shipped tiny base."""
    ckpts = [c for run in Path("out").glob("*") if run.is_dir() for c in list_checkpoints(run)]
    for ck in sorted(ckpts, key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            verify_checkpoint(ck, ["config.json", "model.safetensors", "adapter_config.json",
                                   "adapter_model.safetensors"])  # those of the four it holds
            return str(ck)
        except (ValueError, FileNotFoundError) as e:
            print(f"warning: skipping {ck}: {e}", file=sys.stderr)
    return TINY


def main(argv=None):
    cfg = parse_args(argv, SampleConfig)
    try:
        device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError:
        raise ValueError(f"--device {cfg.device!r} is not a device (cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {cfg.device}: no CUDA device here")
    prec = choose_precision(device, cfg.precision)
    path = cfg.model or default_model()
    # Inference needs no fp32 master weights: load them in the compute dtype.
    model, tok = load_model_and_tokenizer(path, prec.compute, device)
    task = get_task(cfg.task, cfg.template or None, grader=cfg.grader)
    budget = cfg.max_new_tokens or task.completion_len
    if cfg.eval:
        return run_eval(cfg, path, model, tok, task, prec, budget)
    if cfg.save:
        return save_traces(cfg, path, model, tok, task, prec, budget)
    temperature = 1.0 if cfg.temperature < 0 else cfg.temperature
    text = cfg.prompt
    if not text:  # show the model on a problem of its task
        text = task.prompt(task.eval_rows()[0], tok)
    elif cfg.chat:
        text = tok.apply_chat_template([{"role": "user", "content": text}])
    check_memory(model.config, cfg.num_samples, len(tok.encode(text)) + budget, prec.compute, device)
    print(f"# {path}  T={temperature} top_k={cfg.top_k} top_p={cfg.top_p}\n{text}", end="", flush=True)
    kw = dict(temperature=temperature, top_k=cfg.top_k, top_p=cfg.top_p, seed=cfg.seed,
              stop=Stop(eos=tok.eos_token_ids))
    with prec.autocast():
        if cfg.num_samples == 1:  # stream: print each new piece of decoded text as tokens arrive
            generate(model, [tok.encode(text)], budget, stream=Streamer(tok), **kw)
            print()
            return
        out = generate(model, [tok.encode(text)], budget, n=cfg.num_samples, **kw)
    for i, c in enumerate(out.tokens):
        print(f"\n--- sample {i}\n{tok.decode(c)}")


class Streamer:
    """Prints the decoded text as tokens arrive, holding back a multi-byte character until it is whole."""

    def __init__(self, tok):
        self.tok, self.ids, self.shown = tok, [], ""

    def __call__(self, _seq, token):
        self.ids.append(token)
        now = self.tok.decode(self.ids)
        if not now.endswith("\ufffd"):
            print(now[len(self.shown):], end="", flush=True)
            self.shown = now


def new_file(flag, name):
    """The JSON-lines file `flag` names, checked before any sampling: a folder or an existing file is an error
    (nothing already written is lost)."""
    out = Path(name)
    if out.is_dir():
        raise ValueError(f"{flag} {out} is a folder: sample.py writes one JSON-lines file")
    if out.exists():
        raise ValueError(f"{flag} {out} exists: give a new file name (or delete it)")
    return out


def write_jsonl(out, rows):
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def sample_rows(cfg, model, tok, task, prec, budget, rows, temperature):
    """--num_samples completions of each row, rewarded by the task in its verifier worker: (summary, records)."""
    with Verifier(task) as verifier:
        return evaluate(model, tok, task, rows, verifier, prec, budget, num_samples=cfg.num_samples,
                        temperature=temperature, top_p=cfg.top_p, top_k=cfg.top_k, batch_size=cfg.batch_size,
                        seed=cfg.seed)


def run_eval(cfg, path, model, tok, task, prec, budget):
    rows = list(task.eval_rows(cfg.split or None))
    rows = rows[:cfg.limit] if cfg.limit else rows
    temperature = 0.0 if cfg.temperature < 0 else cfg.temperature
    out = new_file("--out", cfg.out or time.strftime(f"out/eval-{task.name}-%Y%m%d-%H%M%S.jsonl"))
    t0 = time.time()
    summary, records = sample_rows(cfg, model, tok, task, prec, budget, rows, temperature)
    write_jsonl(out, records)
    ks = " ".join(f"{k}={v:.4f}" for k, v in summary.items() if k.startswith("pass@"))
    print(f"{task.name} ({cfg.split or task.eval_splits[0]}): {summary['problems']} problems x "
          f"{summary['samples_per_problem']} samples, T={temperature}, {budget} new tokens | {ks} | "
          f"{time.time() - t0:.1f}s | model {path} | per-problem: {out}")
    return summary


def save_traces(cfg, path, model, tok, task, prec, budget):
    """--save: sampled completions of the split's problems as SFT rows (the module docstring)."""
    split = cfg.split or "train"
    rows = task.train_rows() if split == "train" else task.eval_rows(split)
    rows = rows[:cfg.limit] if cfg.limit else rows
    temperature = 1.0 if cfg.temperature < 0 else cfg.temperature
    out = new_file("--save", cfg.save)
    t0 = time.time()
    summary, records = sample_rows(cfg, model, tok, task, prec, budget, rows, temperature)
    traces = [{"prompt": task.prompt(row, tok), "completion": c, "reward": x, "id": row["id"]}
              for r in records for row in [rows[r["index"]]] for c, x in zip(r["completions"], r["rewards"])]
    kept = [t for t in traces if task.is_correct(t["reward"]) or not cfg.only_correct]
    write_jsonl(out, kept)
    print(f"{task.name} ({split}): {summary['problems']} problems x {summary['samples_per_problem']} samples, "
          f"T={temperature} | {sum(task.is_correct(t['reward']) for t in traces)} of {len(traces)} correct | wrote "
          f"{len(kept)}{' correct' if cfg.only_correct else ''} to {out} | {time.time() - t0:.1f}s | model {path}")
    return kept


if __name__ == "__main__":
    distributed.run_main(main)  # bad input: one `error:` line, exit 2 (see there)
