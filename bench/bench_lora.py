"""LoRA rollouts: the live low-rank path vs a merged copy of the weights, for speed and for the sampler-trainer
log-prob mismatch (nanor1/lora.py explains the choice these numbers made).

    python bench/bench_lora.py [--shapes tiny 0.5B] [--batch 16] [--new 32] [--rank 16] [--threads 2]

Table 1, rollout tokens/s (per CPU-second on the CPU, see `clock`): generate() with `--batch` sequences, `--new` tokens each (no EOS), on
- tiny: the shipped data/tiny (0.83M parameters), fp32, the CPU demo's model;
- 0.5B: random weights in the Qwen2.5-0.5B shape, fp32 on the CPU (bf16 on CUDA with --device cuda),
for the base model, LoRA live (two extra small matmuls per adapted layer per token) and LoRA merged (one matmul
with a merged copy W + s B A; the merge itself is timed apart and once per rollout phase).

Table 2, mean |log p_sampler - log p_trainer| over the sampled tokens (train.py's `logprob_mismatch`): the
sampler's log-probs from generate() (KV cache), the trainer's from forward(targets=...) with adapters live,
on data/tiny in fp32 and bf16. The adapters are set so that rms(s B A) = rho x rms(W) in every adapted layer:
rho ~1e-3 is a LoRA run's first steps, ~1e-1 a long one.
"""
import argparse
import os
import sys
import time
from contextlib import nullcontext

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.bench_rollout import QWEN25_05B  # noqa: E402
from nanor1 import lora  # noqa: E402
from nanor1.model import ModelConfig, Transformer  # noqa: E402
from nanor1.rollout import generate  # noqa: E402

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "tiny")


def load(shape, dtype, device):
    if shape == "tiny":
        return Transformer.from_pretrained(TINY, dtype=dtype, device=device)
    torch.manual_seed(0)
    with torch.device(device):
        model = Transformer(ModelConfig(**QWEN25_05B)).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model


def set_update(model, rho, seed=0):
    """Random adapters with rms(s B A) = rho * rms(W) in every LoRA layer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in lora.lora_layers(model):
            B = torch.randn(m.lora_B.weight.shape, generator=g).to(m.lora_B.weight)
            delta = m.scaling * B @ m.lora_A.weight
            m.lora_B.weight.copy_(B * rho * m.weight.float().pow(2).mean().sqrt() / delta.pow(2).mean().sqrt())


def prompts(n, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (8,), generator=g).tolist() for _ in range(n)]


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def clock(device):
    """On the CPU, this process's CPU time: on a shared machine wall time mostly measures the other jobs (it
    varied 10x between runs here, CPU time far less). On CUDA, wall time."""
    return time.perf_counter() if device == "cuda" else time.process_time()


def rollout_tps(model, ps, new, device, reps):
    """Completion tokens per second of generate() for base, LoRA live and LoRA merged: the three interleaved,
    `reps` rounds after a warm-up, best of each. Also returns the time of one merge."""
    modes = {"base": lambda: lora.adapters_disabled(model), "live": nullcontext, "merged": lambda: lora.merged(model)}
    best, merge_s = {k: float("inf") for k in modes}, float("inf")
    for i in range(reps + 1):
        for mode, ctx in modes.items():
            sync(device)
            t0 = clock(device)
            with ctx():
                sync(device)
                t1 = clock(device)
                out = generate(model, ps, new, temperature=1.0, seed=i)
                sync(device)
            if i:
                best[mode] = min(best[mode], clock(device) - t1)
                if mode == "merged":
                    merge_s = min(merge_s, t1 - t0)
    tokens = sum(len(o) for o in out.tokens)
    return {k: tokens / v for k, v in best.items()}, merge_s


def speed_table(args):
    per = "CPU-second (process time)" if args.device == "cpu" else "second"
    print(f"# rollout tokens per {per}, {args.batch} sequences x {args.new} new tokens, LoRA rank {args.rank} on "
          f"q,k,v,o,gate,up,down, {args.device}, {args.threads} thread(s), best of {args.reps} interleaved rounds")
    print("| model | dtype | base | LoRA live | LoRA merged | merge (once per rollout phase) |")
    print("|---|---|---|---|---|---|")
    for shape in args.shapes:
        dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
        model = load(shape, dtype, args.device).eval()
        ps = prompts(args.batch, model.config.vocab_size)
        torch.manual_seed(0)
        lora.apply_lora(model, args.rank)
        set_update(model, 1e-2)
        tps, merge_s = rollout_tps(model, ps, args.new, args.device, args.reps)
        base = tps["base"]
        print(f"| {shape} | {str(dtype)[6:]} | {base:,.0f} | {tps['live']:,.0f} ({tps['live'] / base - 1:+.0%}) | "
              f"{tps['merged']:,.0f} ({tps['merged'] / base - 1:+.0%}) | {merge_s * 1e3:.0f} ms |", flush=True)


def mismatch(model, ps, new, mode):
    """Mean |sampler - trainer| log-prob over the sampled tokens. mode: base (adapters off in both), live
    (adapters live in both), merged (the sampler on the merged copy, the trainer live)."""
    off = lora.adapters_disabled(model) if mode == "base" else nullcontext()
    with (lora.merged(model) if mode == "merged" else nullcontext()), off:
        res = generate(model, ps, new, temperature=1.0, seed=1)
    diffs = []
    with torch.no_grad(), (lora.adapters_disabled(model) if mode == "base" else nullcontext()):
        for p, c, lp in zip(ps, res.tokens, res.logprobs):
            ids = torch.tensor([p + c])
            logp, _ = model(ids[:, :-1], targets=ids[:, 1:])  # (1, T)
            diffs.append((logp[0, len(p) - 1:] - torch.tensor(lp)).abs())
    return torch.cat(diffs).mean().item()


def mismatch_table(args):
    print(f"\n# mean |log p_sampler - log p_trainer|, data/tiny, {args.batch} x {args.new} tokens, CPU; trainer: "
          f"adapters live")
    print("| dtype | rho = rms(sBA) / rms(W) | base (adapters off in both) | sampler LoRA live | sampler LoRA merged |")
    print("|---|---|---|---|---|")
    for dtype in (torch.float32, torch.bfloat16):
        for rho in (1e-3, 1e-2, 1e-1):
            model = load("tiny", dtype, "cpu").eval()
            torch.manual_seed(0)
            lora.apply_lora(model, args.rank)
            set_update(model, rho)
            ps = prompts(args.batch, 300)
            row = [mismatch(model, ps, args.new, m) for m in ("base", "live", "merged")]
            print(f"| {str(dtype)[6:]} | {rho:g} | " + " | ".join(f"{x:.2e}" for x in row) + " |", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", nargs="+", default=["tiny", "0.5B"], choices=["tiny", "0.5B"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3, help="timed rounds (each runs base, live, merged once)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--skip_mismatch", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    speed_table(args)
    if not args.skip_mismatch:
        mismatch_table(args)


if __name__ == "__main__":
    main()
