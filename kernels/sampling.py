"""Sampling the next token from (B, V) logits: temperature, top-k, top-p, without sorting the vocabulary.

With z = x / T (computed as x * fl32(1/T)) the target is p_i = exp(z_i) / sum_j exp(z_j), restricted to a
kept set S and renormalised. S is a threshold set {i : z_i >= t}:
    top-k: t = the k-th largest z (ties at t are all kept)
    top-p: t = the largest value with  sum_{z_i >= t} p_i >= top_p  (the nucleus; after top-k if both)
Temperature 0 is argmax (first index on ties).

Gumbel-max (the exponential race): with independent uniforms u_i and g_i = -log(-log u_i),
    argmax_{i in S} (z_i + g_i)   is an exact sample from p restricted to S.
We run the race in two rounds over fixed blocks of BLOCK = 1024 tokens. The largest z_i + g_i of a block is
itself Gumbel-distributed around the block's log-mass, so:
    round 1: block c wins with  argmax_c (lse_c + g'_c),   lse_c = log sum_{i in block c, i in S} exp(z_i)
    round 2: token i of block c wins with  argmax_i (z_i + g_i)
picks c with probability mass_c / mass and then i with p_i / mass_c: exactly p_i. The kernel reads the
logits once (one exp per token, one noise draw per block) and re-reads the winning block: B * V * bytes,
about 6.5 us for 64 x 151936 bf16 rows at 3 TB/s. The torch path draws noise for V / BLOCK + BLOCK tokens
per row (only the kept ones when truncated), not V. A threshold costs a few more passes over the row (below),
from L2 on an H100 when the logits fit in its 50 MB.

Counter-based noise, the same function in torch and Triton, so both paths draw the same samples (up to the
last-ulp differences of exp/log and summation order, which can flip a draw only when two scores tie to ~1e-6):
    s = mix(mix(lo32(seed)) ^ hi32(seed)),  k1 = mix(s ^ lo32(offset)),  k2 = mix(k1 ^ hi32(offset) ^ C)
    h_n = mix(mix(k1 ^ n) ^ k2),  u_n = (2 * (h_n >> 9) + 1) / 2^24   in (0, 1), exact in fp32
with n = i for token i and n = 2^31 + c for block c, `mix` the lowbias32 integer hash (C. Wellons,
"hash-prospector"), a bijection on 32-bit words, and C = 0x9E3779B9. (Without C, k2 = mix(k1) for offsets
below 2^32, so h_0 = mix(0) = 0 in every row and token 0 would never win: the tests check the noise at fixed
indices down the rows.) Row b uses offsets[b] (default b), so the rollout engine keys draws by (sequence,
position) and batch composition never changes a sample.

The threshold search (`_search`) bisects on the value of z, PIVOTS points per pass. F(t), the count (top-k)
or mass (top-p) of {z >= t}, falls as t rises; the bracket [lo, hi) keeps F(lo) >= target > F(hi), so it
always holds the threshold t* (the largest z with F(z) >= target). Each pass evaluates F at lo + (hi - lo) j
/ PIVOTS and keeps the sub-bracket where F crosses the target; it also finds the smallest and largest z
inside [lo, hi). Once they are equal the bracket holds one distinct value, and that value is exactly t*
(ties included). With 8 pivots each pass cuts the bracket 8-fold; a few passes separate the sparse tail where
top-k and top-p thresholds live; more where the row is dense around the threshold.

No backward: sampling is not differentiated. `logprobs_of` scores the chosen tokens under the tempered,
untruncated distribution (what GRPO's importance ratio needs).

Versions (check: tests/test_sampling.py; timing: bench/bench_sampling.py):
  v1  2026-11-25  one noise draw per token; threshold by bisection on the fp32 bit pattern (a fixed ~11
                  passes). Dropped: the torch path had to hash every token, 6.5 s for 64 x 151936 flat
                  logits on a 2-core CPU.
  v2  2026-11-25  two-round block race; bisection on the value with the one-distinct-value stop (3 to 7
                  passes on synthetic 151936-token rows, by a torch simulation). Torch path 70 ms plain,
                  60-120 ms top-k 50 on that CPU. Compiles for sm_90; not yet timed on a GPU.
  v3  2026-12-02  torch path only (the draws are unchanged, bit for bit): on the CPU the hash runs in numpy's
                  uint32 (5 ops per mix, not 18), and a row of one block skips round 1. The demo's rollout
                  shape, 256 x 306 fp32: 2.7 -> 0.7 ms (min of 25, 1 thread, shared 2-core AMD EPYC).
"""
import math

import numpy as np
import torch
import triton
import triton.language as tl

from kernels import interpreting, use_triton

_M32 = 0xFFFFFFFF
_MUL1, _MUL2 = 0x7FEB352D, 0x846CA68B  # lowbias32 multipliers
_GOLDEN = 0x9E3779B9  # separates k2 from k1 (see the docstring)
BLOCK = 1024  # tokens per block of the two-round race; the Triton tile must be this wide (or the whole row)
_BLOCK_TAG = 1 << 31  # noise index of block c is _BLOCK_TAG + c: never a token index


def _mix_int(x):
    """lowbias32 on a python int in [0, 2^32)."""
    x ^= x >> 16
    x = (x * _MUL1) & _M32
    x ^= x >> 15
    x = (x * _MUL2) & _M32
    return x ^ (x >> 16)


def _seed_key(seed: int) -> int:
    seed &= 0xFFFFFFFFFFFFFFFF
    return _mix_int(_mix_int(seed & _M32) ^ (seed >> 32))


# ----------------------------------------------------------------------------- reference (the CPU path)

def _mul32(x, c):
    """(x * c) mod 2^32 for int64 tensors x in [0, 2^32): 16-bit halves of c keep products below 2^49."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix(x):
    """lowbias32 on an int64 tensor of 32-bit words."""
    x = x ^ (x >> 16)
    x = _mul32(x, _MUL1)
    x = x ^ (x >> 15)
    x = _mul32(x, _MUL2)
    return x ^ (x >> 16)


def _row_keys(seed, offsets):
    """(k1, k2) int64 tensors (B,) of 32-bit words from the seed and each row's 64-bit offset."""
    k1 = _mix(_seed_key(seed) ^ (offsets & _M32))
    return k1, _mix(k1 ^ ((offsets >> 32) & _M32) ^ _GOLDEN)


def gumbel_noise(seed, offsets, index):
    """g = -log(-log u) for the tokens `index` of rows with keys `offsets` (broadcastable int64 tensors)."""
    if offsets.device.type == "cpu" and index.device.type == "cpu":
        u = torch.from_numpy(_uniform_np(seed, offsets.numpy(), index.numpy()))
    else:
        u = _uniform_torch(seed, offsets, index)
    return -torch.log(-torch.log(u))


def _uniform_torch(seed, offsets, index):
    """u_n = (2 (h_n >> 9) + 1) / 2^24 in (0, 1), exact in fp32 (the module docstring), in int64 torch ops."""
    k1, k2 = _row_keys(seed, offsets)
    h = _mix(_mix(k1 ^ index) ^ k2)
    return ((h >> 9) * 2 + 1).float() * 2.0 ** -24


def _uniform_np(seed, offsets, index):
    """u of gumbel_noise on the CPU, hashed in numpy's uint32, whose multiplies wrap modulo 2^32 by definition:
    5 ops per mix where int64 torch needs 18 (its products must stay below 2^63). The same bits: the rollout's
    sampler draws from this on the CPU, so its tokens do not change with the path."""
    def mix(x):  # lowbias32, in place on uint32 arrays
        x ^= x >> 16
        x *= np.uint32(_MUL1)
        x ^= x >> 15
        x *= np.uint32(_MUL2)
        x ^= x >> 16
        return x
    off = offsets.view(np.uint64)
    with np.errstate(over="ignore"):  # the wrap is the point (numpy warns only on 0-d operands)
        k1 = mix(np.uint32(_seed_key(seed)) ^ (off & _M32).astype(np.uint32))
        k2 = mix(k1 ^ (off >> 32).astype(np.uint32) ^ np.uint32(_GOLDEN))
        h = mix(mix(k1 ^ index.astype(np.uint32)) ^ k2)
    return ((h >> 9) * 2 + 1).astype(np.float32) * np.float32(2.0 ** -24)


def _threshold_ref(z, top_k, top_p):
    """The smallest kept z per row (B, 1), or None when nothing is cut. topk of a prefix of the row that
    grows only while the nucleus does not fit in it: a full sort only when the nucleus really is that big."""
    B, V = z.shape
    k = top_k if 0 < top_k < V else V
    if top_p >= 1.0:
        return None if k == V else torch.topk(z, k).values[:, -1:]
    zmax = z.max(-1, keepdim=True).values
    C = k if k < V else min(V, 256)
    vals = torch.topk(z, C).values  # (B, C) descending
    cum = torch.exp(vals - zmax).cumsum(-1)  # unnormalised mass of the top 1..C
    if k < V:  # top-k first: the nucleus is taken within {z >= k-th largest}, ties at it included
        t_k = vals[:, -1:]
        ties = (z >= t_k).sum(-1, keepdim=True) - k  # kept beyond the k listed
        total = cum[:, -1:] + ties * torch.exp(t_k - zmax)
    else:
        total = torch.exp(z - zmax).sum(-1, keepdim=True)
    target = top_p * total  # (B, 1) mass the nucleus must reach
    while C < k and not bool((cum[:, -1:] >= target).all()):
        C = min(k, 8 * C)
        vals = torch.topk(z, C).values
        cum = torch.exp(vals - zmax).cumsum(-1)
    # The threshold is the first sorted value where the cumulative mass reaches the target: ties at it are
    # kept (they only add mass), and any larger value leaves less than the target. If rounding leaves the
    # target just out of reach, everything in the prefix is kept.
    first = (cum < target).sum(-1, keepdim=True).clamp(max=C - 1)
    return vals.gather(-1, first)


def sample_ref(logits, temperature, top_k=0, top_p=1.0, seed=0, offsets=None):
    """Plain torch. logits (B, V); returns (B,) int64. The same two-round race as the kernel."""
    B, V = logits.shape
    if temperature == 0:  # max(-1).indices: the first maximal index like argmax, ~3x faster on CPU bf16
        return logits.max(-1).indices
    if offsets is None:
        offsets = torch.arange(B, device=logits.device)
    z = logits.float() * _inv_t(temperature)  # (B, V)
    t = _threshold_ref(z, top_k, top_p)
    nb, width = -(-V // BLOCK), min(V, BLOCK)  # blocks of the race; a short row is one block of its width
    blocks = _BLOCK_TAG + torch.arange(nb, device=z.device)  # their noise indices
    off = offsets[:, None]  # (B, 1)
    if t is None and nb == 1:  # one block (V <= BLOCK, as the tiny demo's 306): it wins round 1, skip to round 2
        return (z + gumbel_noise(seed, off, torch.arange(V, device=z.device))).argmax(-1)
    if t is None:  # every token runs: dense (B, nb, width) blocks
        zb = torch.nn.functional.pad(z, (0, nb * width - V), value=-math.inf).view(B, nb, width)
        # Round 1: blocks race with their log-mass.
        c = (torch.logsumexp(zb, -1) + gumbel_noise(seed, off, blocks)).argmax(-1)  # (B,)
        # Round 2: the tokens of the winning block race with their own z.
        tokens = c[:, None] * width + torch.arange(width, device=z.device)  # (B, width)
        zc = zb[torch.arange(B, device=z.device), c]  # (B, width)
        return c * width + (zc + gumbel_noise(seed, off, tokens)).argmax(-1)
    # Truncated: only the kept tokens run, as a flat list (usually a few dozen per row, not V).
    rows, cols = (z >= t).nonzero(as_tuple=True)  # (N,) each, row-major
    zk = z[rows, cols]
    cell = rows * nb + cols // width  # flat (row, block) of each kept token
    top = torch.full((B * nb,), -math.inf, device=z.device).scatter_reduce(0, cell, zk, "amax")
    mass = torch.zeros(B * nb, device=z.device).index_add_(0, cell, torch.exp(zk - top[cell]))
    lse = (top + torch.log(mass)).view(B, nb)  # -inf where a block keeps nothing: it never wins
    c = (lse + gumbel_noise(seed, off, blocks)).argmax(-1)  # (B,) round 1
    score = torch.where(cols // width == c[rows], zk + gumbel_noise(seed, offsets[rows], cols), -math.inf)
    # Round 2, a per-row argmax over the flat list: the row's best score, then its smallest winning column.
    best = torch.full((B,), -math.inf, device=z.device).scatter_reduce(0, rows, score, "amax")
    win = torch.where(score == best[rows], cols, V)
    return torch.full((B,), V, device=z.device).scatter_reduce(0, rows, win, "amin")


def logprobs_of(logits, tokens, temperature):
    """log p(token) under the tempered, untruncated distribution the sampler starts from. (B, V), (B,) -> (B,)
    fp32. Temperature 0 scores with T = 1."""
    z = logits.float() * _inv_t(temperature or 1.0)
    return torch.log_softmax(z, -1).gather(-1, tokens[:, None])[:, 0]


def _inv_t(temperature):
    """1/T rounded to fp32, the multiplier both paths use (a multiply rounds the same everywhere)."""
    return torch.tensor(1.0 / temperature, dtype=torch.float32).item()


# ----------------------------------------------------------------------------- Triton kernels

@triton.jit
def _mix32(x):
    """lowbias32 on uint32 (wrapping multiplies)."""
    x ^= x >> 16
    x = x * 0x7FEB352D
    x ^= x >> 15
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@triton.jit
def _gumbel(k1, k2, n):
    """-log(-log u_n) from the row keys k1, k2 and the uint32 noise index n (broadcast)."""
    h = _mix32(_mix32(k1 ^ n) ^ k2)
    u = ((h >> 9) * 2 + 1).to(tl.float32) * 5.9604644775390625e-08  # 2^-24
    return -tl.log(-tl.log(u))


@triton.jit
def _load_z(x_ptr, rows, stride_b, cols, mask, inv_t):
    """z tile (ROWS, BLOCK_V) in fp32; -inf outside the row."""
    x = tl.load(x_ptr + rows[:, None] * stride_b + cols[None, :], mask=mask, other=-float("inf"))
    return x.to(tl.float32) * inv_t


@triton.jit
def _bisect_pass(x_ptr, rows, stride_b, row_ok, V, inv_t, m, floor, lo, hi, piv,
                 MASS: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr, PIVOTS: tl.constexpr):
    """One read of the rows: F at each pivot (ROWS, PIVOTS), the count (MASS=False) or mass exp(z - m)
    (MASS=True) of the tokens with z >= pivot and z >= floor; and the smallest and largest z in [lo, hi)."""
    acc = tl.zeros([ROWS, BLOCK_V, PIVOTS], tl.float32)  # per-lane sums, reduced once at the end
    zlo = tl.full([ROWS, BLOCK_V], float("inf"), tl.float32)
    zhi = tl.full([ROWS, BLOCK_V], -float("inf"), tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        mask = row_ok[:, None] & (cols[None, :] < V)
        z = _load_z(x_ptr, rows, stride_b, cols, mask, inv_t)  # (ROWS, BLOCK_V), -inf outside the row
        if MASS:
            w = tl.exp(z - m[:, None])
        else:
            w = tl.full(z.shape, 1.0, tl.float32)
        w = tl.where(mask & (z >= floor[:, None]), w, 0.0)
        acc += tl.where(z[:, :, None] >= piv[:, None, :], w[:, :, None], 0.0)
        inside = (z >= lo[:, None]) & (z < hi[:, None])
        zlo = tl.minimum(zlo, tl.where(inside, z, float("inf")))
        zhi = tl.maximum(zhi, tl.where(inside, z, -float("inf")))
    return tl.sum(acc, 1), tl.min(zlo, 1), tl.max(zhi, 1)


@triton.jit
def _search(x_ptr, rows, stride_b, row_ok, V, inv_t, m, floor, lo, hi, count, frac,
            MASS: tl.constexpr, ROWS: tl.constexpr, BLOCK_V: tl.constexpr, PIVOTS: tl.constexpr):
    """The largest z with F(z) >= target, where target = count + frac * F(lo) (top-k: count = k; top-p:
    frac = top_p of the mass from lo up). lo, hi (ROWS,) fp32 with F(hi) = 0: hi above the row's max."""
    j = tl.arange(0, PIVOTS).to(tl.float32) / PIVOTS  # the first pivot is lo itself: F(lo) sets the target
    t = lo
    target = tl.zeros([ROWS], tl.float32)
    active = row_ok
    passes = tl.zeros([ROWS], tl.int32)
    while tl.max(tl.where(active & (passes < 64), 1, 0)) > 0:  # 64: a backstop, bisection ends far sooner
        piv = lo[:, None] + (hi - lo)[:, None] * j[None, :]  # (ROWS, PIVOTS) in [lo, hi]
        F, zlo, zhi = _bisect_pass(x_ptr, rows, stride_b, row_ok, V, inv_t, m, floor, lo, hi, piv,
                                   MASS, ROWS, BLOCK_V, PIVOTS)
        F_lo = tl.sum(tl.where(j[None, :] == 0, F, 0.0), 1)
        target = tl.where(passes == 0, count + frac * F_lo, target)
        settled = active & (zlo == zhi)  # one distinct value left in [lo, hi): it is the threshold
        t = tl.where(settled, zlo, t)
        active = active & ~settled
        ok = F >= target[:, None]  # monotone in the pivot: True up to the crossing, then False
        lo = tl.maximum(lo, tl.max(tl.where(ok, piv, lo[:, None]), 1))
        hi = tl.minimum(hi, tl.min(tl.where(ok, hi[:, None], piv), 1))
        passes += 1
    return tl.where(active, lo, t)


@triton.jit(do_not_specialize=["seed_key", "top_k"])
def _sample_kernel(
    x_ptr,  # (B, V) logits, any float dtype, last dim contiguous
    off_ptr,  # (B,) int64 random-stream key of each row
    best_ptr,  # (B, SPLITS) fp32 best race score of each split of the vocabulary
    arg_ptr,  # (B, SPLITS) int64 its token
    B, V, stride_b,  # rows, vocabulary, logits row stride (elements)
    inv_t,  # fp32 1 / temperature (unused when GREEDY)
    seed_key,  # 32-bit word derived from the seed on the host
    top_k, top_p,  # used only when TOP_K / TOP_P
    GREEDY: tl.constexpr, TOP_K: tl.constexpr, TOP_P: tl.constexpr,
    SPLITS: tl.constexpr,  # programs per row for the race (1 when a threshold needs the whole row)
    ROWS: tl.constexpr,  # rows per program: 1 on a GPU, many when interpreting
    BLOCK_V: tl.constexpr, PIVOTS: tl.constexpr,  # powers of 2
):
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    row_ok = rows < B
    floor = tl.full([ROWS], -float("inf"), tl.float32)  # threshold on z: everything is kept
    if TOP_K or TOP_P:  # pass 1: the row's max and smallest finite z bracket every threshold
        zmax = tl.full([ROWS, BLOCK_V], -float("inf"), tl.float32)
        zmin = tl.full([ROWS, BLOCK_V], float("inf"), tl.float32)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            mask = row_ok[:, None] & (cols[None, :] < V)
            z = _load_z(x_ptr, rows, stride_b, cols, mask, inv_t)
            zmax = tl.maximum(zmax, z)
            zmin = tl.minimum(zmin, tl.where(z > -float("inf"), z, float("inf")))
        m = tl.where(row_ok, tl.max(zmax, 1), 0.0)
        lo = tl.where(row_ok, tl.min(zmin, 1), 0.0)
        hi = m + tl.maximum(tl.abs(m), 1.0)  # strictly above m even where m + 1 == m
        if TOP_K:  # count of {z >= t} reaches k
            floor = _search(x_ptr, rows, stride_b, row_ok, V, inv_t, m, floor, lo, hi, top_k.to(tl.float32), 0.0,
                            False, ROWS, BLOCK_V, PIVOTS)
            lo = floor
        if TOP_P:  # mass of {z >= t} reaches top_p of the mass kept so far
            floor = _search(x_ptr, rows, stride_b, row_ok, V, inv_t, m, floor, lo, hi, 0.0, top_p,
                            True, ROWS, BLOCK_V, PIVOTS)

    chunk = tl.cdiv(tl.cdiv(V, SPLITS), BLOCK_V) * BLOCK_V  # this program's share of the vocabulary
    start = tl.program_id(1) * chunk
    end = tl.minimum(start + chunk, V)
    if GREEDY:  # argmax with per-lane running winners, reduced once at the end
        best = tl.full([ROWS, BLOCK_V], -float("inf"), tl.float32)
        arg = tl.zeros([ROWS, BLOCK_V], tl.int32)
        for v0 in range(start, end, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            x = tl.load(x_ptr + rows[:, None] * stride_b + cols[None, :],
                        mask=row_ok[:, None] & (cols[None, :] < V), other=-float("inf")).to(tl.float32)
            better = x > best  # strict: a lane keeps its earliest token on ties
            best = tl.where(better, x, best)
            arg = tl.where(better, cols[None, :], arg)
        top = tl.max(best, 1)
        tok = tl.min(tl.where(best == top[:, None], arg, 2147483647), 1)  # first index among the winners
    else:
        off = tl.load(off_ptr + rows, mask=row_ok, other=0)
        k1 = _mix32(seed_key.to(tl.uint32) ^ (off & 0xFFFFFFFF).to(tl.uint32))
        k2 = _mix32(k1 ^ ((off >> 32) & 0xFFFFFFFF).to(tl.uint32) ^ 0x9E3779B9)
        # Round 1: each block of BLOCK_V tokens races with its log-mass over the kept tokens.
        top = tl.full([ROWS], -float("inf"), tl.float32)
        win = tl.zeros([ROWS], tl.int32) + start  # first column of the winning block
        for v0 in range(start, end, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            mask = row_ok[:, None] & (cols[None, :] < V)
            z = _load_z(x_ptr, rows, stride_b, cols, mask, inv_t)
            z = tl.where(mask & (z >= floor[:, None]), z, -float("inf"))
            zm = tl.max(z, 1)
            zm = tl.where(zm == -float("inf"), 0.0, zm)  # an empty block (nothing kept): no -inf - -inf
            mass = tl.sum(tl.exp(z - zm[:, None]), 1)  # >= 1 unless the block is empty
            lse = tl.where(mass > 0, zm + tl.log(tl.maximum(mass, 1.0)), -float("inf"))
            block = tl.zeros([ROWS], tl.int64) + v0 // BLOCK_V + 2147483648  # noise index 2^31 + c
            score = lse + _gumbel(k1, k2, block.to(tl.uint32))
            better = score > top
            top = tl.where(better, score, top)
            win = tl.where(better, v0, win)
        # Round 2: the tokens of the winning block race with their own z.
        cols = win[:, None] + tl.arange(0, BLOCK_V)[None, :]  # (ROWS, BLOCK_V)
        mask = row_ok[:, None] & (cols < V)
        z = tl.load(x_ptr + rows[:, None] * stride_b + cols, mask=mask, other=-float("inf")).to(tl.float32) * inv_t
        g = _gumbel(k1[:, None], k2[:, None], cols.to(tl.uint32))
        score = tl.where(mask & (z >= floor[:, None]), z + g, -float("inf"))
        tok = tl.argmax(score, 1) + win  # first index on ties
    tl.store(best_ptr + rows * SPLITS + tl.program_id(1), top, mask=row_ok)
    tl.store(arg_ptr + rows * SPLITS + tl.program_id(1), tok.to(tl.int64), mask=row_ok)


# ----------------------------------------------------------------------------- launcher

def sample_triton(logits, temperature, top_k=0, top_p=1.0, seed=0, offsets=None, *,
                  rows=None, pivots=None, splits=None, num_warps=None):
    """The Triton path. rows, pivots, splits and num_warps override the defaults (tests run the GPU's
    tiling under the interpreter; benchmarks sweep)."""
    B, V = logits.shape
    assert logits.stride(1) == 1, "logits rows must be contiguous"
    if offsets is None:
        offsets = torch.arange(B, device=logits.device)
    assert offsets.dtype == torch.int64 and offsets.device == logits.device
    if not logits.is_cuda and not interpreting():
        raise ValueError("the Triton path needs CUDA tensors, or TRITON_INTERPRET=1 set before importing triton")
    greedy = temperature == 0
    top_k = 0 if greedy or not 0 < top_k < V else top_k
    top_p = 1.0 if greedy else top_p
    truncate = top_k > 0 or top_p < 1.0
    block_v = BLOCK if V > BLOCK else max(16, triton.next_power_of_2(V))  # the race's blocks are fixed
    if interpreting():  # the cost is per op: many rows per program, many pivots (fewer passes)
        rows = rows or min(triton.next_power_of_2(B), max(1, 65536 // block_v))
        pivots = pivots or 16
        splits = splits or 1
    else:
        rows = rows or 1
        pivots = pivots or 8
        sms = torch.cuda.get_device_properties(logits.device).multi_processor_count
        # Few rows: split the vocabulary so every SM races on a share.
        splits = splits or max(1, min(triton.cdiv(2 * sms, B), triton.cdiv(V, 4 * block_v)))
    splits = 1 if truncate else splits  # a threshold needs whole rows
    best = torch.empty(B, splits, device=logits.device, dtype=torch.float32)
    arg = torch.empty(B, splits, device=logits.device, dtype=torch.int64)
    _sample_kernel[(triton.cdiv(B, rows), splits)](
        logits, offsets.contiguous(), best, arg, B, V, logits.stride(0),
        _inv_t(temperature) if not greedy else 1.0, _seed_key(seed), top_k, float(top_p),
        GREEDY=greedy, TOP_K=top_k > 0, TOP_P=top_p < 1.0, SPLITS=splits, ROWS=rows,
        BLOCK_V=block_v, PIVOTS=pivots, num_warps=num_warps or 8,
    )
    if splits == 1:
        return arg[:, 0]
    return arg.gather(1, best.argmax(1, keepdim=True))[:, 0]  # first split wins ties: smallest token


# ----------------------------------------------------------------------------- dispatch

def sample(logits, temperature, top_k=0, top_p=1.0, seed=0, offsets=None, impl="auto"):
    """Next tokens (B,) int64 from logits (B, V). temperature >= 0 (0 = argmax); top_k = 0 and top_p = 1 are
    off. offsets (B,) int64 keys each row's random stream (default arange(B)); draws are a function of
    (seed, offset, token index) only. impl: "auto" (Triton on CUDA or with NANOR1_TRITON=1), "triton", "torch"."""
    if logits.dim() != 2 or not logits.dtype.is_floating_point:
        raise ValueError(f"logits must be a (B, V) float tensor, got {logits.dtype} {tuple(logits.shape)}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if not (isinstance(top_k, int) and top_k >= 0):
        raise ValueError(f"top_k must be an int >= 0 (0 = off), got {top_k!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1] (1 = off), got {top_p}")
    if offsets is not None and (offsets.shape != logits.shape[:1] or offsets.dtype != torch.int64):
        raise ValueError(f"offsets must be int64 of shape ({logits.shape[0]},), got {offsets.dtype} "
                         f"{tuple(offsets.shape)}")
    if use_triton(logits, impl):
        return sample_triton(logits, temperature, top_k, top_p, seed, offsets)
    return sample_ref(logits, temperature, top_k, top_p, seed, offsets)


if __name__ == "__main__":
    # python -m kernels.sampling: both paths must draw the same tokens; then time (on a GPU). On the CPU the
    # Triton path runs in the interpreter: TRITON_INTERPRET=1 python -m kernels.sampling
    import time
    cuda = torch.cuda.is_available()
    if not cuda and not interpreting():
        raise SystemExit("needs CUDA, or TRITON_INTERPRET=1 for the interpreter")
    B, V = (64, 151936) if cuda else (4, 5000)
    x = torch.randn(B, V, device="cuda" if cuda else "cpu") * 3
    for kw in (dict(temperature=0.0), dict(temperature=1.0), dict(temperature=1.0, top_k=50, top_p=0.9)):
        same = (sample(x, impl="triton", **kw) == sample(x, impl="torch", **kw)).float().mean().item()
        line = f"{kw}: {100 * same:.0f}% of draws identical across the two paths"
        if cuda:
            for _ in range(3):
                sample(x, impl="triton", **kw)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                sample(x, impl="triton", **kw)
            torch.cuda.synchronize()
            us = (time.perf_counter() - t0) / 20 * 1e6
            line += f", {us:.0f} us, {x.numel() * 4 / us / 1e3:.0f} GB/s (bench/bench_sampling.py)"
        print(line)
