"""Decode attention (kernels/decode_attention.py): the Triton kernel (the interpreter on the CPU) and the torch
reference (the CPU path of the rollout engine) against a float64 loop over rows and heads that only ever
reads valid positions. Fresh random inputs every run; cache tails are NaN-poisoned."""
import math

import pytest
import torch

from kernels.decode_attention import decode_attention
from tests.sm90 import compile_for_h100

DEV = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.usefixtures("fresh_seed")  # new random inputs each run (tests/conftest.py)
TOL = {torch.float32: 2e-5, torch.bfloat16: 2 ** -7}  # max abs error, relative to max(1, |out|)


def oracle(q, k, v, lengths):
    """float64, one (row, head) at a time, slicing the valid positions: no masking to get wrong."""
    B, H, D = q.shape
    G = H // k.shape[1]
    out = torch.empty(B, H, D, dtype=torch.float64)
    for b in range(B):
        n = int(lengths[b])
        for h in range(H):
            kb, vb = k[b, h // G, :n].double().cpu(), v[b, h // G, :n].double().cpu()
            p = torch.softmax(kb @ q[b, h].double().cpu() / math.sqrt(D), 0)  # (n,)
            out[b, h] = p @ vb
    return out


def make(B, H, K, S, D, dtype, lengths=None):
    q = torch.randn(B, H, D, device=DEV).to(dtype)
    k = torch.randn(B, K, S, D, device=DEV).to(dtype)
    v = torch.randn(B, K, S, D, device=DEV).to(dtype)
    if lengths is None:  # ragged, with the extremes 1 and S always present
        lengths = torch.randint(1, S + 1, (B,), device=DEV)
        lengths[0], lengths[-1] = 1, S
    for b in range(B):  # garbage past each row's length must never reach the output
        k[b, :, int(lengths[b]):] = float("nan")
        v[b, :, int(lengths[b]):] = float("nan")
    return q, k, v, lengths


def check(out, ref, dtype):
    err = (out.double().cpu() - ref).abs()
    tol = TOL[dtype] * max(1.0, ref.abs().max().item())
    assert torch.isfinite(out).all(), "non-finite output: garbage leaked"
    assert err.max().item() <= tol, f"max err {err.max().item():.3g} (mean {err.mean().item():.3g}) > tol {tol:.3g}"


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("H,K,D", [(4, 4, 64), (8, 4, 16), (14, 2, 64), (7, 1, 128), (6, 3, 80)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_oracle(impl, H, K, D, dtype):
    # GQA ratios 1, 2, 7 (and 2 at MHA-like K), head dims 16..128 incl. a non-power of 2.
    B, S = 5, 70
    q, k, v, lengths = make(B, H, K, S, D, dtype)
    out = decode_attention(q, k, v, lengths, impl=impl)
    assert out.shape == (B, H, D) and out.dtype == dtype
    check(out, oracle(q, k, v, lengths), dtype)


@pytest.mark.parametrize("num_splits", [2, 3, 16])
def test_split_k_merge(num_splits):
    # 16 splits of rows as short as 1: most splits are empty and must drop out of the merge.
    B, H, K, S, D = 4, 8, 2, 300, 32
    q, k, v, lengths = make(B, H, K, S, D, torch.float32)
    out = decode_attention(q, k, v, lengths, impl="triton", num_splits=num_splits)
    check(out, oracle(q, k, v, lengths), torch.float32)


@pytest.mark.parametrize("impl", ["triton", "torch"])
def test_strided_views(impl):
    # The engine passes cache[layer] of one (L, B, K, S, D) buffer; here also every other row of it, and
    # q as the (B, H, D) slice of a (B, H, T, D) tensor: no copies, strides passed through.
    L, B, H, K, S, D = 3, 6, 4, 2, 40, 32
    kbuf = torch.randn(L, B, K, S, D, device=DEV)
    vbuf = torch.randn(L, B, K, S, D, device=DEV)
    k, v = kbuf[1, ::2], vbuf[1, ::2]  # (3, K, S, D), batch stride 2 * K * S * D
    q = torch.randn(B // 2, 2, H, D, device=DEV).transpose(1, 2)[:, :, 0]  # (3, H, D), strides (2HD, D, 1)
    lengths = torch.tensor([1, 17, S], device=DEV)
    for b in range(3):
        k[b, :, int(lengths[b]):] = float("nan")
        v[b, :, int(lengths[b]):] = float("inf")
    assert not k.is_contiguous() and not q.is_contiguous()
    check(decode_attention(q, k, v, lengths, impl=impl), oracle(q, k, v, lengths), torch.float32)


def test_torch_reference_is_float64_exact():
    # The reference in float64 is the oracle up to summation order: a tight check of its masking.
    q, k, v, lengths = make(4, 6, 2, 33, 16, torch.float64)
    out = decode_attention(q, k, v, lengths, impl="torch")
    assert (out.cpu() - oracle(q, k, v, lengths)).abs().max().item() < 1e-12


def test_equal_lengths_and_full_cache():
    # No ragged band at all (lengths all S): the reference's unmasked path, and the kernel's longest scan.
    B, H, K, S, D = 3, 4, 2, 64, 64
    q, k, v, lengths = make(B, H, K, S, D, torch.float32, lengths=torch.full((B,), S, device=DEV))
    ref = oracle(q, k, v, lengths)
    for impl in ("triton", "torch"):
        check(decode_attention(q, k, v, lengths, impl=impl), ref, torch.float32)


@pytest.mark.parametrize("bad", ["lengths0", "lengths_big", "heads", "shape", "float_lengths"])
def test_bad_input(bad):
    q, k, v = torch.randn(2, 4, 16), torch.randn(2, 2, 8, 16), torch.randn(2, 2, 8, 16)
    lengths = torch.tensor([3, 8])
    if bad == "lengths0":
        lengths = torch.tensor([0, 8])
    elif bad == "lengths_big":
        lengths = torch.tensor([3, 9])
    elif bad == "heads":
        q = torch.randn(2, 3, 16)
    elif bad == "shape":
        v = torch.randn(2, 2, 7, 16)
    elif bad == "float_lengths":
        lengths = lengths.float()
    with pytest.raises(ValueError):
        decode_attention(q, k, v, lengths)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the compiled kernel at benchmark shape")
def test_cuda_benchmark_shape():
    # The rollout's shape (Qwen2.5-0.5B: 14 query heads, 2 kv heads, D 64) at bf16 with the default splits.
    q, k, v, lengths = make(8, 14, 2, 1024, 64, torch.bfloat16)
    check(decode_attention(q, k, v, lengths), oracle(q, k, v, lengths), torch.bfloat16)


def test_gpu_tiling_under_interpreter():
    # The GPU's configuration (one pair per program, 32-wide key tiles, several tiles per split) run by the
    # interpreter: the code path the compiled kernel takes, checked here without a GPU.
    from kernels.decode_attention import decode_attention_triton
    q, k, v, lengths = make(3, 14, 2, 150, 64, torch.float32)
    out = decode_attention_triton(q, k, v, lengths, num_splits=3, block_n=32, pack=1)
    check(out, oracle(q, k, v, lengths), torch.float32)


COMPILE_FOR_H100 = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kernels.decode_attention import _merge_kernel, _split_kernel
for dt, prec, D, G, NS in [("bf16", "tf32", 64, 7, 4), ("bf16", "tf32", 128, 2, 1), ("fp32", "ieee", 128, 1, 3)]:
    sig = dict(q_ptr=f"*{dt}", k_ptr=f"*{dt}", v_ptr=f"*{dt}", len_ptr="*i64", out_ptr="*fp32" if NS > 1 else f"*{dt}",
               lse_ptr="*fp32", stride_qb="i32", stride_qh="i32", stride_kb="i64", stride_kk="i32", stride_ks="i32",
               stride_vb="i64", stride_vk="i32", stride_vs="i32", stride_ob="i32", stride_oh="i32", stride_os="i32",
               qk_scale="fp32", B="i32", K="i32", D="i32")
    consts = dict(G=G, NUM_SPLITS=NS, PACK=1, BLOCK_G=16, BLOCK_N=64 if D <= 64 else 32, BLOCK_D=D, UPCAST=False,
                  PRECISION=prec)
    triton.compile(ASTSource(_split_kernel, sig | {k: "constexpr" for k in consts}, consts),
                   target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))
    consts = dict(NUM_SPLITS=NS, HEADS=1, BLOCK_S=max(2, triton.next_power_of_2(NS)), BLOCK_D=D)
    sig = dict(part_ptr="*fp32", lse_ptr="*fp32", out_ptr=f"*{dt}", BH="i32", D="i32")
    triton.compile(ASTSource(_merge_kernel, sig | {k: "constexpr" for k in consts}, consts),
                   target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))
print("compiled")
"""


def test_compiles_for_h100():
    """The kernels compile for sm_90 (no GPU needed): catches what the interpreter lets through."""
    compile_for_h100(COMPILE_FOR_H100)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_torch_path_with_a_decode_bias(dtype):
    """The rollout engine's CPU path: one decode_bias per step, read by every layer, over a span past the longest
    row, with zeros (not NaN) past each length as nanor1's KVCache keeps them."""
    from kernels.decode_attention import decode_bias
    B, H, K, S, D = 6, 4, 2, 40, 32
    q, k, v, lengths = make(B, H, K, S, D, dtype)
    k, v = torch.nan_to_num(k, nan=0.0), torch.nan_to_num(v, nan=0.0)
    lengths = lengths.clamp(max=S - 3)
    bias = decode_bias(lengths, S - 2)
    assert bias.shape == (B, 1, 1, S - 2) and bias.dtype == torch.float32
    assert torch.equal(torch.isinf(bias[:, 0, 0]), torch.arange(S - 2) >= lengths[:, None].cpu())
    out = decode_attention(q, k, v, lengths, impl="torch", bias=bias)
    check(out, oracle(q, k, v, lengths), dtype)
    assert torch.allclose(out, decode_attention(q, k, v, lengths, impl="torch"), atol=1e-6)
