"""Triton kernels, one file per op. Each file holds the math, a torch reference, the kernels, the
autograd wrapper and a `__main__` that checks and times it.

On CUDA tensors the compiled kernels run. Elsewhere the torch reference runs, unless NANOR1_TRITON=1
forces the Triton path (on the CPU that needs TRITON_INTERPRET=1 set before triton is imported).

One import-time effect, on purpose: with TRITON_INTERPRET=1 and triton < 3.7, importing this package fixes
one line of Triton's interpreter (see _squeeze_loop_bounds_in_old_interpreters); nothing else changes."""
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


def _squeeze_loop_bounds_in_old_interpreters():
    """Triton < 3.7's interpreter turns a tensor used as a loop bound (`range(0, tl.max(n))`, a bound computed
    from program_id) into an int with int(array). numpy >= 2.4 refuses that for an array of shape (1,), so
    every kernel here fails under triton 3.6's interpreter with a current numpy ("only 0-dimensional arrays
    can be converted to Python scalars"). Triton 3.7 squeezes the array first; this applies the same one-line
    fix to older interpreters. Compiled kernels are untouched (the interpreter only patches at launch)."""
    try:
        import triton
        from triton.runtime import interpreter
    except ImportError:
        return
    if tuple(int(x) for x in triton.__version__.split(".")[:2]) >= (3, 7):
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "squeezes_bounds", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patched.squeezes_bounds = True
    interpreter._patch_lang_tensor = patched


if interpreting():
    _squeeze_loop_bounds_in_old_interpreters()
