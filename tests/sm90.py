"""Compile Triton kernels for an H100 (sm_90) without a GPU: Triton's NVIDIA backend (ptxas included) runs
on the CPU, and catches what the interpreter lets through (types, tl.dot shapes, constexpr misuse)."""
import os
import subprocess
import sys

import pytest


def compile_for_h100(script: str):
    """Run `script` (which calls triton.compile and prints 'compiled') with the interpreter off."""
    pytest.importorskip("triton.backends.nvidia.compiler")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=root, TRITON_DEFAULT_FP_FUSION="1")
    r = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, cwd=root)
    assert r.returncode == 0 and "compiled" in r.stdout, r.stderr[-3000:]
