"""Fused linear log-prob: logp_n = log_softmax(h_n @ W.T / T)[y_n], without ever writing the (N, V) logits.

GRPO needs the log-probability of every sampled token (under the policy, the old policy, the reference).
The textbook route writes the logits, a (N, V) tensor: 16k tokens x Qwen's 151,936-token vocabulary is
9.96 GB in fp32, and log_softmax writes as much again. Here the vocabulary is walked one tile at a time.

Math, per token n with hidden h (C,), target y and temperature T, logits z_v = h . W_v / T:

    lse     = log sum_v exp(z_v)        online over tiles: m = running max, s = sum exp(z - m),
                                        t = sum exp(z - m)(z - m); lse = m + log s
    logp    = z_y - lse
    entropy = -sum_v p_v log p_v = log s - t / s,   p = exp(z - lse)

Backward, with upstream grads g (of logp) and e (of entropy), both (N,):

    dz_v = g (1[v = y] - p_v) - e p_v (log p_v + entropy)          (N, V), never whole
    dh   = dz @ W / T                                               (N, C)
    dW   = dz.T @ h / T                                             (V, C)

FLOPs: the forward is one (N, C) x (C, V) matmul, 2NVC; the backward recomputes it and does two more,
6NVC, so 8NVC in all against the naive 6NVC: one extra matmul buys never storing logits.

Two implementations of the same math, picked by `impl` (see `linear_logprob`):
- torch: groups of the vocabulary; the forward merges running statistics group by group, the backward
  recomputes each group's logits and gets its dW rows over all N in one matmul. The BLAS accumulates in
  fp32 but rounds each logit to the input dtype, as the naive path does (bf16: 2^-9 of |z|).
- Triton: `_fwd_kernel` keeps a (BLOCK_N, BLOCK_V) logits tile in registers (fp32 accumulation, each
  logit then rounded to bf16 for bf16 inputs, like the torch path) and updates (m, s, t, z_y) tile by
  tile; no logit leaves the chip. Each row block reads its h rows and all
  of W (2VC bytes, shared through L2 by the row blocks running together) and writes 16 bytes per token
  per split: the grid also splits V so that a short N still fills the SMs, and a torch epilogue merges.
  The backward: `_dz_kernel` recomputes logits tile by tile and writes dz for one vocabulary chunk (a slab
  of <= SLAB_BYTES, W's dtype); `_matmul_kernel` then does dh += dz @ W_chunk into an fp32 (N, C) buffer
  and dW_chunk = dz.T @ h over all N in fp32 registers, rounded once (a bf16 dW summed across tiles
  drifts silently). Why a slab: dh and dW each need an accumulator C wide (896 for Qwen2.5-0.5B), too
  wide for registers beside a logits tile. The fully fused alternative (Cut Cross-Entropy, Wijmans et al.
  2024) atomically adds each (N, V) tile's share into dh and dW: NVC (1/BLOCK_N + 1/BLOCK_V) fp32
  atomics, ~35 G at N=16384 with 128-wide tiles, in a non-deterministic order. The slab instead costs
  6NV bytes (written once, read twice: 15 GB at N=16384, ~4.5 ms of H100 HBM) and stays deterministic.

Rounding the logits matters: the rollout samples from the LM head's bf16 logits (nanor1/rollout.py), and the
importance ratio and `logprob_mismatch` compare the trainer's log-probs with the sampler's. Unrounded fp32
logits of std 8 differ from the rounded ones by 2e-2 to 5e-2 nats on average (0.12 to 0.17 at worst);
rounded in both, the two agree to 1e-6 (tests/test_logprob.py).

Dtypes: hidden and weight are fp32 or bf16. When they differ, hidden is cast to weight's dtype (autocast
does not reach a custom autograd Function; W sets the matmul precision and the cast copies only (N, C)).
Outputs are fp32. Both logp and entropy carry gradients (the entropy term is one multiply-add per logit).
"""
import math

import torch
import triton
import triton.language as tl

from kernels import interpreting, use_triton

TORCH_GROUP_BYTES = 16 << 20  # torch path on the CPU: (N, Vg) logits of one matmul group, input dtype
TORCH_TILE_BYTES = 4 << 20  # torch path on the CPU: (R, Vg) fp32 elementwise tile, ~L2-sized
SLAB_BYTES = 256 << 20  # dz slab of one vocabulary chunk in the Triton backward (256 MiB)
NEG = tl.constexpr(-1e30)  # finite "minus infinity": exp(NEG - m) = 0 and 0 * NEG = 0; -inf would give NaN


def _empty(shape, dtype, device):
    """Every buffer a kernel must fill comes from here, so tests can poison it with NaN."""
    return torch.empty(shape, dtype=dtype, device=device)


# ----------------------------------------------------------------------------- reference

def linear_logprob_reference(hidden, weight, targets, temperature=1.0):
    """The textbook version, materialising the (N, V) logits. For tests (in float64) and benchmarks.
    Returns (logp, entropy), each (N,) in the inputs' dtype."""
    logp_all = torch.log_softmax(hidden @ weight.T / temperature, dim=-1)  # (N, V)
    logp = logp_all.gather(1, targets[:, None]).squeeze(1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


# ----------------------------------------------------------------------------- torch path (vocabulary groups)

def _torch_blocks(N, V, hidden):
    """(Vg, R): vocabulary columns per matmul group and token rows per elementwise tile.

    On the CPU, a (N, Vg) group of logits in the input dtype (<= TORCH_GROUP_BYTES) keeps the matmuls
    large, and the fp32 elementwise work runs on (R, Vg) row tiles (<= TORCH_TILE_BYTES) that stay in
    cache: measured on a 2-core machine (2 MB L2 per core), fp32 elementwise passes cost ~5x more per
    element on 32 MB than on 2 MB, and 16 MB groups with 2-4 MB tiles ran fastest (0.86 s vs 0.94 s for
    untiled groups, 0.95 s for 512-column groups). On a GPU, one tile spans all rows of a group."""
    if hidden.device.type != "cpu":
        return min(V, max(128, SLAB_BYTES // (4 * max(N, 1)))), max(N, 1)
    vg = min(V, max(128, TORCH_GROUP_BYTES // (hidden.element_size() * max(N, 1))))
    return vg, max(1, min(N, TORCH_TILE_BYTES // (4 * vg)))


def _view(buf, rows, width):
    """A contiguous (rows, width) view at the start of a flat work buffer."""
    return buf[:rows * width].view(rows, width)


def _in_group(targets, v0, width):
    """Column of each target inside the group [v0, v0 + width), clamped, and whether it is really there."""
    idx = targets - v0
    inside = (idx >= 0) & (idx < width)
    return idx.clamp(0, width - 1)[:, None], inside  # (N, 1), (N,)


# Both passes walk groups of Vg vocabulary columns, each cut into tiles of R token rows for the fp32
# elementwise work. Work buffers are allocated once per call (fresh ones page-fault on every group), and
# each elementwise pass works in place or writes where the next one reads.

def _torch_forward(hidden, weight, targets, inv_t, with_entropy):
    N, V = hidden.shape[0], weight.shape[0]
    (vg, R), dev = _torch_blocks(N, V, hidden), hidden.device
    a_buf = torch.empty(N * vg, dtype=hidden.dtype, device=dev)  # raw logits a = h . W_v of a group
    d_buf = torch.empty(R * vg, device=dev)  # fp32 z - m of a tile
    e_buf = torch.empty(R * vg, device=dev) if with_entropy else None  # fp32 exp(z - m) of a tile
    # Running statistics over the groups seen so far, as in the kernel: max m (of the raw logits;
    # z = a / T has the same argmax), s = sum exp(z - m/T), t = sum exp(z - m/T)(z - m/T). The shift
    # spares the entropy log s - t/s the cancellation of lse - E[z].
    m = torch.full((N,), NEG.value, device=dev)
    s, t, a_y, s_g, t_g = (torch.zeros(N, device=dev) for _ in range(5))
    for v0 in range(0, V, vg):
        w_group = weight[v0:v0 + vg]
        width = w_group.shape[0]
        a = torch.mm(hidden, w_group.T, out=_view(a_buf, N, width))  # (N, Vg), fp32 accumulation
        idx, inside = _in_group(targets, v0, width)
        a_y += torch.where(inside, a.gather(1, idx).squeeze(1).float(), 0.0)
        m_new = torch.empty_like(m)
        for r0 in range(0, N, R):
            rows, r = slice(r0, min(r0 + R, N)), min(R, N - r0)
            d = _view(d_buf, r, width).copy_(a[rows])  # (R, Vg) fp32, in L2 from here on
            torch.maximum(m[rows], d.amax(1), out=m_new[rows])
            d.sub_(m_new[rows, None])  # a - m'
            if inv_t != 1.0:
                d.mul_(inv_t)  # z - m'/T
            if with_entropy:
                ez = torch.exp(d, out=_view(e_buf, r, width))
                torch.sum(ez, 1, out=s_g[rows])
                torch.sum(ez.mul_(d), 1, out=t_g[rows])
            else:
                torch.sum(d.exp_(), 1, out=s_g[rows])
        alpha = torch.exp((m - m_new) * inv_t)  # rescales the old sums to the new max
        if with_entropy:  # the old part of t shifts as alpha (t + s (m - m')/T), before s moves
            t = alpha * (t + s * (m - m_new) * inv_t) + t_g
        s = alpha * s + s_g
        m = m_new
    lse = m * inv_t + torch.log(s)
    return a_y * inv_t - lse, lse, (torch.log(s) - t / s if with_entropy else torch.zeros_like(lse))


def _torch_backward(hidden, weight, targets, lse, entropy, g, e, inv_t, need_dh, need_dw):
    (N, C), V, dev = hidden.shape, weight.shape[0], hidden.device
    vg, R = _torch_blocks(N, V, hidden)
    dh = torch.zeros(N, C, device=dev) if need_dh else None  # fp32 across groups
    dw = _empty(weight.shape, weight.dtype, dev) if need_dw else None  # group rows written once, all N
    a_buf = torch.empty(N * vg, dtype=hidden.dtype, device=dev)
    dz_buf = torch.empty(N * vg, dtype=hidden.dtype, device=dev)
    d_buf = torch.empty(R * vg, device=dev)  # fp32 log p, then p, of a tile
    e_buf = torch.empty(R * vg, device=dev) if e is not None else None  # fp32 p (entropy term)
    shift = lse / inv_t  # log p = (a - lse T) / T
    # dz = -(p - 1[v=y]) g / T without the entropy, -(p (g + e (log p + H)) - g 1[v=y]) / T with it
    row = -inv_t * g if e is None else torch.full_like(g, -inv_t)
    for v0 in range(0, V, vg):
        w_group = weight[v0:v0 + vg]
        width = w_group.shape[0]
        a = torch.mm(hidden, w_group.T, out=_view(a_buf, N, width))  # (N, Vg) recomputed
        dz = _view(dz_buf, N, width)  # (N, Vg) in the input dtype
        idx, inside = _in_group(targets, v0, width)
        for r0 in range(0, N, R):
            rows, r = slice(r0, min(r0 + R, N)), min(R, N - r0)
            logp = _view(d_buf, r, width).copy_(a[rows]).sub_(shift[rows, None])  # (R, Vg)
            if inv_t != 1.0:
                logp.mul_(inv_t)
            if e is None:
                q = logp.exp_()  # p
                q.scatter_add_(1, idx[rows], -inside[rows, None].float())  # p - 1[v=y]
            else:
                q = torch.exp(logp, out=_view(e_buf, r, width))
                q.mul_(logp.add_(entropy[rows, None]).mul_(e[rows, None]).add_(g[rows, None]))
                q.scatter_add_(1, idx[rows], -torch.where(inside[rows], g[rows], 0.0)[:, None])
            dz[rows] = q.mul_(row[rows, None])
        if need_dh:
            dh += dz @ w_group  # (N, Vg) x (Vg, C)
        if need_dw:
            torch.mm(dz.T, hidden, out=dw[v0:v0 + width])  # (Vg, N) x (N, C), all N at once
    return (dh.to(hidden.dtype) if need_dh else None), dw


# ----------------------------------------------------------------------------- Triton kernels

@triton.jit
def _logits_tile(
    h_ptr, w_ptr, rows, cols, row_ok, col_ok, C, stride_h, stride_w, inv_t,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    Z_BF16: tl.constexpr,  # round each logit h . W_v to bf16 before / T, as the sampler's bf16 matmul does
    HAND: tl.constexpr,  # round by hand (the interpreter truncates fp32 -> bf16, see _cast_for)
):
    """(BLOCK_N, BLOCK_V) fp32 tile of z = h @ W.T / T; columns past V are NEG."""
    acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cs = c0 + tl.arange(0, BLOCK_C)
        c_ok = cs < C
        h = tl.load(h_ptr + rows[:, None] * stride_h + cs[None, :],
                    mask=row_ok[:, None] & c_ok[None, :], other=0.0)  # (BLOCK_N, BLOCK_C)
        wt = tl.load(w_ptr + cols[None, :] * stride_w + cs[:, None],
                     mask=col_ok[None, :] & c_ok[:, None], other=0.0)  # (BLOCK_C, BLOCK_V), W transposed
        if UPCAST:
            h = h.to(tl.float32)
            wt = wt.to(tl.float32)
        acc = tl.dot(h, wt, acc, input_precision=PRECISION)
    if Z_BF16:
        acc = _round_bf16(acc, HAND)
    return tl.where(col_ok[None, :], acc * inv_t, NEG)


@triton.jit
def _round_bf16(x, HAND: tl.constexpr):
    """fp32 x rounded to the nearest bf16 (ties to even), kept in fp32."""
    if HAND:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True)
    return x.to(tl.bfloat16).to(tl.float32)


@triton.jit
def _cast_for(x, ptr, ROUND: tl.constexpr):
    """fp32 x cast to ptr's element type. The interpreter truncates fp32 -> bf16 (a bias of -2^-9 that
    adds up in dW), so under it ROUND first rounds to the nearest even bf16 by hand, making the cast exact."""
    if ROUND:
        x = _round_bf16(x, True)
    return x.to(ptr.dtype.element_ty)


@triton.jit
def _fwd_kernel(
    h_ptr,  # (N, C) hidden, unit column stride
    w_ptr,  # (V, C) weight, unit column stride
    y_ptr,  # (N,) targets
    part_ptr,  # (4, S, N) fp32 per split: max m, sum exp(z - m), sum exp(z - m)(z - m), target logit
    N, V, C,
    stride_h, stride_w,  # row strides of hidden and weight (elements)
    stride_pk, stride_ps,  # strides of part's first two dims
    inv_t,  # 1 / temperature
    tiles_per_split,  # V tiles each split scans
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr,
    ENTROPY: tl.constexpr,  # also accumulate t (otherwise part[2] is left unwritten)
    UPCAST: tl.constexpr,  # load as fp32 (the interpreter's bf16 arithmetic is wrong)
    PRECISION: tl.constexpr,  # tl.dot input precision: "ieee" for fp32 inputs (TF32 would cost 1e-3)
    Z_BF16: tl.constexpr, HAND: tl.constexpr,  # see _logits_tile
):
    pid_n, split = tl.program_id(0), tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    y = tl.load(y_ptr + rows, mask=row_ok, other=-1)
    m = tl.full((BLOCK_N,), NEG, dtype=tl.float32)
    s = tl.zeros((BLOCK_N,), dtype=tl.float32)
    t = tl.zeros((BLOCK_N,), dtype=tl.float32)
    z_y = tl.zeros((BLOCK_N,), dtype=tl.float32)
    first = split * tiles_per_split
    last = tl.minimum(first + tiles_per_split, tl.cdiv(V, BLOCK_V))
    for tile in range(first, last):
        cols = tile * BLOCK_V + tl.arange(0, BLOCK_V)
        z = _logits_tile(h_ptr, w_ptr, rows, cols, row_ok, cols < V, C, stride_h, stride_w, inv_t,
                         BLOCK_N, BLOCK_V, BLOCK_C, UPCAST, PRECISION, Z_BF16, HAND)  # (BLOCK_N, BLOCK_V)
        m_new = tl.maximum(m, tl.max(z, axis=1))
        alpha = tl.exp(m - m_new)  # rescales the old sums to the new max
        ez = tl.exp(z - m_new[:, None])
        if ENTROPY:  # sum e^(z-m')(z-m') = e^(m-m') (t + s (m - m')) for the old part, before s moves
            t = alpha * (t + s * (m - m_new)) + tl.sum(ez * (z - m_new[:, None]), axis=1)
        s = alpha * s + tl.sum(ez, axis=1)
        m = m_new
        z_y += tl.sum(tl.where(cols[None, :] == y[:, None], z, 0.0), axis=1)  # only one split sees y
    out = part_ptr + split * stride_ps + rows
    tl.store(out, m, mask=row_ok)
    tl.store(out + stride_pk, s, mask=row_ok)
    if ENTROPY:
        tl.store(out + 2 * stride_pk, t, mask=row_ok)
    tl.store(out + 3 * stride_pk, z_y, mask=row_ok)


@triton.jit
def _dz_kernel(
    h_ptr, w_ptr, y_ptr,  # as in _fwd_kernel
    lse_ptr, ent_ptr,  # (N,) fp32 saved by the forward
    g_ptr, e_ptr,  # (N,) fp32 upstream grads of logp and entropy (e_ptr unused unless HAS_E)
    dz_ptr,  # (N, >= v_end - v_start) slab in W's dtype, unit column stride
    N, C, v_start, v_end,  # this call covers vocabulary columns [v_start, v_end)
    stride_h, stride_w, stride_dz,  # row strides (elements)
    inv_t,
    BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_C: tl.constexpr,
    HAS_E: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    ROUND: tl.constexpr,  # round bf16 stores by hand (interpreter only, see _cast_for)
    Z_BF16: tl.constexpr, HAND: tl.constexpr,  # see _logits_tile
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    cols = v_start + tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    row_ok, col_ok = rows < N, cols < v_end
    z = _logits_tile(h_ptr, w_ptr, rows, cols, row_ok, col_ok, C, stride_h, stride_w, inv_t,
                     BLOCK_N, BLOCK_V, BLOCK_C, UPCAST, PRECISION, Z_BF16, HAND)  # recomputed, (BLOCK_N, BLOCK_V)
    lse = tl.load(lse_ptr + rows, mask=row_ok, other=0.0)
    g = tl.load(g_ptr + rows, mask=row_ok, other=0.0)
    y = tl.load(y_ptr + rows, mask=row_ok, other=-1)
    logp = z - lse[:, None]
    p = tl.exp(logp)
    coef = g[:, None]
    if HAS_E:
        ent = tl.load(ent_ptr + rows, mask=row_ok, other=0.0)
        e = tl.load(e_ptr + rows, mask=row_ok, other=0.0)
        coef = coef + e[:, None] * (logp + ent[:, None])
    dz = tl.where(cols[None, :] == y[:, None], g[:, None], 0.0) - p * coef
    out = dz_ptr + rows[:, None] * stride_dz + (cols - v_start)[None, :]
    tl.store(out, _cast_for(dz * inv_t, dz_ptr, ROUND), mask=row_ok[:, None] & col_ok[None, :])


@triton.jit
def _matmul_kernel(
    a_ptr,  # (M, K) any strides
    b_ptr,  # (K, P) any strides
    c_ptr,  # (M, P) output, any strides; read first when ACCUMULATE
    M, P, K,
    stride_am, stride_ak, stride_bk, stride_bp, stride_cm, stride_cp,
    BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
    ACCUMULATE: tl.constexpr,  # c += a @ b (c fp32) instead of c = a @ b
    UPCAST: tl.constexpr, PRECISION: tl.constexpr, ROUND: tl.constexpr,
):
    """c (+)= a @ b with an fp32 accumulator over the whole K loop, cast once to c's dtype."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rp = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    acc = tl.zeros((BLOCK_M, BLOCK_P), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(a_ptr + rm[:, None] * stride_am + rk[None, :] * stride_ak,
                    mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)  # (BLOCK_M, BLOCK_K)
        b = tl.load(b_ptr + rk[:, None] * stride_bk + rp[None, :] * stride_bp,
                    mask=(rk[:, None] < K) & (rp[None, :] < P), other=0.0)  # (BLOCK_K, BLOCK_P)
        if UPCAST:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    c = c_ptr + rm[:, None] * stride_cm + rp[None, :] * stride_cp
    ok = (rm[:, None] < M) & (rp[None, :] < P)
    if ACCUMULATE:
        acc += tl.load(c, mask=ok, other=0.0)
    tl.store(c, _cast_for(acc, c_ptr, ROUND), mask=ok)


# ----------------------------------------------------------------------------- launchers

def _blocks(rows, cols, inner, dtype):
    """Tile sizes (rows, cols, inner step) and launch options for a tl.dot loop. The interpreter runs
    programs one by one, so there each takes a big tile. On a GPU: 128 x 128 tiles, inner steps of 128
    bytes, 3 stages: 3 x 32 KB of operands in shared memory (the H100 has 228 KB per SM)."""
    if interpreting():
        pow2 = lambda n, hi: max(16, min(hi, triton.next_power_of_2(n)))  # noqa: E731
        return (pow2(rows, 64), pow2(cols, 256), pow2(inner, 128)), {}
    return (128, 128, 64 if dtype == torch.bfloat16 else 32), dict(num_warps=8, num_stages=3)


def _flags(dtype, out=None):
    """UPCAST loads under the interpreter (its bf16 arithmetic is wrong), IEEE dots on fp32 operands (TF32
    would cost ~1e-3), ROUND bf16 stores by hand under the interpreter (see _cast_for)."""
    upcast = interpreting()
    flags = dict(UPCAST=upcast, PRECISION="ieee" if upcast or dtype == torch.float32 else "tf32")
    if out is not None:
        flags["ROUND"] = upcast and out.dtype == torch.bfloat16
    return flags


def _z_flags(weight):
    """Logits of bf16 inputs are rounded to bf16, as the torch path's and the sampler's matmuls round them."""
    return dict(Z_BF16=weight.dtype == torch.bfloat16, HAND=interpreting())


def _check(hidden, weight, blocks):
    assert hidden.stride(1) == 1 and weight.stride(1) == 1, "rows of hidden and weight must be contiguous"
    assert min(blocks) >= 16, f"tl.dot needs blocks of at least 16 on NVIDIA, got {blocks}"


def _triton_forward(hidden, weight, targets, inv_t, with_entropy):
    (N, C), V = hidden.shape, weight.shape[0]
    (bn, bv, bc), launch = _blocks(N, V, C, weight.dtype)
    _check(hidden, weight, (bn, bv, bc))
    n_blocks, n_tiles = triton.cdiv(N, bn), triton.cdiv(V, bv)
    # Split V so that the grid has about two programs per SM even for short N (two under the interpreter,
    # which exercises the merge); every split gets at least one tile, so its max is a real logit.
    want = 2 * torch.cuda.get_device_properties(hidden.device).multi_processor_count if hidden.is_cuda else 2
    per_split = triton.cdiv(n_tiles, min(n_tiles, triton.cdiv(want, n_blocks)))
    splits = triton.cdiv(n_tiles, per_split)
    part = _empty((4, splits, N), torch.float32, hidden.device)
    _fwd_kernel[(n_blocks, splits)](
        hidden, weight, targets, part, N, V, C, hidden.stride(0), weight.stride(0),
        part.stride(0), part.stride(1), inv_t, per_split,
        BLOCK_N=bn, BLOCK_V=bv, BLOCK_C=bc, ENTROPY=with_entropy, **_flags(weight.dtype), **_z_flags(weight),
        **launch)
    m, s, t, z_y = part.unbind(0)  # each (S, N)
    m_all = m.max(0).values
    scale = torch.exp(m - m_all)  # (S, N) weights of each split's sums at the common max
    s_all = (s * scale).sum(0)
    lse = m_all + torch.log(s_all)
    if not with_entropy:
        return z_y.sum(0) - lse, lse, torch.zeros_like(lse)
    t_all = (scale * (t + s * (m - m_all))).sum(0)  # the kernel's shift rule, across splits
    return z_y.sum(0) - lse, lse, torch.log(s_all) - t_all / s_all


def _matmul(a, b, c, accumulate):
    """c (+)= a @ b through _matmul_kernel; a (M, K), b (K, P), c (M, P), any strides."""
    (M, K), P = a.shape, b.shape[1]
    assert b.shape[0] == K and c.shape == (M, P) and (c.dtype == torch.float32 or not accumulate)
    (bm, bp, bk), launch = _blocks(M, P, K, a.dtype)
    assert min(bm, bp, bk) >= 16, "tl.dot needs blocks of at least 16 on NVIDIA"
    _matmul_kernel[(triton.cdiv(M, bm), triton.cdiv(P, bp))](
        a, b, c, M, P, K, *a.stride(), *b.stride(), *c.stride(),
        BLOCK_M=bm, BLOCK_P=bp, BLOCK_K=bk, ACCUMULATE=accumulate, **_flags(a.dtype, c), **launch)


def _triton_backward(hidden, weight, targets, lse, entropy, g, e, inv_t, need_dh, need_dw):
    (N, C), V = hidden.shape, weight.shape[0]
    (bn, bv, bc), launch = _blocks(N, V, C, weight.dtype)
    _check(hidden, weight, (bn, bv, bc))
    step = max(bv, SLAB_BYTES // (weight.element_size() * N) // bv * bv)  # slab width, whole tiles
    slab = _empty((N, min(step, V)), weight.dtype, hidden.device)  # (N, Vc) dz of one chunk
    dh = torch.zeros(N, C, device=hidden.device) if need_dh else None  # fp32, summed over chunks
    dw = _empty(weight.shape, weight.dtype, hidden.device) if need_dw else None
    for v0 in range(0, V, step):
        width = min(step, V - v0)
        _dz_kernel[(triton.cdiv(N, bn), triton.cdiv(width, bv))](
            hidden, weight, targets, lse, entropy, g, g if e is None else e, slab,
            N, C, v0, v0 + width, hidden.stride(0), weight.stride(0), slab.stride(0), inv_t,
            BLOCK_N=bn, BLOCK_V=bv, BLOCK_C=bc, HAS_E=e is not None, **_flags(weight.dtype, slab),
            **_z_flags(weight), **launch)
        dz = slab[:, :width]  # (N, Vc)
        if need_dh:
            _matmul(dz, weight[v0:v0 + width], dh, accumulate=True)  # (N, Vc) x (Vc, C)
        if need_dw:
            _matmul(dz.T, hidden, dw[v0:v0 + width], accumulate=False)  # (Vc, N) x (N, C)
    return (dh.to(hidden.dtype) if need_dh else None), dw


class _LinearLogprob(torch.autograd.Function):
    """Saves only (hidden, weight, targets, lse, entropy); the backward recomputes the logits."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, inv_t, with_entropy, triton_path):
        fwd = _triton_forward if triton_path else _torch_forward
        logp, lse, entropy = fwd(hidden, weight, targets, inv_t, with_entropy)
        ctx.save_for_backward(hidden, weight, targets, lse, entropy)
        ctx.inv_t, ctx.triton_path = inv_t, triton_path
        ctx.set_materialize_grads(False)  # an unused output's grad arrives as None: skip its term
        return (logp, entropy) if with_entropy else logp

    @staticmethod
    def backward(ctx, g, e=None):
        hidden, weight, targets, lse, entropy = ctx.saved_tensors
        if g is None and e is None:
            return None, None, None, None, None, None
        g = torch.zeros_like(lse) if g is None else g.float().contiguous()  # (N,) fp32
        e = None if e is None else e.float().contiguous()
        bwd = _triton_backward if ctx.triton_path else _torch_backward
        dh, dw = bwd(hidden, weight, targets, lse, entropy, g, e, ctx.inv_t, *ctx.needs_input_grad[:2])
        return dh, dw, None, None, None, None


# ----------------------------------------------------------------------------- the function

def linear_logprob(hidden, weight, targets, temperature=1.0, return_entropy=False, impl="auto"):
    """log_softmax(hidden @ weight.T / temperature)[targets] without the (N, V) logits.

    hidden (N, C) and weight (V, C) in fp32 or bf16 (hidden is cast to weight's dtype when they differ),
    targets (N,) integer ids in [0, V). Any strides. Returns (N,) fp32 log-probs, or (logp, entropy)
    when return_entropy. Differentiable w.r.t. hidden and weight through both outputs. impl: "auto"
    (Triton on CUDA tensors or with NANOR1_TRITON=1, torch otherwise), "triton" or "torch".
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"need hidden (N, C) and weight (V, C), got {tuple(hidden.shape)}, "
                         f"{tuple(weight.shape)}")
    N, V = hidden.shape[0], weight.shape[0]
    if targets.shape != (N,) or targets.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"targets must be ({N},) int32/int64, got {tuple(targets.shape)} {targets.dtype}")
    for name, x in (("hidden", hidden), ("weight", weight)):
        if x.dtype not in (torch.float32, torch.bfloat16) or x.device != targets.device:
            raise ValueError(f"{name} must be float32 or bfloat16 on {targets.device}, "
                             f"got {x.dtype} on {x.device}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    # Range check on the CPU only: on CUDA it would cost a host sync per call (there an id out of range
    # gives a wrong value, never an out-of-bounds read: targets are only compared, or clamped to gather).
    if not targets.is_cuda and N and (targets.min() < 0 or targets.max() >= V):
        raise ValueError(f"targets must lie in [0, {V}), got [{int(targets.min())}, {int(targets.max())}]")
    hidden = hidden.to(weight.dtype)
    triton_path = use_triton(hidden, impl) and N > 0
    if triton_path:  # the kernels need unit column strides (a no-op when already so)
        hidden, weight, targets = hidden.contiguous(), weight.contiguous(), targets.contiguous()
    return _LinearLogprob.apply(hidden, weight, targets, 1.0 / float(temperature), bool(return_entropy),
                                triton_path)


if __name__ == "__main__":
    # python -m kernels.logprob: check against a float64 reference and time forward + backward here
    # (bench/bench_logprob.py measures memory and compares with the naive path).
    import time

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    # TRITON_INTERPRET=1 on the CPU checks the Triton path too, on a shape the interpreter runs in seconds.
    N, V, C = (4096, 151936, 896) if dev == "cuda" else (64, 4096, 128) if interpreting() else (256, 32768, 896)
    h = torch.randn(N, C, device=dev, dtype=torch.bfloat16, requires_grad=True)
    w = (torch.randn(V, C, device=dev) * C ** -0.5).bfloat16().requires_grad_()
    y = torch.randint(0, V, (N,), device=dev)
    ref = linear_logprob_reference(h.double(), w.double(), y, 0.7)[0]
    for impl in ("torch", "triton") if dev == "cuda" or interpreting() else ("torch",):
        err = ((linear_logprob(h, w, y, 0.7, impl=impl).double() - ref).norm() / ref.norm()).item()
        times = []
        for _ in range(3):
            h.grad = w.grad = None
            t0 = time.perf_counter()
            linear_logprob(h, w, y, 0.7, impl=impl).sum().backward()
            if dev == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        print(f"{impl:6s} {dev} bf16 N={N} V={V} C={C}: rel err {err:.1e}, forward+backward "
              f"{min(times) * 1e3:.1f} ms, {8 * N * V * C / min(times) / 1e12:.2f} TFLOP/s (8NVC)")
