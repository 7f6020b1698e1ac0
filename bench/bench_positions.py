"""Log-probs where the loss looks: the fused head on the completion positions only, against every position.

RL scores completion tokens alone, yet a (B, T) forward holds prompt and padding positions too. With 512-token
prompts and 128-token completions the head over every position does 640 / 128 = 5x the work it needs. The
model's `forward(..., positions=(rows, cols))` (nanor1/model.py) gathers the completion positions' hidden states
first; this times both, forward + backward of sum(logp over the completion), on a random-weight Qwen2.5-shaped
model:

    python bench/bench_positions.py --threads 1                       CPU, Qwen2.5-0.5B's shape, bf16 autocast
    python bench/bench_positions.py --layers 2 --threads 1            the same with 2 of its 24 blocks
    python bench/bench_positions.py --device cuda --sequences 16      one GPU (the Triton head)

Rows: the head alone (linear_logprob on the hidden states of all B*T positions vs the B*completion ones), and
the whole model (body + head), best of --iters after a warm-up.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from bench.bench_train_step import SHAPES, build, synthetic_groups  # noqa: E402
from kernels.logprob import linear_logprob  # noqa: E402
from nanor1 import step as rl  # noqa: E402
from nanor1.precision import choose  # noqa: E402


def best_of(fn, iters, device):
    """Best seconds of `iters` runs after a warm-up (and Triton's compile on a GPU). On the CPU: this process's
    CPU time, which a machine shared with other jobs inflates far less than wall time (one thread: the two
    agree on an idle machine)."""
    fn()
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(clock() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="0.5B", choices=sorted(SHAPES))
    ap.add_argument("--layers", type=int, default=0, help="keep only this many blocks (0 = all)")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--completion", type=int, default=128)
    ap.add_argument("--sequences", type=int, default=2, help="B: rows of the micro-batch")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    prec = choose(device, args.precision)
    model = build(args.model, device)
    if args.layers:
        model.model.layers = model.model.layers[:args.layers]
    seq = args.prompt + args.completion
    groups = synthetic_groups(args.sequences, 2 * args.prompt, model.config.vocab_size, args.sequences, 0)
    for s in groups[0]:  # half prompt, half completion from synthetic_groups: cut the completion to length
        s.completion, s.sampler_logp = s.completion[:args.completion], s.sampler_logp[:args.completion]
    batch = rl.pack(groups[0], device)
    positions = batch.positions()
    B, T = batch.ids.shape
    n_all, n_comp = B * T, len(positions[0])

    def whole(pos):
        def go():
            model.zero_grad(set_to_none=True)
            with prec.autocast():
                logp, _ = model(batch.ids, targets=batch.targets, positions=pos)
            (logp * batch.completion).sum().backward()
        return go

    with torch.no_grad(), prec.autocast():
        hidden = model(batch.ids, return_hidden=True).to(prec.compute)  # (B, T, C)
    weight = model.lm_head.weight.detach().to(prec.compute).requires_grad_()

    def head(pos):
        h = (hidden.reshape(n_all, -1) if pos is None else hidden[pos]).detach().requires_grad_()
        y = batch.targets.reshape(-1) if pos is None else batch.targets[pos]

        def go():
            h.grad = weight.grad = None
            linear_logprob(h, weight, y, return_entropy=True)[0].sum().backward()
        return go

    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {args.threads} thread(s), CPU seconds")
    L = len(model.model.layers)
    print(f"{where}; {args.model} shape, {L} blocks, {args.precision}; B={B}, prompt {args.prompt} + completion "
          f"{args.completion} tokens: head over {n_all} positions vs {n_comp}; forward + backward, best of "
          f"{args.iters}")
    print("| part | every position s | completion only s | speed-up |")
    print("|---|---|---|---|")
    for name, fn in (("head (linear_logprob)", head), (f"model ({L} blocks + head)", whole)):
        full, comp = best_of(fn(None), args.iters, device), best_of(fn(positions), args.iters, device)
        print(f"| {name} | {full:.3f} | {comp:.3f} | {full / comp:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
