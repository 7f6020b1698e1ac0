"""Benchmark kernels/logprob.py's linear_logprob against the naive log_softmax(h @ W.T).gather.

Forward + backward of sum(g * logp) at bf16, V=151936 and C=896 (Qwen2.5-0.5B's vocabulary and width).
Time is the best of 3 runs. Transient memory is what a run holds above its inputs at its peak, minus the
gradients it returns (W.grad alone is V*C*2 = 272 MB in bf16): the memory the method itself costs.

    .venv/bin/python bench/bench_logprob.py          # CPU: torch path vs naive, N=1024
    python bench/bench_logprob.py --gpu              # one GPU: triton and torch paths vs naive, N=16384

CPU memory is the peak resident set (VmHWM, reset by writing 5 to /proc/self/clear_refs once the inputs
exist). glibc would keep freed blocks below its adaptive mmap threshold (up to 32 MB) in the heap, where a
later run reuses them without raising the peak; a fixed threshold sends every large block back to the OS
on free, so each run starts from the same resident set. GPU memory is torch's max_memory_allocated.
"""
import argparse
import ctypes
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kernels.logprob import linear_logprob  # noqa: E402

V, C = 151936, 896


def naive(h, w, y):
    return torch.log_softmax(h @ w.T, dim=-1).gather(1, y[:, None]).squeeze(1)  # (N, V) logits, twice


def _kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def run_cpu(n, threads):
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB, fixed (see the docstring)
    mallopt(-1, 1 << 20)  # M_TRIM_THRESHOLD: give the heap's top back too
    torch.set_num_threads(threads)
    h = torch.randn(n, C, dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(V, C) * C ** -0.5).bfloat16().requires_grad_()
    y = torch.randint(0, V, (n,))
    g = torch.randn(n)
    grad_mb = (h.numel() + w.numel()) * 2 / 2**20
    methods = {"naive": naive, "torch": lambda h, w, y: linear_logprob(h, w, y, impl="torch"),
               # as the model calls it: the entropy too (a logged metric here, so no gradient flows into it)
               "torch+H": lambda h, w, y: linear_logprob(h, w, y, return_entropy=True, impl="torch")[0]}
    print(f"CPU, {threads} threads, bf16, N={n} V={V} C={C}, forward+backward, best of 3; "
          f"gradients ({grad_mb:.0f} MB) excluded from transient memory")
    print(f"{'method':8s} {'time s':>8s} {'transient MB':>13s}")
    rows = {}
    for name, fn in methods.items():
        best_t, best_mb = float("inf"), float("inf")
        for _ in range(3):
            h.grad = w.grad = None
            base = _kb("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS
            t0 = time.perf_counter()
            (fn(h, w, y) * g).sum().backward()
            dt = time.perf_counter() - t0
            best_t = min(best_t, dt)
            best_mb = min(best_mb, (_kb("VmHWM") - base) / 1024 - grad_mb)
        rows[name] = (best_t, best_mb)
        print(f"{name:8s} {best_t:8.2f} {best_mb:13.0f}")
    tn, mn = rows["naive"]
    for name in ("torch", "torch+H"):
        print(f"{name}: {rows[name][0] / tn:.2f}x naive time, {mn / rows[name][1]:.1f}x less transient memory")


def run_gpu(n):
    dev = "cuda"
    h = torch.randn(n, C, device=dev, dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(V, C, device=dev) * C ** -0.5).bfloat16().requires_grad_()
    y = torch.randint(0, V, (n,), device=dev)
    g = torch.randn(n, device=dev)
    # Correctness first, on the first 1024 tokens against an fp32 reference.
    k = min(n, 1024)
    ref = torch.log_softmax(h[:k].float() @ w.float().T, dim=-1).gather(1, y[:k, None]).squeeze(1)
    grad_mb = (h.numel() + w.numel()) * 2 / 2**20
    flop = 6 * n * V * C  # the nominal count: forward 2NVC, backward 4NVC
    print(f"{torch.cuda.get_device_name()}, bf16, N={n} V={V} C={C}; TFLOP/s against 6NVC (2NVC forward); "
          f"gradients ({grad_mb:.0f} MB) excluded from extra memory")
    print(f"{'method':8s} {'max|err|':>9s} {'fwd ms':>8s} {'TFLOP/s':>8s} {'f+b ms':>8s} {'TFLOP/s':>8s} "
          f"{'extra MB':>9s}")
    methods = {"naive": naive,
               "triton": lambda h, w, y: linear_logprob(h, w, y, impl="triton"),
               "triton+H": lambda h, w, y: linear_logprob(h, w, y, return_entropy=True, impl="triton")[0],
               "torch": lambda h, w, y: linear_logprob(h, w, y, impl="torch")}
    for name, fn in methods.items():
        with torch.no_grad():
            err = (fn(h[:k], w, y[:k]).float() - ref).abs().max().item()
        times = {"fwd": [], "fb": []}
        mem = []
        for rep in range(4):  # the first run compiles and warms up; the best of the other 3 counts
            h.grad = w.grad = None
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            ev = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
            ev[0].record()
            logp = fn(h, w, y)
            ev[1].record()
            (logp * g).sum().backward()
            ev[2].record()
            torch.cuda.synchronize()
            del logp
            if rep:
                times["fwd"].append(ev[0].elapsed_time(ev[1]))
                times["fb"].append(ev[0].elapsed_time(ev[2]))
                mem.append((torch.cuda.max_memory_allocated() - base) / 2**20 - grad_mb)
        fwd, fb = min(times["fwd"]), min(times["fb"])
        print(f"{name:8s} {err:9.2e} {fwd:8.2f} {flop / 3 / fwd / 1e9:8.1f} {fb:8.2f} {flop / fb / 1e9:8.1f} "
              f"{min(mem):9.0f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpu", action="store_true", help="run on CUDA (N defaults to 16384)")
    ap.add_argument("--n", type=int, default=None, help="tokens N (default 1024 on CPU, 16384 on GPU)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    args = ap.parse_args()
    if args.gpu:
        if not torch.cuda.is_available():
            raise SystemExit("--gpu: no CUDA device here")
        run_gpu(args.n or 16384)
    else:
        run_cpu(args.n or 1024, args.threads)
