"""Sampling (kernels/sampling.py): the Triton kernel (the interpreter on the CPU) and the torch reference (the
CPU path of the rollout engine). Frequencies over thousands of draws against the exact truncated
distribution computed in float64 here (sorting is fine in a test), a hard check that no draw leaves the
top-k set or the nucleus, argmax at temperature 0, determinism, and that both paths draw the same tokens.
Fresh logits every run; the noise is a fixed function of (seed, offset, token), so a given set of logits
always gives the same draws."""
import math

import pytest
import torch

from kernels.sampling import _mix, _mix_int, _uniform_np, _uniform_torch, gumbel_noise, logprobs_of, sample
from tests.sm90 import compile_for_h100

DEV = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.usefixtures("fresh_seed")  # new random inputs each run (tests/conftest.py)
IMPLS = ["triton", "torch"]
Z_MAX = 5.0  # a z-score bound: a correct sampler fails a check with probability ~1e-6


def truncated_probs(logits, T, top_k=0, top_p=1.0):
    """Exact float64 target: softmax(x / T), top-k first (ties at the k-th value kept), then the nucleus."""
    z = logits.double().cpu() / T
    p = torch.softmax(z, -1)
    keep = torch.ones_like(p, dtype=torch.bool)
    if 0 < top_k < z.numel():
        keep &= z >= torch.topk(z, top_k).values[-1]
    if top_p < 1.0:
        q = torch.where(keep, p, 0.0)
        q = q / q.sum()
        vals, order = torch.sort(q, descending=True)
        before = vals.cumsum(0) - vals  # mass strictly ahead of each token in the sorted order
        t = vals[(before < top_p).sum() - 1]  # the last token the nucleus still needs
        keep &= q >= t
    p = torch.where(keep, p, 0.0)
    return p / p.sum(), keep


def chi_square_z(counts, probs):
    """Pearson chi-square of counts vs probs, bins with expectation < 5 pooled, as a z-score
    (Wilson-Hilferty: (X/k)^(1/3) is close to normal)."""
    n = counts.sum().item()
    e = probs * n
    small = e < 5
    if small.any():
        counts = torch.cat([counts[~small], counts[small].sum()[None]])
        e = torch.cat([e[~small], e[small].sum()[None]])
    e, counts = e[e > 0], counts[e > 0]
    x = ((counts - e) ** 2 / e).sum().item()
    k = len(e) - 1
    return ((x / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))


def draw(logits_row, n, T, impl, **kw):
    """n draws from one distribution: n rows of the same logits, each with its own random stream."""
    return sample(logits_row[None].expand(n, -1).contiguous(), T, impl=impl, **kw)


def test_hash_matches_python_ints():
    x = torch.cat([torch.randint(0, 2 ** 32, (1000,), dtype=torch.int64),
                   torch.tensor([0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1])])
    assert _mix(x).tolist() == [_mix_int(int(v)) for v in x]


def test_cpu_hash_in_numpy_matches_the_torch_int64_hash():
    """The CPU draws (numpy uint32) and the int64 torch ops (the torch path off the CPU) give the same bits, for
    offsets past 2^32 and negative ones, broadcast as the sampler uses them."""
    offsets = torch.cat([torch.randint(0, 2 ** 40, (60,)), torch.tensor([0, 2 ** 32 - 1, 2 ** 32, -1, -2 ** 40])])
    index = torch.cat([torch.randint(0, 2 ** 31, (300,)), torch.tensor([0, 1, 2 ** 31 - 1, 2 ** 31 + 7])])
    for seed in (0, 1, 2 ** 64 - 1, torch.randint(0, 2 ** 62, ()).item()):
        for off, idx in ((offsets[:, None], index), (offsets, index[:65]), (offsets[3], index)):
            u = _uniform_torch(seed, off, idx)
            assert torch.equal(torch.from_numpy(_uniform_np(seed, off.numpy(), idx.numpy())), u), seed


def assert_gumbel(g, what):
    """The CDF of g at a few points matches exp(-exp(-x)), each within Z_MAX binomial sigmas."""
    for x in (-1.0, 0.0, 0.5, 2.0, 4.0):
        p = math.exp(-math.exp(-x))
        z = ((g <= x).double().mean().item() - p) / math.sqrt(p * (1 - p) / g.numel())
        assert abs(z) < Z_MAX, f"{what}: P(g <= {x}) off by {z:.1f} sigma"


def test_noise_is_gumbel():
    n, seed = 100_000, torch.randint(0, 2 ** 40, ()).item()
    assert_gumbel(gumbel_noise(seed, torch.tensor(7), torch.arange(n)), "along a row")
    # Down a column (one index, consecutive offsets as the rollout uses them), for token and block indices
    # and for offsets past 2^32; neighbouring indices of a row uncorrelated.
    for base in (0, 2 ** 32 + 5):
        offsets = base + torch.arange(n)
        for index in (0, 1, 1023, 2 ** 31, 2 ** 31 + 3):
            assert_gumbel(gumbel_noise(seed, offsets, torch.tensor(index)), f"index {index}, offsets {base}+")
        g0, g1 = gumbel_noise(seed, offsets, torch.tensor(0)), gumbel_noise(seed, offsets, torch.tensor(1))
        corr = torch.corrcoef(torch.stack([g0, g1]))[0, 1].item()
        assert abs(corr) * math.sqrt(n) < Z_MAX, f"tokens 0 and 1 correlate: {corr:.4f}"


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_greedy_is_argmax(impl, dtype):
    logits = (torch.randn(33, 1000, device=DEV) * 3).to(dtype)
    logits[0, 10:20] = logits[0].max()  # a tie: the first index wins, as in torch.argmax
    out = sample(logits, 0.0, top_k=5, top_p=0.5, impl=impl)  # top-k/top-p never change the argmax
    assert out.dtype == torch.int64 and out.shape == (33,)
    assert torch.equal(out, logits.argmax(-1))


CASES = [  # (V, temperature, top_k, top_p): plain, top-k, top-p, both, and a 3-block vocabulary
    (12, 1.0, 0, 1.0), (12, 0.6, 4, 1.0), (12, 1.3, 0, "mid"), (12, 1.0, 6, "mid"), (2500, 1.0, 0, 1.0),
    (2500, 0.8, 30, "mid")]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("V,T,top_k,top_p", CASES)
def test_frequencies(impl, V, T, top_k, top_p):
    n = 6000 if V < 100 else 3000  # the interpreter's cost grows with n * V
    logits = torch.randn(V, device=DEV) * 1.5
    if V > 1000:  # most mass on a few tokens spread over all three 1024-blocks: both race rounds matter
        logits[torch.randperm(V)[:12]] += 6.0
    if top_p == "mid":  # halfway between two nucleus boundaries, so the nucleus is unambiguous
        p, _ = truncated_probs(logits, T, top_k)
        cum = torch.sort(p, descending=True).values.cumsum(0)
        top_p = float((cum[2] + cum[3]) / 2)
    probs, keep = truncated_probs(logits, T, top_k, top_p)
    tokens = draw(logits, n, T, impl, top_k=top_k, top_p=top_p, seed=torch.randint(0, 2 ** 31, ()).item())
    assert keep[tokens.cpu()].all(), "a token outside the top-k set / nucleus was drawn"
    counts = torch.bincount(tokens.cpu(), minlength=V).double()
    z = chi_square_z(counts, probs)
    assert z < Z_MAX, f"chi-square z = {z:.1f}: frequencies do not match the truncated distribution"


@pytest.mark.parametrize("impl", IMPLS)
def test_top_k_ties_kept(impl):
    # Ties at the k-th value are all kept: with k = 2 and three equal top logits each gets a third.
    logits = torch.full((10,), -1.0, device=DEV)
    logits[[2, 5, 7]] = 3.0
    counts = torch.bincount(draw(logits, 3000, 1.0, impl, top_k=2).cpu(), minlength=10)
    assert counts[[2, 5, 7]].sum() == 3000 and (counts[[2, 5, 7]] > 850).all()


@pytest.mark.parametrize("impl", IMPLS)
def test_deterministic_and_batch_independent(impl):
    B, V = 16, 3000
    logits = torch.randn(B, V, device=DEV) * 2
    offsets = torch.randint(0, 2 ** 40, (B,), device=DEV)
    for kw in (dict(), dict(top_k=50, top_p=0.9)):
        a = sample(logits, 1.0, seed=3, offsets=offsets, impl=impl, **kw)
        assert torch.equal(a, sample(logits, 1.0, seed=3, offsets=offsets, impl=impl, **kw))
        # A row's draw depends on its (seed, offset) and logits only, not on its batch neighbours or place.
        perm = torch.randperm(B, device=DEV)[:5]
        assert torch.equal(a[perm], sample(logits[perm], 1.0, seed=3, offsets=offsets[perm], impl=impl, **kw))
        b = sample(logits, 1.0, seed=4, offsets=offsets, impl=impl, **kw)
        assert (a != b).sum() >= B // 2, "another seed should change most draws"


@pytest.mark.parametrize("kw", [dict(), dict(top_k=40), dict(top_p=0.7), dict(top_k=100, top_p=0.95)])
def test_paths_draw_the_same_tokens(kw):
    # Same noise function in torch and Triton: identical draws, across temperatures and logits dtypes.
    for V, T, dtype in ((151936, 1.0, torch.bfloat16), (5000, 0.7, torch.float32)):
        B = 2 if V > 10_000 else 32
        logits = (torch.randn(B, V, device=DEV) * 3).to(dtype)
        offsets = torch.randint(0, 2 ** 40, (B,), device=DEV)
        a = sample(logits, T, seed=11, offsets=offsets, impl="triton", **kw)
        b = sample(logits, T, seed=11, offsets=offsets, impl="torch", **kw)
        assert torch.equal(a, b), f"{(a != b).sum().item()} of {B} draws differ at V={V}"


def test_logprobs_of():
    logits, tok = torch.randn(4, 50), torch.randint(0, 50, (4,))
    ref = torch.log_softmax(logits.double() / 0.7, -1).gather(-1, tok[:, None])[:, 0]
    assert torch.allclose(logprobs_of(logits, tok, 0.7).double(), ref, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(temperature=-1.0), dict(top_k=-1), dict(top_k=2.5), dict(top_p=0.0),
                                dict(top_p=1.5), dict(offsets=torch.arange(3)), dict(logits_1d=True)])
def test_bad_input(kw):
    logits = torch.randn(4, 10)
    if kw.pop("logits_1d", False):
        logits = logits[0]
    args = dict(temperature=1.0) | kw
    with pytest.raises(ValueError):
        sample(logits, **args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the compiled kernel at vocabulary size")
def test_cuda_large_vocab_matches_torch_path():
    logits = torch.randn(64, 151936, device="cuda", dtype=torch.bfloat16) * 3
    for kw in (dict(), dict(top_k=50), dict(top_p=0.9)):
        a, b = sample(logits, 1.0, impl="triton", **kw), sample(logits, 1.0, impl="torch", **kw)
        assert (a != b).sum().item() <= 1, "at most a rare last-ulp flip between exp/log implementations"


@pytest.mark.parametrize("kw", [dict(temperature=0.0), dict(temperature=1.0), dict(temperature=0.8, top_k=30),
                                dict(temperature=1.0, top_p=0.8)])
def test_gpu_tiling_under_interpreter(kw):
    # The GPU's configuration (a row per program, 8 pivots, the vocabulary split over 3 programs for plain
    # sampling and merged on the host) run by the interpreter: same draws as the torch path.
    from kernels.sampling import sample_triton
    logits = torch.randn(3, 3000, device=DEV) * 3
    a = sample_triton(logits, seed=5, rows=1, pivots=8, splits=3, **kw)
    assert torch.equal(a, sample(logits, seed=5, impl="torch", **kw))


COMPILE_FOR_H100 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kernels.sampling import _sample_kernel
sig = dict(x_ptr="*bf16", off_ptr="*i64", best_ptr="*fp32", arg_ptr="*i64", B="i32", V="i32", stride_b="i32",
           inv_t="fp32", seed_key="i64", top_k="i32", top_p="fp32")
for greedy, top_k, top_p, splits in [(True, False, False, 4), (False, False, False, 4), (False, True, True, 1)]:
    consts = dict(GREEDY=greedy, TOP_K=top_k, TOP_P=top_p, SPLITS=splits, ROWS=1, BLOCK_V=1024, PIVOTS=8)
    triton.compile(ASTSource(_sample_kernel, sig | {k: "constexpr" for k in consts}, consts),
                   target=GPUTarget("cuda", 90, 32), options=dict(num_warps=8))
print("compiled")
"""


def test_compiles_for_h100():
    """The kernels compile for sm_90 (no GPU needed): catches what the interpreter lets through."""
    compile_for_h100(COMPILE_FOR_H100)
