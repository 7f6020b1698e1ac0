"""The rollout engine: batched generation with a static KV cache, by the very model being trained.

    prompts (P ragged lists) --prefill once, right-padded--> cache rows (P)
        --fan out each row to its G samples--> cache rows (P*G)
        --decode loop: one token per live row per step, finished rows compacted away--> completions

Why the trainer's own model: no weight copy to an inference engine and no numerics mismatch between the
sampler's log-probs and the trainer's (the `logprob_mismatch` metric shows it is ~0 here).

Randomness is drawn per (seed, sequence, position): the sampler's noise for token t of sequence s is keyed
by s * max_new_tokens + t, so batch composition and compaction never change what a sequence samples.
Greedy decoding (temperature 0) does not depend on how prompts are batched.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from kernels.sampling import sample
from nanor1.model import KVCache, compute_dtype


@dataclass
class Rollouts:
    tokens: list  # per completion: ids without the prompt, ending with the EOS / stop ids when one was hit
    logprobs: list = field(default_factory=list)  # per completion: log p of each sampled token (tempered, untruncated)
    truncated: list = field(default_factory=list)  # per completion: stopped by max_new_tokens, not EOS / stop


@torch.no_grad()
def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, eos_token_id=None, n=1,
             stop=None, seed=0, details=False, stream: Optional[Callable[[int, int], None]] = None,
             stop_strings=None, decode=None):
    """Sample `n` completions for each prompt (a GRPO group), prompt-major: completion i*n + j is sample j of
    prompt i. Returns list[list[int]], or a `Rollouts` with log-probs and truncation flags if `details`.
    temperature 0 is greedy; top_k=0 and top_p=1 are off. `stream(seq, token)` sees each token as it comes.
    `stop` holds token-id sequences; `stop_strings` text matched on the decoded tail (`decode` = the
    tokenizer's), needed because BPE spells "</answer>" differently after " " or "." than alone.
    Ids at or past `model.vocab_limit` (the tokenizer's vocab_size, when set) are never sampled: a
    checkpoint's embedding is often padded past the vocabulary (Qwen2.5: 151,936 rows for 151,665 tokens)
    and those ids decode to nothing. The sampler's log-probs normalise over the same ids as the trainer's."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt, and every prompt needs at least one token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    longest = max(len(p) for p in prompts)
    context = model.config.max_position_embeddings
    if longest + max_new_tokens > context:
        raise ValueError(f"prompt of {longest} tokens + max_new_tokens {max_new_tokens} exceeds the model's "
                         f"context of {context} tokens")
    V = model.config.vocab_size
    vocab = model.vocab_limit
    if vocab is not None and not 0 < vocab <= V:
        raise ValueError(f"model.vocab_limit must lie in [1, {V}] (the model's vocabulary), got {vocab}")
    eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
    stop = [list(s) for s in (stop or []) if len(s)]
    stop_strings = [s for s in (stop_strings or []) if s]
    if stop_strings and decode is None:
        raise ValueError("stop_strings needs decode (the tokenizer's decode function)")
    # A stop string of b bytes lies within the last b + 1 tokens (each token decodes to >= 1 byte).
    window = max((len(s.encode()) + 1 for s in stop_strings), default=0)
    device = model.model.embed_tokens.weight.device
    P = len(prompts)

    # Prefill: the P distinct prompts once, right-padded, so a row's tokens sit at cache slots [0, len).
    ids = torch.zeros(P, longest, dtype=torch.long)
    mask = torch.zeros(P, longest, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, :len(p)] = torch.tensor(p)
        mask[i, :len(p)] = 1
    dtype = compute_dtype(model.model.embed_tokens.weight)  # the activations' dtype (autocast's, if on)
    cache = KVCache(model.config, P, longest + max_new_tokens, dtype, device)
    logits = model(ids.to(device), attention_mask=mask.to(device), kv_cache=cache)[:, :vocab]  # (P, V)

    # Fan out: each prompt's cache row is copied to its n samples.
    rows = torch.arange(P, device=device).repeat_interleave(n)
    cache.select(rows)
    logits = logits[rows]  # (P*n, V)
    live = torch.arange(P * n, device=device)  # which sequence each cache row holds
    out = [[] for _ in range(P * n)]
    logps = [[] for _ in range(P * n)]
    truncated = [False] * (P * n)

    for t in range(max_new_tokens):
        offsets = live * max_new_tokens + t  # (B,) random-stream key per (sequence, position)
        tok = sample(logits, temperature, top_k=top_k, top_p=top_p, seed=seed, offsets=offsets)  # (B,)
        if details:  # the sampler's log-prob under the tempered, untruncated distribution
            lp = torch.log_softmax(logits.float() / (temperature or 1.0), -1).gather(-1, tok[:, None])[:, 0]
            lp = lp.tolist()
        keep = []
        for r, (s, x) in enumerate(zip(live.tolist(), tok.tolist())):
            out[s].append(x)
            if details:
                logps[s].append(lp[r])
            if stream is not None:
                stream(s, x)
            ended = (x in eos or any(out[s][-len(q):] == q for q in stop)
                     or (window and any(q in decode(out[s][-window:]) for q in stop_strings)))
            if not ended and t == max_new_tokens - 1:
                truncated[s] = True
            if not ended:
                keep.append(r)
        if t == max_new_tokens - 1 or not keep:
            break
        if len(keep) < len(live):  # compact: finished sequences stop costing compute
            keep_t = cache.compact(keep)  # (B',) the rows' new order
            live, tok = live[keep_t], tok[keep_t]
        logits = model(tok[:, None], kv_cache=cache)[:, :vocab]  # (B, V), a view: the sampler takes strides

    if details:
        return Rollouts(tokens=out, logprobs=logps, truncated=truncated)
    return out
