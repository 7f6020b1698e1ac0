"""The Qwen transformer (Qwen2, Qwen2.5, Qwen3 dense), written to read like the architecture.

    tokens -> embed_tokens -> [Block] x L -> norm -> lm_head -> logits
    Block:  x = x + Attention(RMSNorm(x));  x = x + MLP(RMSNorm(x))
    Attention: q, k, v projections (Qwen2: with bias; Qwen3: RMSNorm on each head of q and k), rotary
               position embedding, grouped-query attention (K kv heads shared by H query heads), o_proj.
    MLP: down(silu(gate(x)) * up(x)).

Parameter names are the Hugging Face ones (`model.layers.0.self_attn.q_proj.weight`, ...), so loading a
checkpoint is an identity copy plus checks (nanor1/weights.py).

Shape legend used in comments: B batch, T time, H query heads, K kv heads, D head dim, C model dim,
V vocab, S cache length.

Precision (nanor1/precision.py): the weights may be fp32 masters under autocast, FSDP's bf16 copies, or bf16
for inference; all three compute alike. The residual stream stays fp32, each sublayer runs in the compute
dtype (autocast's, else the weights'), and the embedding rows and norm weights are rounded to it.

There is exactly one entry point, `forward`, because FSDP2 hooks only `forward`: every caller (training,
prefill, cached decoding, per-token log-probs) goes through it. What it returns depends on what is asked:

    | call                                   | returns                                              |
    |----------------------------------------|------------------------------------------------------|
    | forward(ids)                           | logits (B, T, V)                                     |
    | forward(ids, return_hidden=True)       | final-norm hidden states (B, T, C)                   |
    | forward(ids, targets=tgt, temperature) | (logp, entropy), each (B, T) float32, of             |
    |                                        | log_softmax(logits / temperature) at tgt; the (N, V) |
    |                                        | logits are never materialised (kernels/logprob.py)   |
    | ... positions=(rows, cols)             | the same, computed at those positions only, 0 else   |
    | ... shared_prefix=(lens, keys, ends)   | the same; common beginnings run once, padding never  |
    | forward(ids, kv_cache=cache)           | next-token logits (B, V) at each row's last new      |
    |                                        | token; the cache is written and its lengths advanced |
"""
import os
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from kernels import use_triton
from kernels.decode_attention import decode_attention, decode_bias
from kernels.logprob import linear_logprob
from nanor1 import lora, weights
from nanor1.config import ModelConfig
from nanor1.tokenizer import Tokenizer


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        # Normalise in fp32 (a bf16 mean of squares loses digits), cast to the compute dtype, then scale: the
        # order HF uses. The weight is rounded to the compute dtype here, as FSDP's bf16 gather rounds it, so
        # one process under autocast and FSDP multiply the same numbers (nanor1/precision.py).
        # F.rms_norm is x * rsqrt(mean(x^2) + eps) in one op instead of five: a decode step runs 9 norms, and
        # on a small model each op's fixed cost, not its arithmetic, is what a step pays.
        dtype = compute_dtype(self.weight)
        x = F.rms_norm(cast(x, torch.float32), x.shape[-1:], eps=self.eps)
        return cast(self.weight, dtype) * cast(x, dtype)


def cast(t, dtype):
    """t in dtype, with no op dispatched when it already is (the fp32 path of every norm and projection)."""
    return t if t.dtype == dtype else t.to(dtype)


def rope_cos_sin(position_ids, head_dim: int, theta: float, dtype):
    """cos and signed sin, each (B, 1, T, D), for integer positions (B, T), as apply_rope takes them: the angles
    of the pairs (i, i + D/2) twice over, and sin with its first half negated. Angles in fp32, as HF's."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=position_ids.device)
                                .float() / head_dim))  # (D/2,)
    angles = position_ids.float()[:, None, :, None] * inv_freq  # (B, 1, T, D/2)
    cos, sin = angles.cos(), angles.sin()
    return cast(torch.cat([cos, cos], -1), dtype), cast(torch.cat([-sin, sin], -1), dtype)


def compute_dtype(t):
    """The dtype matmuls on tensor t's device run in: autocast's when it is active there, else t's own."""
    dev = t.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else t.dtype


def apply_rope(x, cos, sin):
    """Rotate pairs (x_i, x_{i+D/2}) by the position's angle: (x_i cos - x_{i+D/2} sin, x_{i+D/2} cos + x_i sin).
    x (B, H, T, D); cos, sin (B, 1, T, D) from rope_cos_sin. HF's x cos + cat(-x2, x1) sin, written with the
    sign folded into sin and the halves swapped by a roll: bit for bit the same numbers, in 4 ops instead of 8."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * sin


class KVCache:
    """A static, preallocated cache: one (B, K, S, D) key and value buffer per layer, plus the number of
    valid positions of each row. Slots at or past a row's length are kept zero: the buffers are zeroed when
    made, a forward with padding clears the slots its padding wrote, and decoding writes each row at its
    length. So the CPU decode path masks them by adding -inf once (0 x 0 is 0), not per layer with `where`
    and a finiteness check (kernels/decode_attention.py). It also holds the rollout's fused q/k/v weights."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, dtype, device):
        shape = (cfg.num_hidden_layers, batch_size, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, K, S, D)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # (B,)
        self.max_len = max_len
        # Host-side bound on every row's length (each forward adds its T): the overflow check and the prefill's
        # key range read it instead of the device lengths, which on a GPU would wait for the queued work.
        self.filled = 0
        self.qkv = {}  # layer -> (weight, bias): q, k and v projections as one matrix, made at the first decode

    def slots(self, T, device, bias):
        """What a forward of T new tokens a row writes, made once and read by every layer (cached_attention):
        (rows (B, 1), pos (B, T) the slots written, upto (B,) each row's length after, and for a decode step
        with `bias`, the torch path's mask of the slots past each length (decode_bias), else None)."""
        if self.filled + T > self.max_len:
            raise ValueError(f"KV cache overflow: {self.filled} + {T} tokens > {self.max_len} slots")
        pos = self.lengths[:, None] + torch.arange(T, device=device)  # (B, T)
        upto = pos[:, -1] + 1
        mask = decode_bias(upto, self.filled + 1) if T == 1 and bias else None
        return torch.arange(len(pos), device=device)[:, None], pos, upto, mask

    def advance(self, slots, attention_mask=None):
        """After the forward that wrote `slots`: the new lengths. With right padding (attention_mask) a row's new
        tokens are its first mask[b].sum(), the slots its padding wrote are cleared, and the column of each
        row's last new token is returned; without, every token was new (returns None: the last column)."""
        self.filled += slots[1].shape[1]
        if attention_mask is None:
            self.lengths = slots[2]
            return None
        n_new = attention_mask.long().sum(-1)
        self.lengths = slots[1][:, 0] + n_new
        self.clear_past_lengths()
        return n_new - 1

    def clear_past_lengths(self):
        """Zero every slot at or past its row's length (what the padding of a right-padded forward wrote)."""
        past = torch.arange(self.max_len, device=self.k.device) >= self.lengths[:, None]  # (B, S)
        self.k.masked_fill_(past[None, :, None, :, None], 0)
        self.v.masked_fill_(past[None, :, None, :, None], 0)

    def select(self, rows):
        """Keep (and reorder / repeat) the given batch rows: compaction after sequences finish, and the
        fan-out of one prefilled prompt into the G samples of its group."""
        self.k, self.v = self.k[:, rows], self.v[:, rows]
        self.lengths = self.lengths[rows]

    def compact(self, keep):
        """Keep only batch rows `keep` (ascending, a numpy array), in place: each kept row at or past len(keep)
        moves into a hole left by a dropped row below, then the buffers are narrowed to the first len(keep)
        rows. No second cache is allocated (select() would hold old and new at once) and only the rows that
        left the front are copied. Returns the new order (numpy): row i now holds what row order[i] held."""
        n = len(keep)
        order = np.arange(n)
        holes = np.setdiff1d(order, keep, assume_unique=True)  # rows below n that were dropped
        movers = keep[keep >= n]  # kept rows beyond n, one per hole
        order[holes] = movers
        if len(holes):
            dst, src = (to_device(a, self.k.device) for a in (holes, movers))
            self.k[:, dst] = self.k[:, src]
            self.v[:, dst] = self.v[:, src]
        self.k, self.v = self.k[:, :n], self.v[:, :n]
        self.lengths = self.lengths[to_device(order, self.lengths.device)]
        return order


def to_device(array, device):
    """A host numpy index array on `device`, without waiting: a blocking copy to a GPU first waits for every
    queued kernel (PyTorch synchronises the stream after it); a non-blocking one from pageable memory is staged
    at once and queued behind them."""
    return torch.from_numpy(array).to(device, non_blocking=True)


def cached_attention(q, k_new, v_new, cache: KVCache, layer: int, slots):
    """Write this step's keys/values into the cache, then attend over the cache. q (B, H, T, D), k_new/v_new
    (B, K, T, D), slots = (rows (B, 1), pos (B, T) the cache slots written now, upto (B,) each row's length
    after, bias: decoding's mask on the CPU or None), made once per forward (Transformer.forward) and read by
    every layer."""
    B, H, T, D = q.shape
    k_cache, v_cache = cache.k[layer], cache.v[layer]  # (B, K, S, D) views into the big buffer
    rows, pos, upto, bias = slots
    # Advanced indexing puts the (B, T) index dims first: (B, T, K, D). ~50x faster than scatter_ on CPU.
    # (.to: under autocast rope's fp32 angles promote k to fp32; the cache holds the compute dtype.)
    k_cache[rows, :, pos] = cast(k_new.transpose(1, 2), k_cache.dtype)
    v_cache[rows, :, pos] = cast(v_new.transpose(1, 2), v_cache.dtype)
    if T == 1:  # decoding: one query per row over its cache (the Triton decode kernel on CUDA)
        return decode_attention(q[:, :, 0], k_cache, v_cache, upto, bias=bias)[:, :, None]  # (B, H, 1, D)
    # Prefill: attend causally over slots [0, start + t]. Slots beyond are garbage for this query.
    S = cache.filled + T  # >= every row's start + T, known on the host
    keys = torch.arange(S, device=q.device)
    allowed = keys[None, None, :] <= pos[:, :, None]  # (B, T, S)
    valid = (keys[None, :] <= pos[:, -1:])[:, None, :, None]  # (B, 1, S, 1): slots some query may read
    k = torch.where(valid, k_cache[:, :, :S], 0)  # (B, K, S, D), garbage slots zeroed
    v = torch.where(valid, v_cache[:, :, :S], 0)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None], enable_gqa=True)


class SharedPrefix:
    """Rows that begin alike run their common beginning once, and no row runs its padding. The G completions of
    a GRPO group share their prompt, so scoring them row by row runs the prompt G times; and rows padded to the
    longest spend a quarter of a demo batch on padding. Row b of a (B, T) batch shares its first lens[b]
    tokens with every row of the same key (keys[b]), and its tokens from ends[b] on are padding. The forward
    then runs the N tokens that matter, packed into one (1, N) row in R = U + B segments:

        segments [0, U)      the U distinct beginnings: tokens [0, lens) of the first row of each key
        segments [U, U + B)  row b's own part, tokens [lens[b], ends[b]), at rope positions lens[b], ...

    Only attention needs rows: it spreads q, k, v into an (R, T') grid (T' the longest segment), where an
    own-part row attends to the first lens[b] keys of its beginning's row, placed in front of its own keys,
    then causally to its own; a beginning attends causally to itself. Exact: under causal attention a
    beginning's keys and values do not depend on what follows it, so each row sees the numbers it would see
    alone, and in backward the beginning's gradient is the sum over the rows that read it, as it would be
    summed over the copies. A demo step (256 rows of 28-token prompts and 24-40-token completions) runs 9k
    tokens instead of 16k. Index and mask are built here once, on the host from host tensors (no wait for the
    device), and read by every layer.

    The mask is dense, (R, T', P + T') booleans: past MAX_CELLS (16 MB; a micro-batch of 2 rows of 8k-token
    completions would need 140 MB) the forward runs the rows whole instead (`cells`), with the same numbers."""
    MAX_CELLS = 1 << 24

    @staticmethod
    def cells(lens, keys, ends):
        """The mask's size for these rows (host (B,) ints), before building anything."""
        lens, ends = torch.as_tensor(lens), torch.as_tensor(ends)
        P = int(lens.max())
        T = max(int((ends - lens).max()), P, 1)
        return (len(torch.unique(torch.as_tensor(keys))) + len(lens)) * T * (P + T)

    def __init__(self, lens, keys, ends, device):
        lens, keys, ends = (torch.as_tensor(t, dtype=torch.long) for t in (lens, keys, ends))  # (B,) host
        uniq, owner = torch.unique(keys, return_inverse=True)  # owner[b]: the beginning row b continues
        U, B = len(uniq), len(keys)
        first = torch.full((U,), B).scatter_reduce(0, owner, torch.arange(B), "amin")  # (U,) its first row
        rows = torch.cat([first, torch.arange(B)])  # (R,) the input row of each segment
        begin = torch.cat([torch.zeros(U, dtype=torch.long), lens])  # (R,) its first input column
        size = torch.cat([lens[first], ends - lens])  # (R,) its tokens
        seg = torch.repeat_interleave(torch.arange(U + B), size)  # (N,) segment of each packed token
        offset = torch.cumsum(size, 0) - size  # (R,) where each segment starts in the packed list
        col = torch.arange(len(seg)) - offset[seg]  # (N,) place within its segment
        self.P, self.T = int(lens.max()), max(int(size.max()), int(lens.max()), 1)  # front key slots; T'
        self.input = (rows[seg], begin[seg] + col)  # (N,) each: where a packed token sits in the input
        # (Copies to the device without waiting: a blocking one would wait for the queued kernels first.)
        on = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        self.position_ids = on((begin[seg] + col)[None])  # (1, N) rope positions
        self.grid = on(seg * self.T + col)  # (N,) its cell in the flattened (R, T') grid
        self.source = on(torch.cat([torch.arange(U), owner]))  # (R,) whose first P keys a row sees...
        front = torch.arange(self.P)[None, :] < begin[:, None]  # (R, P) ...and which: none for a beginning
        causal = torch.ones(self.T, self.T, dtype=torch.bool).tril()
        self.mask = on(torch.cat([front[:, None, :].expand(-1, self.T, -1), causal.expand(U + B, -1, -1)],
                                 -1)[:, None])  # (R, 1, T', P + T')
        self.start = on(offset[U:] - lens)  # (B,) packed index of row b's column c: start[b] + c
        self.input = tuple(on(t) for t in self.input)
        self.R = U + B

    def gather(self, ids):
        """(B, T) input ids -> (1, N) packed."""
        return ids[self.input][None]

    def where(self, rows, cols):
        """Input positions (rows, cols), each lens[row] <= col < ends[row], -> their packed indices (N',)."""
        return self.start[rows] + cols

    def attend(self, q, k, v):
        """q (1, H, N, D), k/v (1, K, N, D) packed -> (1, H, N, D): attention on the (R, T') grid."""
        def spread(t):  # (1, h, N, D) -> (R, h, T', D), zeros in the cells no token fills
            grid = t.new_zeros(self.R * self.T, t.shape[1], t.shape[3])
            return grid.index_copy(0, self.grid, t[0].transpose(0, 1)).view(self.R, self.T, *t.shape[1::2]) \
                .transpose(1, 2)
        q, k, v = spread(q), spread(k), spread(v)
        k = torch.cat([k[self.source, :, :self.P], k], dim=2)  # (R, K, P + T', D): the beginning's in front
        v = torch.cat([v[self.source, :, :self.P], v], dim=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, enable_gqa=True)  # (R, H, T', D)
        return y.transpose(1, 2).reshape(self.R * self.T, *y.shape[1::2])[self.grid].transpose(0, 1)[None]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer = layer  # which slice of the KV cache is ours
        self.n_head, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        C, H, K, D = cfg.hidden_size, self.n_head, self.n_kv, self.head_dim
        self.q_proj = nn.Linear(C, H * D, bias=cfg.attention_bias)
        self.k_proj = nn.Linear(C, K * D, bias=cfg.attention_bias)
        self.v_proj = nn.Linear(C, K * D, bias=cfg.attention_bias)
        self.o_proj = nn.Linear(H * D, C, bias=False)
        if cfg.qk_norm:  # Qwen3: one RMSNorm over D, shared by all heads
            self.q_norm = RMSNorm(D, cfg.rms_norm_eps)
            self.k_norm = RMSNorm(D, cfg.rms_norm_eps)
        self.qk_norm = cfg.qk_norm

    def project(self, x, cache=None):
        """q, k, v (B, T, H*D | K*D). A decode step takes them from one matrix of the three, made once per
        rollout and kept in the cache: one matmul a layer instead of three (on a small model each op's fixed
        cost is what a decode step pays). Not under LoRA, whose rollouts run the adapters live (lora.py), nor with
        gradients on (the copy is detached). A cache serves one set of weights: generate() makes one per call."""
        ms = (self.q_proj, self.k_proj, self.v_proj)  # (apply_lora swaps in LoRALinear after construction)
        if cache is None or x.shape[1] != 1 or torch.is_grad_enabled() or any(type(m) is not nn.Linear for m in ms):
            return self.q_proj(x), self.k_proj(x), self.v_proj(x)
        if self.layer not in cache.qkv:
            dtype = compute_dtype(self.q_proj.weight)  # the dtype F.linear would cast the weights to
            cache.qkv[self.layer] = (torch.cat([m.weight.detach() for m in ms]).to(dtype),
                                     None if self.q_proj.bias is None else
                                     torch.cat([m.bias.detach() for m in ms]).to(dtype))
        H, K, D = self.n_head, self.n_kv, self.head_dim
        return F.linear(x, *cache.qkv[self.layer]).split([H * D, K * D, K * D], -1)

    def forward(self, x, cos, sin, attn_mask=None, kv_cache=None, slots=None, shared=None):
        B, T, _ = x.shape
        q, k, v = self.project(x, kv_cache)
        q = q.reshape(B, T, self.n_head, self.head_dim)  # (B, T, H, D)
        k = k.reshape(B, T, self.n_kv, self.head_dim)  # (B, T, K, D)
        v = v.reshape(B, T, self.n_kv, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H|K, T, D)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # Under autocast, rope's fp32 angles (and fp32 qk-norm weights) promote q and k to fp32: back to the
        # compute dtype (v's), as SDPA's autocast would do, so the decode kernel gets bf16 q, k and cache.
        q, k = cast(q, v.dtype), cast(k, v.dtype)
        if kv_cache is not None:
            y = cached_attention(q, k, v, kv_cache, self.layer, slots)
        elif shared is not None:
            y = shared.attend(q, k, v)
        elif attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=True)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))  # (B, T, H*D) -> (B, T, C)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, attn_mask=None, kv_cache=None, slots=None, shared=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, attn_mask, kv_cache, slots, shared)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    """HF's `model.` prefix: embedding, blocks, final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList([Block(cfg, i) for i in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.gradient_checkpointing = False  # recompute each block in backward (activation memory / L)
        self.logprob_impl = "auto"  # kernels/logprob.py: Triton on CUDA, chunked torch elsewhere
        # The tokenizer's vocab_size when the embedding is padded past it (Qwen2.5: 151,665 of 151,936 rows):
        # the fused log-probs then normalise over the real tokens only, the distribution generate() samples.
        self.vocab_limit: Optional[int] = None
        self.lora = None  # nanor1/lora.py's AdapterConfig once apply_lora has swapped in LoRA layers

    @classmethod
    def from_pretrained(cls, path, dtype=torch.bfloat16, device="cpu"):
        """Load a HF-layout folder (config.json + model.safetensors or a sharded index), or a LoRA adapter
        folder in PEFT's layout (adapter_config.json: its base model, then the adapters; nanor1/lora.py)."""
        if os.path.isfile(os.path.join(path, "adapter_config.json")):
            return weights.load_adapter_model(cls, path, dtype=dtype, device=device)
        return weights.load_pretrained(cls, path, dtype=dtype, device=device)

    def save_pretrained(self, path, state_dict=None):
        """Write config.json + model.safetensors that transformers loads; under LoRA the adapters only, in
        PEFT's layout (from_pretrained reads either). Pass a gathered `state_dict` when the parameters are
        sharded (FSDP)."""
        if self.lora is not None:
            return lora.save_adapter(self, path, state_dict=state_dict)
        weights.save_pretrained(self, path, state_dict=state_dict)

    def forward(self, input_ids, position_ids=None, attention_mask=None, kv_cache: Optional[KVCache] = None,
                return_hidden=False, targets=None, temperature=1.0, positions=None, shared_prefix=None):
        """input_ids (B, T). attention_mask (B, T), 1 for real tokens: any padding side without a cache; with
        a cache, right padding (row b's new tokens are its first mask[b].sum() ones). positions: with
        targets, a (rows, cols) pair of (N,) index tensors, the only positions scored (the others read 0).
        shared_prefix: with targets and positions, (lens, keys, ends), host (B,) ints: rows of equal keys begin
        with the same lens tokens, run once, and row b's columns from ends[b] on are padding, not run
        (SharedPrefix); every scored col must lie in [lens[row], ends[row]).
        See the module docstring for what is returned."""
        B, T = input_ids.shape
        slots = shared = None
        if shared_prefix is not None:  # the rows' common beginnings run once (SharedPrefix)
            if targets is None or positions is None or kv_cache is not None or attention_mask is not None \
                    or position_ids is not None:
                raise ValueError("shared_prefix needs targets and positions, and no kv_cache, attention_mask "
                                 "or position_ids")
            if SharedPrefix.cells(*shared_prefix) <= SharedPrefix.MAX_CELLS:
                shared = SharedPrefix(*shared_prefix, input_ids.device)
                input_ids, position_ids = shared.gather(input_ids), shared.position_ids  # (1, N) each
        if kv_cache is not None:
            slots = kv_cache.slots(T, input_ids.device, bias=not use_triton(input_ids, "auto"))
            position_ids = slots[1] if position_ids is None else position_ids
            attn_mask = None
        else:
            if position_ids is None:
                if attention_mask is None:
                    position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
                else:  # count only real tokens, so a left-padded row gets the positions it has unpadded
                    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
            attn_mask = None
            if attention_mask is not None:
                causal = torch.ones(T, T, dtype=torch.bool, device=input_ids.device).tril()
                attn_mask = causal & attention_mask.bool()[:, None, :]  # (B, T, T): causal, real keys only
                # A padding query with no real key before it would softmax over nothing (NaN): let it see itself.
                attn_mask = (attn_mask | torch.eye(T, dtype=torch.bool, device=input_ids.device))[:, None]

        # The residual stream is fp32 whatever the compute dtype: each block adds its (bf16) output to it. The
        # embedding rows are rounded to the compute dtype first, as FSDP's bf16 gather would round them.
        x = self.model.embed_tokens(input_ids)
        x = cast(cast(x, compute_dtype(self.model.embed_tokens.weight)), torch.float32)  # (B, T, C) fp32
        cos, sin = rope_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, torch.float32)
        for block in self.model.layers:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(block, x, cos, sin, attn_mask, None, None, shared,
                                                      use_reentrant=False)
            else:
                x = block(x, cos, sin, attn_mask, kv_cache, slots, shared)
        x = self.model.norm(x)  # (B, T, C)

        if kv_cache is not None:
            last = kv_cache.advance(slots, attention_mask)  # (B,) column of each row's last new token, or None
            return self.lm_head(x[:, -1] if last is None else x[torch.arange(B, device=x.device), last])  # (B, V)
        if return_hidden:
            return x
        if targets is not None:
            return self._logprobs(x, targets, temperature, positions, shared)
        return self.lm_head(x)  # (B, T, V)

    def _logprobs(self, x, targets, temperature, positions, shared=None):
        """(logp, entropy) of `targets` under the tempered LM head, each (B, T) fp32, through the fused kernel.
        With `positions` only those go through the head: RL scores completion tokens, and with 512-token
        prompts and 128-token completions the prompt positions would be 80% of the head's work. (Index
        tensors, not a mask: a mask's nonzero() would wait for the GPU at every micro-batch.)"""
        B, T, C = x.shape
        # autocast does not reach a custom autograd Function: cast hidden states and the (fp32 master) weight
        # to the compute dtype here, differentiably, as F.linear under autocast would.
        dtype = compute_dtype(x)
        weight = self.lm_head.weight[:self.vocab_limit].to(dtype)  # (V', C): padding rows get no probability
        if positions is None:
            logp, entropy = linear_logprob(x.reshape(B * T, C).to(dtype), weight, targets.reshape(B * T),
                                           temperature, return_entropy=True, impl=self.logprob_impl)
            # Returned as fresh (B, T) tensors, not views: FSDP2 warns about a root module returning views (an
            # in-place op on one would drop its pre-backward hook). The copy is B*T floats.
            return logp.view(B, T).clone(), entropy.view(B, T).clone()
        h = (x[positions] if shared is None else x[0, shared.where(*positions)]).to(dtype)  # (N, C)
        logp, entropy = linear_logprob(h, weight, targets[positions], temperature, return_entropy=True,
                                       impl=self.logprob_impl)
        B, T = targets.shape  # the input's (x is packed under a shared prefix)
        zeros = torch.zeros(B, T, device=x.device)
        return zeros.index_put(positions, logp), zeros.index_put(positions, entropy)  # (B, T) each


def load_model_and_tokenizer(path, dtype=torch.float32, device="cpu"):
    """A checkpoint's model and tokenizer, loaded together so the model can never sample an id the tokenizer
    lacks: a checkpoint's embedding is often padded past the vocabulary (Qwen2.5: 151,936 rows for 151,665
    tokens), and `vocab_limit` keeps the sampler and the fused log-probs on the real ids."""
    model = Transformer.from_pretrained(path, dtype=dtype, device=device)  # first: a missing folder says so
    tok = Tokenizer.from_pretrained(path)
    tok.check_model(model.config.vocab_size)
    model.vocab_limit = tok.vocab_size
    return model, tok
