"""Decode throughput of nanor1's rollout engine vs transformers' generate and a no-cache loop.

    python bench/bench_rollout.py [--batches 1 8 32] [--new 128] [--prompt 32] [--threads 2]
    python bench/bench_rollout.py --device cuda --batches 64 --new 512 --temperature 1   issue 7's GPU figure

Same random-weight model with the exact Qwen2.5-0.5B shape (hidden 896, 24 layers, 14/2 heads,
vocab 151936, tied), bf16, same prompts, greedy, `--new` tokens forced (no EOS). The floor is the time of
one decode step's weight matmuls alone (F.linear over every projection and the lm_head at batch B),
times the number of steps: what a perfect engine would still pay on this CPU.
"""
import argparse
import os
import sys
import tempfile
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nanor1.model import ModelConfig, Transformer  # noqa: E402
from nanor1.rollout import generate  # noqa: E402
from nanor1.weights import config_dict  # noqa: E402

QWEN25_05B = dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864,
                  num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, head_dim=64,
                  rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=32768, tie_word_embeddings=True,
                  attention_bias=True, qk_norm=False)


def random_model(dtype=torch.bfloat16):
    cfg = ModelConfig(**QWEN25_05B)
    cfg.raw = config_dict(cfg)
    torch.manual_seed(0)
    model = Transformer(cfg).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    return model.eval()


def floor_step(model, B):
    """One decode step's weight matmuls alone, at batch B."""
    ws = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    x = {w.shape[1]: torch.randn(B, w.shape[1], dtype=w.dtype) for w in ws}
    for _ in range(2):
        for w in ws:
            F.linear(x[w.shape[1]], w)
    t = time.perf_counter()
    for _ in range(5):
        for w in ws:
            F.linear(x[w.shape[1]], w)
    return (time.perf_counter() - t) / 5


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def no_cache(model, prompts, new):
    seq = torch.tensor(prompts)
    with torch.no_grad():
        for _ in range(new):
            seq = torch.cat([seq, model(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    return seq


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--no_cache_new", type=int, default=16, help="tokens for the (slow) no-cache loop")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cuda: time nanor1 alone (Triton kernels), tokens/s")
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.device != "cpu":
        return gpu(args)
    import transformers
    model = random_model()
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        hf = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).eval()
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {args.threads}, "
          f"prompt {args.prompt}, new {args.new}")
    print("| batch | nanor1 tok/s | transformers tok/s | speed-up | no-cache tok/s | floor tok/s | nanor1 % of floor |")
    print("|---|---|---|---|---|---|---|")
    for B in args.batches:
        prompts = torch.randint(0, 151643, (B, args.prompt), generator=g).tolist()
        generate(model, prompts, 4, temperature=0)  # warm-up
        t_ours, ours = timed(lambda: generate(model, prompts, args.new, temperature=0))
        ids = torch.tensor(prompts)
        with torch.no_grad():
            hf.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
            t_hf, ref = timed(lambda: hf.generate(ids, max_new_tokens=args.new, min_new_tokens=args.new,
                                                  do_sample=False, pad_token_id=0, eos_token_id=None))
        t_nc, _ = timed(lambda: no_cache(model, prompts, args.no_cache_new))
        floor = floor_step(model, B) * args.new
        same = sum(a == b for a, b in zip(ours, ref[:, args.prompt:].tolist()))
        tok = B * args.new
        print(f"| {B} | {tok / t_ours:.1f} | {tok / t_hf:.1f} | {t_hf / t_ours:.2f}x | "
              f"{B * args.no_cache_new / t_nc:.1f} | {tok / floor:.1f} | {100 * floor / t_ours:.0f}% |"
              f"  ({same}/{B} rows token-identical to transformers)", flush=True)


def gpu(args):
    """End-to-end rollout on a GPU: the engine with the decode-attention and sampling kernels."""
    model = random_model().to(args.device)
    g = torch.Generator().manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, prompt {args.prompt}, new {args.new}, "
          f"T={args.temperature}")
    print("| batch | tokens/s | ms / decode step |")
    print("|---|---|---|")
    for B in args.batches:
        prompts = torch.randint(0, 151643, (B, args.prompt), generator=g).tolist()
        generate(model, prompts, 8, temperature=args.temperature)  # warm-up: compile the kernels
        torch.cuda.synchronize()
        t, _ = timed(lambda: (generate(model, prompts, args.new, temperature=args.temperature),
                              torch.cuda.synchronize()))
        print(f"| {B} | {B * args.new / t:.0f} | {1e3 * t / args.new:.2f} |", flush=True)


if __name__ == "__main__":
    main()
