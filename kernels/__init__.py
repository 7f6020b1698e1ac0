"""Triton kernels, one file per op. Each file holds the math, a torch reference, the kernels, the
autograd wrapper and a `__main__` that checks and times it.

On CUDA tensors the compiled kernels run. Elsewhere the torch reference runs, unless NANOR1_TRITON=1
forces the Triton path (on the CPU that needs TRITON_INTERPRET=1 set before triton is imported)."""
import os

import torch


def interpreting() -> bool:
    """True when Triton runs in its CPU interpreter (read at launch time, per call)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(x: torch.Tensor, impl: str) -> bool:
    """Resolve impl in {"auto", "triton", "torch"} for a tensor x."""
    if impl not in ("auto", "triton", "torch"):
        raise ValueError(f"impl must be 'auto', 'triton' or 'torch', got {impl!r}")
    if impl == "auto":
        return x.is_cuda or os.environ.get("NANOR1_TRITON", "0") == "1"
    return impl == "triton"
