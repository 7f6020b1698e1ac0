import os
import sys

# Triton reads TRITON_INTERPRET when @triton.jit runs (at kernel import), so set it before any test imports
# kernels. Only without CUDA: on a GPU the compiled kernels are what we test.
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def fresh_seed():
    """Seed torch from os.urandom, so each run draws new random inputs; a failure prints the seed, and
    NANOR1_TEST_SEED=<seed> replays it. (Modules opt in with pytestmark = usefixtures("fresh_seed").)"""
    seed = int(os.environ.get("NANOR1_TEST_SEED") or int.from_bytes(os.urandom(4), "little"))
    torch.manual_seed(seed)
    print(f"torch seed {seed} (replay: NANOR1_TEST_SEED={seed})")
    yield seed
