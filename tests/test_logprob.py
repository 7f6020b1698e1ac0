"""kernels/logprob.py: both paths against a float64 reference. On a GPU box the Triton path is compiled;
elsewhere it runs under the interpreter (tests/conftest.py sets TRITON_INTERPRET=1 without CUDA).

Fresh random inputs each run. Logits are kept at a realistic scale (std ~1/T) except in the x50 test: the
torch path rounds each logit to bf16 like the naive path, an error that grows with |logit|.
"""
import pytest
import torch

from kernels import logprob
from kernels.logprob import linear_logprob, linear_logprob_reference
from tests.sm90 import compile_for_h100

TOL = {torch.float32: 1e-4, torch.bfloat16: 1e-2}  # relative (Frobenius) error vs float64
IMPLS = ["torch", "triton"]
DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def small_blocks_and_poison(monkeypatch):
    """Force several vocabulary groups, slabs and row tiles at test sizes (merging them is what can go
    wrong), and fill every kernel output buffer with NaN first so an unwritten element shows."""
    monkeypatch.setattr(logprob, "TORCH_GROUP_BYTES", 1)  # groups of the minimum 128 columns
    monkeypatch.setattr(logprob, "TORCH_TILE_BYTES", 4 * 128 * 8)  # tiles of 8 rows
    monkeypatch.setattr(logprob, "SLAB_BYTES", 1)  # one BLOCK_V-wide slab per backward step
    monkeypatch.setattr(logprob, "_empty", lambda shape, dtype, device:
                        torch.full(shape, float("nan"), dtype=dtype, device=device))


def make(N, V, C, dtype, scale=1.0):
    h = (torch.randn(N, C, device=DEV) * scale).to(dtype).requires_grad_()
    w = (torch.randn(V, C, device=DEV) * C ** -0.5).to(dtype).requires_grad_()
    return h, w, torch.randint(0, V, (N,), device=DEV)


def reference(h, w, y, temperature, g, e):
    """float64 logp, entropy and the grads of sum(g logp + e entropy) w.r.t. h and w."""
    hd, wd = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    logp, ent = linear_logprob_reference(hd, wd, y, temperature)
    loss = (logp * g.double()).sum() + (0 if e is None else (ent * e.double()).sum())
    return (logp, ent, *torch.autograd.grad(loss, (hd, wd)))


def check(name, out, ref, tol):
    diff = (out.double() - ref).abs()
    err = ((out.double() - ref).norm() / ref.norm()).item()
    assert torch.isfinite(out).all(), f"{name}: non-finite values"
    assert err < tol, (f"{name}: rel err {err:.2e} >= {tol:.0e} "
                       f"(max |diff| {diff.max():.2e}, mean {diff.mean():.2e})")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("N, V, C, temperature, entropy", [
    (1, 157, 32, 1.0, False),  # one token, one tile
    (37, 1000, 96, 0.7, True),  # several V tiles, splits and slabs; entropy grads
    (70, 517, 48, 1.3, True),  # two row blocks, C not a power of two
])
def test_matches_float64_reference(impl, dtype, N, V, C, temperature, entropy):
    h, w, y = make(N, V, C, dtype)
    g = torch.randn(N, device=DEV)
    e = torch.randn(N, device=DEV) if entropy else None
    out = linear_logprob(h, w, y, temperature, return_entropy=entropy, impl=impl)
    logp, ent = out if entropy else (out, None)
    assert logp.dtype == torch.float32 and logp.shape == (N,)
    loss = (logp * g).sum() + (0 if e is None else (ent * e).sum())
    dh, dw = torch.autograd.grad(loss, (h, w))
    assert dh.dtype == dtype and dw.dtype == dtype
    r_logp, r_ent, r_dh, r_dw = reference(h, w, y, temperature, g, e)
    tol = TOL[dtype]
    check("logp", logp, r_logp, tol)
    if entropy:
        check("entropy", ent, r_ent, tol)
    check("dh", dh, r_dh, tol)
    check("dW", dw, r_dw, tol)


@pytest.mark.parametrize("impl", IMPLS)
def test_entropy_only_gradient(impl):
    """A loss of the entropy alone: logp's upstream grad arrives as None."""
    h, w, y = make(19, 300, 64, torch.float32)
    e = torch.randn(19, device=DEV)
    _, ent = linear_logprob(h, w, y, 0.9, return_entropy=True, impl=impl)
    dh, dw = torch.autograd.grad((ent * e).sum(), (h, w))
    _, _, r_dh, r_dw = reference(h, w, y, 0.9, torch.zeros(19, device=DEV), e)
    check("dh", dh, r_dh, 1e-4)
    check("dW", dw, r_dw, 1e-4)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_large_logits_stay_finite(impl, dtype):
    """Inputs x50: logits in the hundreds, softmax nearly one-hot; nothing may overflow."""
    h, w, y = make(21, 700, 64, dtype, scale=50.0)
    y[:5] = (h.detach().float() @ w.detach().float().T).argmax(1)[:5]  # some targets at p ~ 1, log p ~ 0
    logp, ent = linear_logprob(h, w, y, 1.0, return_entropy=True, impl=impl)
    dh, dw = torch.autograd.grad(logp.sum() + ent.sum(), (h, w))
    for name, x in (("logp", logp), ("entropy", ent), ("dh", dh), ("dW", dw)):
        assert torch.isfinite(x).all(), f"{name}: non-finite with large logits"
    assert (logp <= 1e-3 * logp.abs().max()).all() and (ent >= -1e-3).all()
    if dtype == torch.float32:  # the value itself, where rounding allows a comparison
        r_logp, r_ent, _, _ = reference(h, w, y, 1.0, torch.ones(21, device=DEV), None)
        check("logp", logp, r_logp, 1e-4)
        assert (ent.double() - r_ent).abs().max() < 1e-3


def test_model_call_pattern_and_dtypes():
    """The model calls linear_logprob(hidden.reshape(-1, C), W, targets.reshape(-1), T, True, impl) with a
    hidden that may be a strided view; a fp32 hidden meets a bf16 weight by being cast to bf16."""
    B, T, C, V = 3, 5, 64, 333
    wide = torch.randn(T, B, 2 * C, device=DEV, requires_grad=True)
    hidden = wide[..., :C].transpose(0, 1)  # (B, T, C) fp32, non-contiguous
    w = (torch.randn(V, C, device=DEV) * C ** -0.5).bfloat16()
    y = torch.randint(0, V, (B, T), device=DEV)
    outs = [linear_logprob(hidden.reshape(-1, C), w, y.reshape(-1), 0.8, return_entropy=True, impl=impl)
            for impl in ("auto", "torch", "triton")]
    auto = outs[1] if DEV == "cpu" else outs[2]  # auto: Triton on CUDA tensors, torch on CPU ones
    assert torch.equal(outs[0][0], auto[0]), "auto picked the wrong path"
    r_logp, r_ent = linear_logprob_reference(hidden.reshape(-1, C).bfloat16().double(), w.double(),
                                             y.reshape(-1), 0.8)
    for logp, ent in outs:
        assert logp.shape == ent.shape == (B * T,)
        check("logp", logp, r_logp, TOL[torch.bfloat16])
        check("entropy", ent, r_ent, TOL[torch.bfloat16])
        (dwide,) = torch.autograd.grad(logp.sum(), wide)
        assert dwide.dtype == torch.float32 and torch.isfinite(dwide).all()
        assert (dwide[..., C:] == 0).all() and (dwide[..., :C] != 0).any()


@pytest.mark.parametrize("impl", ["torch", "triton"])
def test_bf16_logits_are_rounded_as_the_sampler_rounds_them(impl):
    """The rollout samples from the LM head's bf16 logits (F.linear in bf16), and scores its tokens with
    logprobs_of. The trainer's log-probs of the same tokens must score that distribution: both paths round each
    logit to bf16 before the softmax. Unrounded fp32 logits of std 8 would differ by ~2e-2 nats (issue 17)."""
    from kernels.sampling import logprobs_of
    N, V, C, T = 96, 1000, 64, 0.7
    h = torch.randn(N, C, device=DEV).bfloat16()
    w = torch.randn(V, C, device=DEV).bfloat16()
    w = (w.float() * (8.0 / (h.float() @ w.float().T).std())).bfloat16()  # logits of std 8
    y = torch.randint(0, V, (N,), device=DEV)
    sampler = logprobs_of(torch.nn.functional.linear(h, w), y, T)  # what generate() records
    unrounded = torch.log_softmax((h.float() @ w.float().T) / T, -1).gather(1, y[:, None])[:, 0]
    ours = linear_logprob(h, w, y, T, impl=impl)
    far, near = (unrounded - sampler).abs(), (ours - sampler).abs()
    print(f"{impl}: |ours - sampler| mean {near.mean():.1e} max {near.max():.1e}; "
          f"unrounded mean {far.mean():.1e} max {far.max():.1e}")
    assert far.mean() > 5e-3  # the effect exists at this logit scale
    assert near.mean() < far.mean() / 20 and near.max() < 0.03  # and rounding like the sampler removes it


@pytest.mark.parametrize("bad, match", [
    (dict(hidden=torch.randn(4, 8, 2)), "need hidden"),
    (dict(weight=torch.randn(10, 9)), "need hidden"),
    (dict(targets=torch.tensor([0, 1, 2, 10])), r"targets must lie in \[0, 10\)"),
    (dict(targets=torch.zeros(3, dtype=torch.long)), "targets must be"),
    (dict(targets=torch.zeros(4)), "targets must be"),
    (dict(hidden=torch.randn(4, 8).half()), "hidden must be float32 or bfloat16"),
    (dict(temperature=0.0), "temperature"),
])
def test_bad_inputs_raise(bad, match):
    args = dict(hidden=torch.randn(4, 8), weight=torch.randn(10, 8), targets=torch.tensor([0, 1, 2, 9]),
                temperature=1.0)
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        linear_logprob(**args)


COMPILE_FOR_H100 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kernels.logprob import _dz_kernel, _fwd_kernel, _matmul_kernel

def build(fn, sig, consts):
    triton.compile(ASTSource(fn, sig | {k: "constexpr" for k in consts}, consts),
                   target=GPUTarget("cuda", 90, 32), options=dict(num_warps=8, num_stages=3))

for dt, prec, bc in [("bf16", "tf32", 64), ("fp32", "ieee", 32)]:  # the GPU tiles of kernels.logprob._blocks
    tiles = dict(BLOCK_N=128, BLOCK_V=128, BLOCK_C=bc)
    build(_fwd_kernel, dict(h_ptr=f"*{dt}", w_ptr=f"*{dt}", y_ptr="*i64", part_ptr="*fp32", N="i32", V="i32",
                            C="i32", stride_h="i32", stride_w="i32", stride_pk="i32", stride_ps="i32",
                            inv_t="fp32", tiles_per_split="i32"),
          dict(tiles, ENTROPY=True, UPCAST=False, PRECISION=prec, Z_BF16=dt == "bf16", HAND=False))
    build(_dz_kernel, dict(h_ptr=f"*{dt}", w_ptr=f"*{dt}", y_ptr="*i64", lse_ptr="*fp32", ent_ptr="*fp32",
                           g_ptr="*fp32", e_ptr="*fp32", dz_ptr=f"*{dt}", N="i32", C="i32", v_start="i32",
                           v_end="i32", stride_h="i32", stride_w="i32", stride_dz="i32", inv_t="fp32"),
          dict(tiles, HAS_E=True, UPCAST=False, PRECISION=prec, ROUND=False, Z_BF16=dt == "bf16", HAND=False))
    for c_dt, acc in [("fp32", True), (dt, False)]:  # dh += dz @ W (fp32), dW = dz^T @ h (weight dtype)
        build(_matmul_kernel, dict(a_ptr=f"*{dt}", b_ptr=f"*{dt}", c_ptr=f"*{c_dt}", M="i32", P="i32", K="i32",
                                   stride_am="i32", stride_ak="i32", stride_bk="i32", stride_bp="i32",
                                   stride_cm="i32", stride_cp="i32"),
              dict(BLOCK_M=128, BLOCK_P=128, BLOCK_K=bc, ACCUMULATE=acc, UPCAST=False, PRECISION=prec, ROUND=False))
print("compiled")
"""


def test_compiles_for_h100():
    """The forward, dz and matmul kernels compile for sm_90 with the GPU tiles (no GPU needed)."""
    compile_for_h100(COMPILE_FOR_H100)
