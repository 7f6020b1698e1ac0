"""Decode attention: one new query per sequence against its KV cache (flash-decoding with split-K).

For row b, query head h and its kv head j = h // (H/K), over the row's first n_b = lengths[b] positions:

    s_t = q[b, h] . k[b, j, t] / sqrt(D)                    t < n_b
    out[b, h] = sum_t softmax(s)_t v[b, j, t]

Positions t >= n_b hold garbage (even NaN) and must not reach the output, so they are never loaded.

Cost: decoding is bound by memory traffic. The kernel reads each valid cached byte once,
2 * B * K * n * D * bytes (keys and values), plus q and out (negligible). FLOPs are 4 * B * H * n * D,
about G = H/K FLOPs per cached byte at bf16: far below the H100's ~300 FLOP/B ridge, hence memory bound.

The two-stage Triton scheme (flash-decoding):
  1. `_split_kernel`, grid (B*K, NUM_SPLITS) on a GPU: program (b, j, s) takes the G query heads of kv head
     j as one 2-D tile (padded to BLOCK_G >= 16 rows for tl.dot), so each K/V tile is read once per group,
     not once per query head. It scans split s of the row's valid positions with an online softmax and writes a
     partial output normalised within the split plus its log-sum-exp. Splitting the length lets a few long
     rows still fill the GPU's ~132 SMs.
  2. `_merge_kernel`: out = sum_s exp(lse_s - lse) o_s with lse = log sum_s exp(lse_s).
With one split the first kernel writes the output directly. Under the interpreter (the CPU) programs run one
after another at milliseconds each, so the launcher packs PACK (row, kv head) pairs into one program and
uses long key tiles; on a GPU PACK = 1.

No backward: decoding runs under no_grad, so there is no autograd.Function.

Versions (check: tests/test_decode_attention.py; timing: bench/bench_decode_attention.py):
  v1  2026-11-25  split-K over each row's own length, 2-D GQA query tile, fp32 partials + LSE merge.
                  Compiles for sm_90 (test_compiles_for_h100); not yet timed on a GPU.
"""
import math

import torch
import triton
import triton.language as tl

from kernels import interpreting, use_triton


# ----------------------------------------------------------------------------- reference (the CPU path)

def decode_bias(lengths, span):
    """(B, 1, 1, span) float32: 0 on each row's first lengths[b] slots, -inf past them. A decode step makes it once
    and every layer adds it to its scores (decode_attention's `bias`): one op per layer instead of the mask's
    and the bounds' five."""
    past = torch.arange(span, device=lengths.device) >= lengths[:, None]  # (B, span)
    return torch.zeros(past.shape, device=lengths.device).masked_fill_(past, -math.inf)[:, None, None, :]


def decode_attention_ref(q, k_cache, v_cache, lengths, bias=None):
    """Plain torch, garbage-safe. q (B, H, D), caches (B, K, S, D), lengths (B,). Returns (B, H, D).
    Computes in float32 (float64 if q is float64) and returns q's dtype. With `bias` (decode_bias(lengths, span),
    span >= every length) the bounds and garbage checks are the caller's: slots past each length must hold
    finite values (nanor1's KVCache keeps them zero)."""
    B, H, D = q.shape
    K = k_cache.shape[1]
    # Slots past every row's length are never touched, so a mostly empty static cache costs nothing; slots
    # below every row's length are valid everywhere. Only the ragged band between holds garbage for some rows.
    if bias is None:
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > k_cache.shape[2]:  # the range check, from the bounds this path needs anyway
            raise ValueError(f"lengths must lie in [1, {k_cache.shape[2]}], got {lengths.tolist()}")
    else:  # the span the bias covers; lo = hi: no ragged band to re-check below (the caller vouches)
        lo = hi = bias.shape[-1]
    dt = torch.float64 if q.dtype == torch.float64 else torch.float32
    as_dt = lambda t: t if t.dtype == dt else t.to(dt)  # noqa: E731  (no op dispatched when it already is)
    k = as_dt(k_cache[:, :, :hi])  # (B, K, hi, D), a view when already dt
    v = as_dt(v_cache[:, :, :hi])
    qg = as_dt(q.reshape(B, K, H // K, D))  # (B, K, G, D): the G query heads that share kv head j
    scores = torch.matmul(qg, k.transpose(-1, -2)).div_(math.sqrt(D))  # (B, K, G, hi), batched: no repeat of k
    if bias is None:
        valid = torch.arange(hi, device=q.device) < lengths[:, None]  # (B, hi)
        # `where`, not a multiply by the mask: garbage may be NaN, and NaN * 0 is NaN.
        scores = torch.where(valid[:, None, None, :], scores, -math.inf)
    else:
        scores += bias  # finite garbage + -inf = -inf
    p = torch.softmax(scores, dim=-1)  # (B, K, G, hi)
    # p is 0 on garbage slots, and 0 x garbage is 0 while the garbage is finite (the rollout engine's cache is
    # zeroed when made): one batched matmul. 0 x NaN or inf is NaN: then the band's garbage is zeroed (a copy
    # of the band only) and its part redone. (A rollout's rows differ in length by a few slots, and a third
    # matmul over B*K tiny matrices cost a quarter of this function on the CPU.)
    out = torch.matmul(p, v)  # (B, K, G, D)
    if hi > lo and not bool(torch.isfinite(out).all()):
        band = torch.where(valid[:, None, lo:, None], v[:, :, lo:], 0.0)  # (B, K, hi - lo, D)
        out = torch.matmul(p[..., :lo], v[:, :, :lo]) + torch.matmul(p[..., lo:], band)
    out = out.reshape(B, H, D)
    return out if out.dtype == q.dtype else out.to(q.dtype)


# ----------------------------------------------------------------------------- Triton kernels

@triton.jit
def _split_kernel(
    q_ptr,  # (B, H, D) queries, last dim contiguous
    k_ptr,  # (B, K, S, D) key cache, last dim contiguous, any other strides
    v_ptr,  # (B, K, S, D) value cache, same
    len_ptr,  # (B,) valid positions per row
    out_ptr,  # NUM_SPLITS == 1: (B, H, D) final output in q's dtype; else (B, H, NUM_SPLITS, D) fp32 partials
    lse_ptr,  # (B, H, NUM_SPLITS) fp32 log-sum-exp (natural log) of each split's scaled scores
    stride_qb, stride_qh,  # q strides (elements)
    stride_kb, stride_kk, stride_ks,  # key cache strides
    stride_vb, stride_vk, stride_vs,  # value cache strides
    stride_ob, stride_oh, stride_os,  # output strides (stride_os unused with one split)
    qk_scale,  # log2(e) / sqrt(D): scores go straight to base 2 for exp2
    B, K, D,  # rows, kv heads, head dim
    G: tl.constexpr,  # query heads per kv head
    NUM_SPLITS: tl.constexpr,
    PACK: tl.constexpr,  # (row, kv head) pairs per program: 1 on a GPU, many when interpreting
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr,  # load as fp32 (the interpreter's bf16 arithmetic is wrong)
    PRECISION: tl.constexpr,  # tl.dot input precision: "ieee" for fp32 caches (TF32 would cost 1e-3)
):
    # PACK pairs share one program by stacking: their query tiles along the rows (PACK * BLOCK_G) and their
    # key tiles along the columns (PACK * BLOCK_N); a query row only sees the columns of its own pair. That
    # block-diagonal waste is free under the interpreter, whose cost is per op; with PACK = 1 it is a no-op.
    split = tl.program_id(1)
    offs_m = tl.arange(0, PACK * BLOCK_G)  # query rows of the tile
    offs_c = tl.arange(0, PACK * BLOCK_N)  # key columns of the tile
    offs_d = tl.arange(0, BLOCK_D)
    pair_m = tl.program_id(0) * PACK + offs_m // BLOCK_G  # flat b * K + j of each query row
    pair_c = tl.program_id(0) * PACK + offs_c // BLOCK_N  # ... and of each key column
    head_m = (pair_m % K) * G + offs_m % BLOCK_G  # query head of each row: group j's heads are j*G .. j*G+G-1
    mask_m = (offs_m % BLOCK_G < G) & (pair_m < B * K)
    mask_d = offs_d < D
    b_c = pair_c // K
    n_c = tl.load(len_ptr + b_c, mask=pair_c < B * K, other=0).to(tl.int32)  # row length, per column
    # Each split takes an equal share of its row's own tiles: work balances whatever the lengths.
    tiles_c = tl.cdiv(tl.cdiv(n_c, BLOCK_N), NUM_SPLITS)
    start_c = split * tiles_c * BLOCK_N + offs_c % BLOCK_N
    end_c = tl.minimum(split * tiles_c * BLOCK_N + tiles_c * BLOCK_N, n_c)
    k_col = k_ptr + b_c * stride_kb + (pair_c % K) * stride_kk  # (PACK * BLOCK_N,) base of each column's row
    v_col = v_ptr + b_c * stride_vb + (pair_c % K) * stride_vk

    q = tl.load(q_ptr + (pair_m // K)[:, None] * stride_qb + head_m[:, None] * stride_qh + offs_d[None, :],
                mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # (M, BLOCK_D), padding rows 0
    if UPCAST:
        q = q.to(tl.float32)
    m = tl.full([PACK * BLOCK_G], -float("inf"), tl.float32)  # running max of base-2 scores
    l = tl.zeros([PACK * BLOCK_G], tl.float32)  # running sum of 2^(s - m)
    acc = tl.zeros([PACK * BLOCK_G, BLOCK_D], tl.float32)  # running sum of 2^(s - m) v
    for i in range(0, tl.max(tiles_c)):
        pos = start_c + i * BLOCK_N  # (PACK * BLOCK_N,) cache slot of each column
        mask_c = pos < end_c  # masked lanes are never loaded: garbage (NaN) cannot enter
        kt = tl.load(k_col[None, :] + pos[None, :] * stride_ks + offs_d[:, None],
                     mask=mask_c[None, :] & mask_d[:, None], other=0.0)  # (BLOCK_D, PACK * BLOCK_N), K^T
        v = tl.load(v_col[:, None] + pos[:, None] * stride_vs + offs_d[None, :],
                    mask=mask_c[:, None] & mask_d[None, :], other=0.0)  # (PACK * BLOCK_N, BLOCK_D)
        if UPCAST:
            kt = kt.to(tl.float32)
            v = v.to(tl.float32)
        s = tl.dot(q, kt, input_precision=PRECISION) * qk_scale  # (M, PACK * BLOCK_N)
        s = tl.where(mask_c[None, :] & (pair_m[:, None] == pair_c[None, :]), s, -float("inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        m_ref = tl.where(m_new == -float("inf"), 0.0, m_new)  # a row with nothing seen yet: avoid -inf - -inf
        alpha = tl.exp2(m - m_ref)  # rescales what was summed under the old max
        p = tl.exp2(s - m_ref[:, None])
        l = l * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
        m = m_new

    nonempty = l > 0  # a split past the row's end saw nothing: o = 0, lse = -inf, weight 0 in the merge
    o = acc / tl.where(nonempty, l, 1.0)[:, None]
    out_rows = out_ptr + (pair_m // K) * stride_ob + head_m * stride_oh  # (M,)
    if NUM_SPLITS == 1:
        tl.store(out_rows[:, None] + offs_d[None, :], o.to(out_ptr.dtype.element_ty),
                 mask=mask_m[:, None] & mask_d[None, :])
    else:
        tl.store(out_rows[:, None] + split * stride_os + offs_d[None, :], o, mask=mask_m[:, None] & mask_d[None, :])
        lse = tl.where(nonempty, (m + tl.log2(tl.where(nonempty, l, 1.0))) * 0.6931471805599453, -float("inf"))
        tl.store(lse_ptr + ((pair_m // K) * K * G + head_m) * NUM_SPLITS + split, lse, mask=mask_m)


@triton.jit
def _merge_kernel(
    part_ptr,  # (B, H, NUM_SPLITS, D) fp32 partial outputs, contiguous
    lse_ptr,  # (B, H, NUM_SPLITS) fp32 log-sum-exp per split, contiguous
    out_ptr,  # (B, H, D) output, contiguous
    BH, D,  # number of (row, head) pairs; head dim
    NUM_SPLITS: tl.constexpr,
    HEADS: tl.constexpr,  # (row, head) pairs per program: many when interpreting, few on a GPU
    BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * HEADS + tl.arange(0, HEADS)  # flat b * H + h
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    mask_r = rows < BH
    mask_rs = mask_r[:, None] & (offs_s[None, :] < NUM_SPLITS)
    lse = tl.load(lse_ptr + rows[:, None] * NUM_SPLITS + offs_s[None, :], mask=mask_rs,
                  other=-float("inf"))  # (HEADS, BLOCK_S)
    lse = tl.where(mask_r[:, None], lse, 0.0)  # padding rows past B*H: finite, so no 0/0 (never stored)
    top = tl.max(lse, 1)  # finite: split 0 of every row is non-empty (lengths >= 1)
    w = tl.exp(lse - top[:, None])  # (HEADS, BLOCK_S), 0 for empty splits
    w = w / tl.sum(w, 1)[:, None]
    part = tl.load(part_ptr + (rows[:, None, None] * NUM_SPLITS + offs_s[None, :, None]) * D + offs_d[None, None, :],
                   mask=mask_rs[:, :, None] & (offs_d[None, None, :] < D), other=0.0)  # (HEADS, BLOCK_S, BLOCK_D)
    o = tl.sum(w[:, :, None] * part, 1)  # (HEADS, BLOCK_D)
    tl.store(out_ptr + rows[:, None] * D + offs_d[None, :], o.to(out_ptr.dtype.element_ty),
             mask=mask_r[:, None] & (offs_d[None, :] < D))


# ----------------------------------------------------------------------------- launcher

def _check(q, k_cache, v_cache, lengths):
    if q.dim() != 3 or k_cache.dim() != 4 or k_cache.shape != v_cache.shape:
        raise ValueError(f"want q (B, H, D) and equal caches (B, K, S, D), got q {tuple(q.shape)}, "
                         f"k {tuple(k_cache.shape)}, v {tuple(v_cache.shape)}")
    B, H, D = q.shape
    if k_cache.shape[0] != B or k_cache.shape[3] != D or H % k_cache.shape[1] != 0:
        raise ValueError(f"cache {tuple(k_cache.shape)} does not fit q {tuple(q.shape)}: need the same B and D "
                         f"and H a multiple of K")
    if lengths.shape != (B,) or lengths.dtype.is_floating_point:
        raise ValueError(f"lengths must be an integer tensor of shape ({B},), got {lengths.dtype} "
                         f"{tuple(lengths.shape)}")
    # The range of lengths is checked by each path (see decode_attention), where it costs nothing extra.


def _num_splits(B, K, S):
    """Enough (row, kv head, split) programs to give every SM a few; fewer under the interpreter, where
    programs run one after another and each costs milliseconds."""
    if interpreting():
        return 1
    sms = torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count
    # At least 256 positions per split: below that the fp32 partials (B * H * splits * D * 4 bytes, written
    # and read back) start to rival the cache bytes the split saves time on.
    return max(1, min(triton.cdiv(4 * sms, B * K), triton.cdiv(S, 256), 64))


def decode_attention_triton(q, k_cache, v_cache, lengths, num_splits=None, block_n=None, pack=None):
    """The Triton path. num_splits, block_n and pack override the defaults (tests run the GPU's tiling
    under the interpreter; benchmarks sweep)."""
    B, H, D = q.shape
    K, S = k_cache.shape[1], k_cache.shape[2]
    G = H // K
    # The kernels index the last dim as offs_d: it must be contiguous. Other strides are passed through, so a
    # cache that is a view (cache[layer] of one (L, B, K, S, D) buffer, a batch slice) needs no copy.
    assert q.stride(-1) == 1 and k_cache.stride(-1) == 1 and v_cache.stride(-1) == 1, "last dim must be contiguous"
    assert q.device == k_cache.device == v_cache.device == lengths.device
    if not q.is_cuda and not interpreting():
        raise ValueError("the Triton path needs CUDA tensors, or TRITON_INTERPRET=1 set before importing triton")
    NS = num_splits or _num_splits(B, K, S)
    BLOCK_G = max(16, triton.next_power_of_2(G))  # tl.dot needs >= 16 rows on NVIDIA
    BLOCK_D = max(16, triton.next_power_of_2(D))
    if interpreting():  # the cost is per op, not per byte: big tiles, several pairs per program
        BLOCK_N = block_n or min(256, max(16, triton.next_power_of_2(S)))
        PACK = pack or min(triton.next_power_of_2(B * K), max(1, 1024 // BLOCK_N))
    else:
        BLOCK_N, PACK = block_n or (64 if D <= 64 else 32), pack or 1
    assert BLOCK_G >= 16 and BLOCK_N >= 16 and BLOCK_D >= 16, "tl.dot blocks must be >= 16"
    # fp32 loads where the interpreter's half-precision arithmetic is wrong, or where q and cache dtypes differ.
    upcast = (interpreting() and q.dtype in (torch.bfloat16, torch.float16)) or k_cache.dtype != q.dtype
    precision = "ieee" if torch.float32 in (q.dtype, k_cache.dtype) else "tf32"
    out = torch.empty(B, H, D, device=q.device, dtype=q.dtype)
    lengths = lengths.contiguous()
    if NS == 1:
        part, lse = out, out  # lse unused
    else:
        part = torch.empty(B, H, NS, D, device=q.device, dtype=torch.float32)
        lse = torch.empty(B, H, NS, device=q.device, dtype=torch.float32)
    _split_kernel[(triton.cdiv(B * K, PACK), NS)](
        q, k_cache, v_cache, lengths, part, lse,
        q.stride(0), q.stride(1),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2),
        part.stride(0), part.stride(1), part.stride(2) if NS > 1 else 0,
        math.log2(math.e) / math.sqrt(D), B, K, D,
        G=G, NUM_SPLITS=NS, PACK=PACK, BLOCK_G=BLOCK_G, BLOCK_N=BLOCK_N, BLOCK_D=BLOCK_D,
        UPCAST=upcast, PRECISION=precision, num_warps=4,
    )
    if NS > 1:
        # (heads per merge program; pack=1 asks for the GPU configuration throughout)
        HEADS = min(256, triton.next_power_of_2(B * H)) if interpreting() and pack != 1 else 1
        _merge_kernel[(triton.cdiv(B * H, HEADS),)](
            part, lse, out, B * H, D, NUM_SPLITS=NS, HEADS=HEADS,
            BLOCK_S=max(2, triton.next_power_of_2(NS)), BLOCK_D=BLOCK_D,
        )
    return out


# ----------------------------------------------------------------------------- dispatch

def decode_attention(q, k_cache, v_cache, lengths, impl="auto", num_splits=None, bias=None):
    """Attention of one query per row over its cache. q (B, H, D), k_cache/v_cache (B, K, S, D) with
    H a multiple of K, lengths (B,) ints in [1, S]. Returns (B, H, D) in q's dtype.
    impl: "auto" (Triton on CUDA or with NANOR1_TRITON=1), "triton" or "torch"; num_splits overrides the
    Triton split count (tests, benchmarks); bias: the torch path's mask, made once per decode step
    (decode_bias; see decode_attention_ref), which the Triton path does not need."""
    _check(q, k_cache, v_cache, lengths)
    if use_triton(q, impl):
        # Lengths in range: checked here when interpreted; on a GPU reading them would wait for the device, and
        # the kernel never loads past a length. (The torch path checks from the min and max it reads anyway.)
        if not lengths.is_cuda and not bool(((lengths >= 1) & (lengths <= k_cache.shape[2])).all()):
            raise ValueError(f"lengths must lie in [1, {k_cache.shape[2]}], got {lengths.tolist()}")
        return decode_attention_triton(q, k_cache, v_cache, lengths, num_splits)
    return decode_attention_ref(q, k_cache, v_cache, lengths, bias)


if __name__ == "__main__":
    # python -m kernels.decode_attention: check against the float64 reference, then time (on a GPU). On the CPU
    # the Triton path runs in the interpreter: TRITON_INTERPRET=1 python -m kernels.decode_attention
    import time
    cuda = torch.cuda.is_available()
    if not cuda and not interpreting():
        raise SystemExit("needs CUDA, or TRITON_INTERPRET=1 for the interpreter")
    dev = "cuda" if cuda else "cpu"
    B, H, K, S, D = (64, 14, 2, 4096, 64) if cuda else (2, 4, 2, 100, 32)
    dt = torch.bfloat16 if cuda else torch.float32
    q = torch.randn(B, H, D, device=dev, dtype=dt)
    k, v = (torch.randn(B, K, S, D, device=dev, dtype=dt) for _ in range(2))
    lengths = torch.randint(1, S + 1, (B,), device=dev)
    ref = decode_attention_ref(q.double(), k.double(), v.double(), lengths)
    out = decode_attention(q, k, v, lengths, impl="triton")
    print(f"max |triton - float64 ref| = {(out.double() - ref).abs().max().item():.2e}")
    if cuda:
        for _ in range(3):
            decode_attention(q, k, v, lengths, impl="triton")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            decode_attention(q, k, v, lengths, impl="triton")
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) / 20 * 1e3
        gb = 2 * K * int(lengths.sum()) * D * k.element_size() / 1e9
        print(f"B={B} H={H} K={K} S={S} D={D}: {ms:.3f} ms, {gb / ms * 1e3:.0f} GB/s (see bench/)")
