"""Expected memory per GPU for GRPO (and PPO) with nanoR1 on Qwen2.5 0.5B / 1.5B / 3B / 7B, full fine-tuning and
LoRA (an estimate, not a measurement): python scripts/memory.py [--gpus 1 8] [--micro 8] [--seq 1536] [--rollout 64]
[--lora_rank 16]

Counted per GPU, for N GPUs under FSDP2 (fully_shard per block, fp32 master weights, bf16 compute):
- training state: fp32 parameters (4 B) + fp32 gradients (4 B) + AdamW moments (8 B) = 16 B/param, / N
- rollout phase: the whole model gathered once in bf16 (2 B/param, not sharded) plus the KV cache of the
  rank's rollout batch: 2 (k, v) x layers x kv_heads x head_dim x 2 B per token
- training activations with gradient checkpointing: each block's input kept (layers x b x T x C x 2 B) plus
  one block recomputed at a time (about 16 x b x T x C x 2 B, MLP width included roughly) plus one
  gathered bf16 block; the fused log-prob kernel never holds the (b*T, V) logits
The frozen reference model (beta > 0) adds 4 B/param / N (fp32, sharded). Allocator slack is not counted.

PPO (--algo ppo) adds the critic (nanor1/ppo.py): the policy's backbone without its LM head plus a value head
Linear(C, 1), trained like the policy, so its own 16 B/param / N of fp32 weights, gradients and AdamW moments,
held through every phase. Its activations equal the policy's (same blocks, same micro-batch) but do not add to
them when the update runs the critic's forward and backward after the policy's, as a separate backward; the
score phase's critic forward runs without grad. So: ppo peak = full peak + critic state.

LoRA (nanor1/lora.py, all seven projections of every block): the base is frozen in bf16, 2 B/param / N, and
only the adapters carry fp32 weights, gradients and AdamW moments, 16 B per adapter parameter / N. On one GPU the
rollout reads that same bf16 base (no gathered copy; N > 1 gathers it as above). The KL reference is the policy
with adapters disabled: no second model, + 0. Activations as above (the adapters add r per token and layer).
"""
import argparse

# Published Qwen2.5 configs: (hidden, intermediate, layers, heads, kv_heads, vocab, tied)
MODELS = {
    "0.5B": (896, 4864, 24, 14, 2, 151936, True),
    "1.5B": (1536, 8960, 28, 12, 2, 151936, True),
    "3B": (2048, 11008, 36, 16, 2, 151936, True),
    "7B": (3584, 18944, 28, 28, 4, 152064, False),
}


def params(C, I, L, H, K, V, tied):
    D = C // H
    attn = C * H * D + 2 * C * K * D + H * D * C + (H + 2 * K) * D  # q, k, v (with bias), o
    mlp = 3 * C * I
    return L * (attn + mlp + 2 * C) + V * C * (1 if tied else 2) + C


def critic_params(P, C, V, tied):
    """The critic: the policy minus its LM head (an untied V x C matrix; a tied one is the embedding, which the
    critic keeps) plus the value head's C weights and 1 bias."""
    return P - (0 if tied else V * C) + C + 1


def lora_params(C, I, L, H, K, r):
    """r (in + out) per adapted Linear: q, k, v, o, gate, up, down in each of the L blocks."""
    D = C // H
    return L * r * ((C + H * D) + 2 * (C + K * D) + (H * D + C) + 3 * (C + I))


def table(a, N):
    G = 2 ** 30
    print(f"\nper GPU, N = {N} GPU(s), micro-batch {a.micro} x {a.seq} tokens, rollout {a.rollout} sequences x {a.seq} "
          f"tokens per GPU, LoRA rank {a.lora_rank}")
    print("| model | params | rollout (weights + KV) | activations | full: train state | full: peak (+ KL ref) | "
          "ppo: peak (critic state) | LoRA params | LoRA: train state | LoRA: peak (KL ref: + 0) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (C, I, L, H, K, V, tied) in MODELS.items():
        P = params(C, I, L, H, K, V, tied)
        kv = 2 * L * K * (C // H) * 2 * a.rollout * a.seq
        tokens = a.micro * a.seq
        block = (P - V * C * (1 if tied else 2)) / L
        act = L * tokens * C * 2 + 16 * tokens * C * 2 + 2 * block
        state = 16 * P / N
        peak = state + max(2 * P + kv, act)
        Pl = lora_params(C, I, L, H, K, a.lora_rank)
        lstate = 2 * P / N + 16 * Pl / N
        lpeak = lstate + max((2 * P if N > 1 else 0) + kv, act)
        critic = 16 * critic_params(P, C, V, tied) / N
        print(f"| {name} | {P / 1e9:.2f}B | {2 * P / G:.1f} + {kv / G:.1f} GiB | {act / G:.1f} GiB | "
              f"{state / G:.1f} GiB | {peak / G:.1f} (+ {4 * P / N / G:.1f}) GiB | {(peak + critic) / G:.1f} "
              f"({critic / G:.1f}) GiB | {Pl / 1e6:.1f}M | {lstate / G:.2f} GiB | {lpeak / G:.1f} GiB |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 8], help="one table per GPU count")
    ap.add_argument("--micro", type=int, default=8, help="sequences per micro-batch")
    ap.add_argument("--seq", type=int, default=1536, help="prompt + completion tokens")
    ap.add_argument("--rollout", type=int, default=64, help="sequences generated at once per GPU")
    ap.add_argument("--lora_rank", type=int, default=16)
    a = ap.parse_args()
    for N in a.gpus:
        table(a, N)


if __name__ == "__main__":
    main()
