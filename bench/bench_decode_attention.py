"""Decode attention: the Triton kernel vs torch SDPA, achieved GB/s at the rollout's shape.

    python bench/bench_decode_attention.py            # on a GPU: the table below
    python bench/bench_decode_attention.py --cpu      # the torch reference (the engine's CPU path) on the CPU

Shape (Qwen2.5-0.5B): B=64, H=14 query heads, K=2 kv heads, D=64, bf16 cache, every row at the full context
(SDPA has no per-row lengths; the ragged row of the table gives the kernel random lengths in [1, S]).
Bytes are what must move: the K and V of each row's valid positions, plus q and the output. The copy
bandwidth (a device-to-device copy of 1 GiB, read + write) is measured in the same run as the ceiling.
"""
import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.common import add_common_args, dispatch  # noqa: E402
from kernels.decode_attention import decode_attention, decode_attention_ref  # noqa: E402


def cuda_ms(fn, iters=50):
    """Median GPU time of fn in ms (triton's do_bench flushes the L2 between runs: cold-cache bytes)."""
    from triton.testing import do_bench
    return do_bench(fn, warmup=10, rep=iters, return_mode="median")


def copy_bandwidth():
    x = torch.empty(2 ** 30 // 2, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    ms = cuda_ms(lambda: y.copy_(x))
    return 2 * x.numel() * 2 / ms / 1e6  # GB/s, read + write


def gpu(args):
    B, H, K, D = args.batch, 14, 2, 64
    dt = torch.bfloat16
    peak = copy_bandwidth()
    print(f"device: {torch.cuda.get_device_name()}, copy bandwidth {peak:.0f} GB/s; B={B} H={H} K={K} D={D} bf16")
    print(f"{'context':>8} {'lengths':>8} {'impl':>16} {'splits':>6} {'ms':>8} {'GB/s':>7} {'% copy':>7}")
    for S in args.contexts:
        q = torch.randn(B, H, D, device="cuda", dtype=dt)
        k = torch.randn(B, K, S, D, device="cuda", dtype=dt)
        v = torch.randn(B, K, S, D, device="cuda", dtype=dt)
        for ragged in (False, True):
            lengths = (torch.randint(1, S + 1, (B,), device="cuda") if ragged
                       else torch.full((B,), S, device="cuda"))
            nbytes = 2 * K * int(lengths.sum()) * D * 2 + 2 * B * H * D * 2
            ref = decode_attention_ref(q.float(), k.float(), v.float(), lengths)
            rows = []
            for splits in [None] + args.splits:
                out = decode_attention(q, k, v, lengths, impl="triton", num_splits=splits)
                err = (out.float() - ref).abs().max().item()
                assert err < 2e-2, f"Triton output off by {err}"
                ms = cuda_ms(lambda: decode_attention(q, k, v, lengths, impl="triton", num_splits=splits))
                rows.append(("triton", splits or "auto", ms))
            if not ragged:  # SDPA attends to all S positions of every row
                qs = q[:, :, None]  # (B, H, 1, D)
                ms = cuda_ms(lambda: F.scaled_dot_product_attention(qs, k, v, enable_gqa=True))
                rows.append(("torch sdpa", "-", ms))
            for impl, splits, ms in rows:
                gbs = nbytes / ms / 1e6
                print(f"{S:>8} {'ragged' if ragged else 'full':>8} {impl:>16} {str(splits):>6} {ms:>8.4f} "
                      f"{gbs:>7.0f} {100 * gbs / peak:>6.1f}%")


def cpu(args):
    torch.set_num_threads(args.threads)
    B, H, K, D = args.batch, 14, 2, 64
    print(f"torch reference on the CPU ({args.threads} threads), fp32 cache, B={B} H={H} K={K} D={D}")
    print(f"{'context':>8} {'lengths':>8} {'ms':>8} {'GB/s':>7}")
    for S in args.contexts:
        q, k, v = torch.randn(B, H, D), torch.randn(B, K, S, D), torch.randn(B, K, S, D)
        for ragged in (False, True):
            lengths = torch.randint(1, S + 1, (B,)) if ragged else torch.full((B,), S)
            decode_attention_ref(q, k, v, lengths)
            t0 = time.perf_counter()
            for _ in range(args.iters):
                decode_attention_ref(q, k, v, lengths)
            ms = (time.perf_counter() - t0) / args.iters * 1e3
            gbs = 2 * K * int(lengths.sum()) * D * 4 / ms / 1e6
            print(f"{S:>8} {'ragged' if ragged else 'full':>8} {ms:>8.2f} {gbs:>7.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--contexts", type=int, nargs="+", default=[512, 1024, 4096])
    p.add_argument("--splits", type=int, nargs="*", default=[1, 2, 4, 8], help="extra split counts to sweep")
    add_common_args(p, iters=5)
    dispatch(p.parse_args(), cpu, gpu)
