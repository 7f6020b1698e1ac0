"""The rollout engine: batched generation with a static KV cache, by the very model being trained.

    prefill(model, prompts, n, S)    the P distinct prompts once, right-padded, into a cache of S slots per row;
                                     each prompt's row is then copied to its n samples (a GRPO group)
    decode_step(model, cache, tok)   one new token per live row: (B,) ids in, (B, V) logits out
    Stop.finished(...)               which rows just ended: an EOS id, or a stop string in the decoded tail
    generate(...)                    the loop: sample, record, drop finished rows from the cache, repeat

Why the trainer's own model: no weight copy to an inference engine, and the sampler and the trainer score the
same weights with the same head: kernels/logprob.py rounds its bf16 logits as this head does. What is left of the
gap (the `logprob_mismatch` metric) is bf16 rounding inside the body, where a cached decode step and the
trainer's full forward add in different orders: 7e-4 to 1.3e-3 nats per token on the tiny demo with
`--precision bf16`, 4e-7 in fp32 (BENCHMARKS.md). `--tis_cap` corrects for what remains (nanor1/grpo.py).

Randomness is drawn per (seed, sequence, position): the sampler's noise for token t of sequence s is keyed
by s * max_new_tokens + t, so batch composition and compaction never change what a sequence samples.
Greedy decoding (temperature 0) does not depend on how prompts are batched.

Ops per decode step, the CPU's cost on a small model: q, k and v come from one fused matrix per layer (made at
the first step, kept in the cache), and the slots past each row's length are masked by one bias for all layers.

Host work per step: one copy of the B new ids to the host (a GPU's only sync), array writes, and a decode of
the tail only for rows whose new token may complete a stop string. Tokens and log-probs stay in device
buffers until the end; index arrays go to the device only when compaction changes them, without waiting
(model.to_device), and the cache checks its bounds against a host-side count (KVCache.filled).
"""
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from kernels.sampling import logprobs_of, sample
from nanor1.model import KVCache, compute_dtype, to_device


@dataclass
class Rollouts:
    tokens: list  # per completion: ids without the prompt, ending with the EOS / stop ids when one was hit
    logprobs: list  # per completion: log p of each sampled token (tempered, untruncated), floats
    truncated: list  # per completion: stopped by max_new_tokens, not by EOS / a stop string


class Stop:
    """When a completion ends: on any of the `eos` ids, or once its decoded text contains one of `strings`
    (kept in the completion). Stop strings are matched on decoded text, not on ids, because BPE spells
    "</answer>" differently after a space or a dot than alone. `decode` is the tokenizer's decode."""

    def __init__(self, eos=(), strings=(), decode: Optional[Callable] = None):
        self.eos = np.array(sorted({eos} if isinstance(eos, int) else set(eos or ())), dtype=np.int64)
        self.strings = [s for s in (strings or ()) if s]
        if self.strings and decode is None:
            raise ValueError("stop strings need decode (the tokenizer's decode function)")
        self.decode = decode
        # A stop string of b bytes lies within the last b + 1 tokens (each token decodes to >= 1 byte).
        self.window = max((len(s.encode()) + 1 for s in self.strings), default=0)
        self._last_chars = {s[-1] for s in self.strings}
        self._may_end = {}  # token id -> may this token complete a stop string (memo of one decode per id)

    def finished(self, out, seqs, t):
        """out: host (N, max_new) ids; seqs: (B,) the live sequences; t: the column just written.
        Returns (B,) bool: which of them ended at token t."""
        new = out[seqs, t]
        done = np.isin(new, self.eos)
        for r in np.flatnonzero(~done) if self.strings else ():
            if self._may_complete(int(new[r])):
                tail = out[seqs[r], max(0, t + 1 - self.window):t + 1].tolist()
                done[r] = any(s in self.decode(tail) for s in self.strings)
        return done

    def _may_complete(self, token):
        """A token that completes a stop string holds the string's last character (or part of it: a
        multi-byte character split over tokens decodes to U+FFFD alone), so other tokens need no decode."""
        if token not in self._may_end:
            text = self.decode([token])
            self._may_end[token] = "\ufffd" in text or any(c in text for c in self._last_chars)
        return self._may_end[token]


def prefill(model, prompts, n, max_len):
    """Run the P prompts (ragged id lists) once, right-padded, so a row's tokens sit at cache slots [0, len);
    then copy each prompt's row to its n samples. Returns (cache with P*n rows, logits (P*n, V))."""
    P, longest = len(prompts), max(len(p) for p in prompts)
    device = model.model.embed_tokens.weight.device
    ids = torch.zeros(P, longest, dtype=torch.long)
    mask = torch.zeros(P, longest, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, :len(p)] = torch.tensor(p)
        mask[i, :len(p)] = 1
    dtype = compute_dtype(model.model.embed_tokens.weight)  # the activations' dtype (autocast's, if on)
    cache = KVCache(model.config, P, max_len, dtype, device)
    logits = model(ids.to(device), attention_mask=mask.to(device), kv_cache=cache)[:, :model.vocab_limit]
    rows = torch.arange(P, device=device).repeat_interleave(n)  # prompt-major: row i*n + j is sample j of i
    cache.select(rows)
    return cache, logits[rows]  # (P*n, V)


def decode_step(model, cache, tokens):
    """Feed one token per cache row, (B,) -> next-token logits (B, V) (a view: the sampler takes strides)."""
    return model(tokens[:, None], kv_cache=cache)[:, :model.vocab_limit]


@torch.no_grad()
def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, n=1, seed=0,
             stop: Optional[Stop] = None, stream: Optional[Callable[[int, int], None]] = None) -> Rollouts:
    """Sample `n` completions for each prompt, prompt-major: completion i*n + j is sample j of prompt i.
    temperature 0 is greedy; top_k=0 and top_p=1 are off. `stream(seq, token)` sees each token as it comes.
    Ids at or past `model.vocab_limit` (set by load_model_and_tokenizer) are never sampled."""
    _check(model, prompts, max_new_tokens)
    stop = stop or Stop()
    N = len(prompts) * n
    check_memory(model.config, N, max(len(p) for p in prompts) + max_new_tokens,
                 compute_dtype(model.model.embed_tokens.weight), model.model.embed_tokens.weight.device)
    cache, logits = prefill(model, prompts, n, max(len(p) for p in prompts) + max_new_tokens)
    device = logits.device
    out = np.zeros((N, max_new_tokens), dtype=np.int64)  # host copy of the ids, for stop checks and the result
    logps = torch.zeros(N, max_new_tokens, device=device)  # (N, max_new) sampler log-probs
    length = np.full(N, max_new_tokens)  # tokens per completion; max_new_tokens = truncated unless ended there
    ended = np.zeros(N, dtype=bool)
    live = np.arange(N)  # which sequence each cache row holds
    live_t = torch.arange(N, device=device)  # the same, on the device (changed only by compaction)
    for t in range(max_new_tokens):
        tok = sample(logits, temperature, top_k=top_k, top_p=top_p, seed=seed,
                     offsets=live_t * max_new_tokens + t)  # (B,) noise keyed by (sequence, position)
        logps[live_t, t] = logprobs_of(logits, tok, temperature)  # tempered, untruncated
        out[live, t] = tok.cpu().numpy()  # the step's one host sync
        if stream is not None:
            for s in live:
                stream(int(s), int(out[s, t]))
        done = stop.finished(out, live, t)
        ended[live[done]], length[live[done]] = True, t + 1
        if t == max_new_tokens - 1 or done.all():
            break
        if done.any():  # compact: finished sequences stop costing compute
            keep = np.flatnonzero(~done)
            order = cache.compact(keep)  # (B',) row i now holds what row order[i] held
            order_t = to_device(order, device)
            live, live_t, tok = live[order], live_t[order_t], tok[order_t]
        logits = decode_step(model, cache, tok)
    logps = logps.cpu()
    return Rollouts(tokens=[out[s, :length[s]].tolist() for s in range(N)],
                    logprobs=[logps[s, :length[s]].tolist() for s in range(N)],
                    truncated=[not e for e in ended])


def cache_bytes(cfg, rows, length, dtype):
    """Bytes of the rollout's KV cache (keys and values of every layer, `rows` x `length` slots), its fused
    q/k/v weights (model.Attention.project) and its per-row logits and token buffers: the memory a generate()
    call allocates."""
    kv = 2 * cfg.num_hidden_layers * rows * cfg.num_key_value_heads * length * cfg.head_dim
    qkv = cfg.num_hidden_layers * (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * cfg.head_dim * \
        (cfg.hidden_size + 1)
    return (kv + qkv) * torch.finfo(dtype).bits // 8 + rows * (cfg.vocab_size * 4 + length * 12)


def available_bytes(device):
    """Free memory where the rollout runs: the GPU's free memory, or the host's available RAM."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux: no check
        return float("inf")


def check_memory(cfg, rows, length, dtype, device, what="the rollout"):
    """One clear error, before anything is allocated, when `rows` sequences of `length` tokens cannot fit."""
    need, free = cache_bytes(cfg, rows, length, dtype), available_bytes(device)
    if need > free:
        raise ValueError(f"{what} needs about {need / 2**30:,.1f} GiB for the KV cache of {rows:,} sequences x "
                         f"{length:,} tokens, but {free / 2**30:,.1f} GiB are free: use fewer sequences "
                         f"(--prompts_per_step, --group_size, --num_samples) or a shorter budget")


def _check(model, prompts, max_new_tokens):
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and every prompt needs at least one token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    longest, context = max(len(p) for p in prompts), model.config.max_position_embeddings
    if longest + max_new_tokens > context:
        raise ValueError(f"prompt of {longest} tokens + max_new_tokens {max_new_tokens} exceeds the model's "
                         f"context of {context} tokens")
    V, vocab = model.config.vocab_size, model.vocab_limit
    if vocab is not None and not 0 < vocab <= V:
        raise ValueError(f"model.vocab_limit must lie in [1, {V}] (the model's vocabulary), got {vocab}")
