import os
import sys

# Triton reads TRITON_INTERPRET when @triton.jit runs (at kernel import), so set it before any test imports
# kernels. Only without CUDA: on a GPU the compiled kernels are what we test.
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
