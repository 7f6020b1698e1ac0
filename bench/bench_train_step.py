"""The training phase of one GRPO step (no rollout) on a random-weight, Qwen2.5-shaped model, on one rank or
many: seconds per step, trained tokens/s and peak memory per rank, next to scripts/memory.py's estimate.

    python bench/bench_train_step.py --model tiny                                        one CPU process
    torchrun --standalone --nproc_per_node=2 bench/bench_train_step.py --model tiny       2 CPU ranks (gloo)
    torchrun --standalone --nproc_per_node=8 bench/bench_train_step.py --model 1.5B --seq 1536 --micro 8 \\
        --sequences 64 --grad_checkpointing                                              issue 13's 1.5B step
    python bench/bench_train_step.py --model 0.5B --lora_rank 16 ...                    LoRA (issue 19)

Each rank trains on `--sequences` synthetic sequences of `--seq` tokens (half prompt, half completion, groups of
8 with 0/1 rewards) through nanor1.step's score and update: FSDP2 across ranks, fp32 master weights + AdamW, bf16 compute on
CUDA, the fused log-prob head, one optimiser step. The first step is a warm-up and is not timed.
With --lora_rank r: the base frozen in the compute dtype (bf16 on CUDA, fp32 on the CPU), fp32 adapters on all
seven projections (nanor1/lora.py), AdamW over the adapters only.
"""
import argparse
import os
import resource
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from nanor1 import distributed, lora  # noqa: E402
from nanor1 import step as rl  # noqa: E402
from nanor1.config import ModelConfig, TrainConfig  # noqa: E402
from nanor1.model import Transformer  # noqa: E402
from nanor1.precision import choose  # noqa: E402
from scripts.memory import MODELS, lora_params, params  # noqa: E402

SHAPES = dict(MODELS, tiny=(64, 96, 2, 4, 2, 320, True))  # (hidden, intermediate, layers, heads, kv, vocab, tied)


def build(name, device):
    C, I, L, H, K, V, tied = SHAPES[name]
    cfg = ModelConfig(model_type="qwen2", vocab_size=V, hidden_size=C, intermediate_size=I, num_hidden_layers=L,
                      num_attention_heads=H, num_key_value_heads=K, head_dim=C // H, rms_norm_eps=1e-6,
                      rope_theta=1e6, max_position_embeddings=32768, tie_word_embeddings=tied,
                      attention_bias=True, qk_norm=False)
    torch.manual_seed(0)
    with torch.device(device):
        model = Transformer(cfg)  # fp32: the master weights
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model


def synthetic_groups(n_seqs, seq, vocab, G, seed):
    g = torch.Generator().manual_seed(seed)
    P = seq // 2
    groups = []
    for _ in range(n_seqs // G):
        prompt = torch.randint(0, vocab, (P,), generator=g).tolist()
        groups.append([rl.Sample(prompt=prompt, completion=torch.randint(0, vocab, (seq - P,), generator=g).tolist(),
                                 sampler_logp=[0.0] * (seq - P), truncated=False, reward=float(j % 2), text="")
                       for j in range(G)])
    return groups


def peak_gib(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux: the process's peak RSS


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny", choices=sorted(SHAPES))
    ap.add_argument("--seq", type=int, default=64, help="tokens per sequence (prompt + completion)")
    ap.add_argument("--sequences", type=int, default=16, help="sequences per rank per step (groups of 8)")
    ap.add_argument("--micro", type=int, default=8, help="sequences per forward/backward")
    ap.add_argument("--grad_checkpointing", action="store_true")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lora_rank", type=int, default=0, help="0 = full fine-tuning")
    args = ap.parse_args()
    G = 8
    if args.sequences % G:
        raise SystemExit(f"--sequences must be a multiple of the group size {G}")
    torch.set_num_threads(args.threads)
    d = distributed.setup()
    model = build(args.model, d.device)
    model.gradient_checkpointing = args.grad_checkpointing
    if args.lora_rank:
        if d.device.type == "cuda":
            model.to(torch.bfloat16)  # the frozen base in the compute dtype; the adapters come in fp32
        lora.apply_lora(model, args.lora_rank)
    prec = choose(d.device)
    distributed.shard(model, d, prec)
    opt = torch.optim.AdamW(lora.trainable(model), lr=1e-6)
    cfg = TrainConfig(prompts_per_step=args.sequences // G * d.world_size, group_size=G, micro_batch_size=args.micro,
                      max_completion_len=args.seq - args.seq // 2, grad_checkpointing=args.grad_checkpointing)
    run = rl.Run(cfg=cfg, d=d, prec=prec, tok=None, task=None, rows=[], prompts=[], stream=None, verifier=None,
                 stop=None)
    learners = [rl.PolicyLearner(model, opt, run)]
    times, opt_step = [], 0
    for step in range(1 + args.steps):
        groups = synthetic_groups(args.sequences, args.seq, SHAPES[args.model][5], G, seed=step * 1000 + d.rank)
        distributed.barrier(d)
        if d.device.type == "cuda":
            torch.cuda.synchronize(d.device)
        t0 = time.perf_counter()
        batch, sums = rl.score(run, groups, model, None)
        opt_step = rl.update(run, batch, learners, opt_step, lambda _: cfg.lr, sums)
        sums.reduce(d)  # the step's one device-to-host copy of its statistics
        if d.device.type == "cuda":
            torch.cuda.synchronize(d.device)
        distributed.barrier(d)
        if step:
            times.append(time.perf_counter() - t0)
    peak = torch.tensor([peak_gib(d.device)])
    distributed.all_reduce(peak, d, "max")
    if d.is_main:
        C, I, L, H, K, V, tied = SHAPES[args.model]
        n_params = params(C, I, L, H, K, V, tied)
        sec = sorted(times)[len(times) // 2]
        tokens = args.sequences * args.seq * d.world_size
        state = 16 * n_params / d.world_size / 2 ** 30  # fp32 weights + grads + AdamW moments, sharded
        if args.lora_rank:  # the frozen base (4 or 2 B/param) + 16 B per adapter parameter
            base_bytes = 2 if d.device.type == "cuda" else 4
            state = (base_bytes * n_params + 16 * lora_params(C, I, L, H, K, args.lora_rank)) / d.world_size / 2 ** 30
        device = torch.cuda.get_device_name(d.device) if d.device.type == "cuda" else f"CPU, {args.threads} thread(s)"
        print(f"# {args.model} ({n_params / 1e6:.1f}M params), {d.world_size} rank(s) on {device}, {args.sequences} "
              f"x {args.seq} tokens per rank, micro {args.micro}, grad checkpointing {args.grad_checkpointing}, "
              f"LoRA rank {args.lora_rank or 'off'}")
        print("| s / step (median) | trained tokens / s (all ranks) | peak memory / rank | train state / rank "
              "(estimate) |")
        print("|---|---|---|---|")
        kind = "allocated" if d.device.type == "cuda" else "RSS"
        print(f"| {sec:.3f} | {tokens / sec:,.0f} | {peak.item():.2f} GiB ({kind}) | {state:.2f} GiB |")
    distributed.teardown(d)


if __name__ == "__main__":
    main()
    distributed.exit_worker()
