"""Sampling: the Triton kernel vs the usual torch ways, at the rollout's shape.

    python bench/bench_sampling.py                    # on a GPU: the table below
    python bench/bench_sampling.py --cpu              # the torch reference (the engine's CPU path) on the CPU

B=64 rows of V=151936 logits (Qwen2.5's vocabulary). "GB/s" is B * V * bytes / time: one read of the logits
per sample; the floor is about 13 us for fp32 (6.5 us bf16) at ~3 TB/s. Torch baselines: multinomial over
softmax (plain), topk + multinomial (top-k), and the sort-based nucleus (sort, cumsum, mask, multinomial),
each as a generation loop would call them. Logit rows are "peaked" (N(0, 2) plus 20 tokens at +12, a
nucleus of a few tokens) or "flat" (N(0, 2.5): a nucleus of thousands).
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import add_common_args, dispatch  # noqa: E402
from kernels.sampling import sample, sample_ref, sample_triton  # noqa: E402


def make_logits(B, V, kind, device, dtype):
    x = torch.randn(B, V, device=device) * (2.5 if kind == "flat" else 2.0)
    if kind == "peaked":
        x[:, torch.randperm(V, device=device)[:20]] += 12.0
    return x.to(dtype)


def torch_multinomial(x, T, top_k, top_p):
    z = x.float() / T
    if top_k:
        vals, idx = torch.topk(z, top_k)
        return idx.gather(1, torch.multinomial(torch.softmax(vals, -1), 1))[:, 0]
    if top_p < 1:  # the sort-based nucleus, as in HF's TopPLogitsWarper
        vals, idx = torch.sort(z, descending=True)
        p = torch.softmax(vals, -1)
        drop = p.cumsum(-1) - p > top_p  # mass strictly ahead of the token already reaches top_p
        p = p.masked_fill(drop, 0.0)
        return idx.gather(1, torch.multinomial(p, 1))[:, 0]
    return torch.multinomial(torch.softmax(z, -1), 1)[:, 0]


def gpu(args):
    from triton.testing import do_bench
    B, V = args.batch, args.vocab
    print(f"device: {torch.cuda.get_device_name()}; B={B} V={V}; times are medians (do_bench, L2 flushed)")
    print(f"{'logits':>7} {'dtype':>5} {'mode':>14} {'impl':>22} {'us':>8} {'GB/s':>7}")
    modes = [("greedy", 0.0, 0, 1.0), ("plain", 1.0, 0, 1.0), ("top-k 50", 1.0, 50, 1.0),
             ("top-p 0.9", 1.0, 0, 0.9), ("top-k50 top-p.9", 1.0, 50, 0.9)]
    for kind in args.logits:
        for dtype in (torch.bfloat16, torch.float32):
            x = make_logits(B, V, kind, "cuda", dtype)
            nbytes = x.numel() * x.element_size()
            for name, T, k, p in modes:
                same = (sample(x, T, k, p, impl="triton") == sample_ref(x, T, k, p)).float().mean().item()
                rows = [(f"triton (={100 * same:.0f}% torch)", lambda: sample(x, T, k, p, impl="triton"))]
                if name != "plain" and name != "greedy":
                    for piv in args.pivots:
                        rows.append((f"triton pivots={piv}", lambda piv=piv: sample_triton(x, T, k, p, pivots=piv)))
                elif name == "plain":
                    for s in args.splits:
                        rows.append((f"triton splits={s}", lambda s=s: sample_triton(x, T, k, p, splits=s)))
                if name == "greedy":
                    rows.append(("torch argmax", lambda: x.argmax(-1)))
                else:
                    rows.append(("torch multinomial", lambda: torch_multinomial(x, T, k, p)))
                for impl, fn in rows:
                    us = do_bench(fn, warmup=10, rep=50, return_mode="median") * 1e3
                    print(f"{kind:>7} {str(dtype)[6:]:>5} {name:>14} {impl:>22} {us:>8.1f} {nbytes / us / 1e3:>7.0f}")


def cpu(args):
    torch.set_num_threads(args.threads)
    B, V = args.batch, args.vocab
    print(f"torch reference on the CPU ({args.threads} threads), fp32 logits, B={B} V={V}")
    print(f"{'logits':>7} {'mode':>16} {'ref ms':>8} {'torch ms':>9}  (torch: argmax / multinomial as on the GPU)")
    for kind in args.logits:
        x = make_logits(B, V, kind, "cpu", torch.float32)
        for name, T, k, p in [("greedy", 0.0, 0, 1.0), ("plain", 1.0, 0, 1.0), ("top-k 50", 1.0, 50, 1.0),
                              ("top-p 0.9", 1.0, 0, 0.9), ("top-k50 top-p.9", 1.0, 50, 0.9)]:
            times = []
            base = (lambda: x.argmax(-1)) if T == 0 else (lambda: torch_multinomial(x, T, k, p))
            for fn in (lambda: sample_ref(x, T, k, p), base):
                fn()
                t0 = time.perf_counter()
                for _ in range(args.iters):
                    fn()
                times.append((time.perf_counter() - t0) / args.iters * 1e3)
            print(f"{kind:>7} {name:>16} {times[0]:>8.1f} {times[1]:>9.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--logits", nargs="+", default=["peaked", "flat"], choices=["peaked", "flat"])
    ap.add_argument("--pivots", type=int, nargs="*", default=[4, 16], help="extra pivot counts (powers of 2)")
    ap.add_argument("--splits", type=int, nargs="*", default=[1, 4], help="extra vocabulary splits, plain mode")
    add_common_args(ap, iters=3)
    dispatch(ap.parse_args(), cpu, gpu)
