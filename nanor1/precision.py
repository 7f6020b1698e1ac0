"""Precision, decided in one place. train.py, sample.py and the evaluator all take a `Precision` from here.

    | tensor                                            | CPU (default) | CUDA (default)          |
    |---------------------------------------------------|---------------|-------------------------|
    | master weights, gradients, AdamW state            | fp32          | fp32                    |
    | matmuls, attention, KV cache, logits              | fp32          | bf16 (fp32 accumulate)  |
    | residual stream, norm statistics, rope, softmax   | fp32          | fp32                    |

Why fp32 masters: AdamW's update at RL learning rates (1e-6 x a unit-scale step) is below bf16's resolution for
weights of order 1e-2, so a pure-bf16 optimiser barely moves them. Why bf16 compute: tensor cores, and half the
bytes for the KV cache and the gathered weights of a rollout.

One process and FSDP compute the same way. One process runs `torch.autocast(bf16)` over fp32 weights; under
FSDP2 the MixedPrecisionPolicy all-gathers bf16 copies of the weights (half the traffic) *and* the same autocast
runs. The model itself (nanor1/model.py) keeps its residual stream in fp32 and rounds what autocast would not
touch (the embedding rows, the norm weights) to the compute dtype, so both paths multiply the same bf16
numbers: tests/test_distributed.py checks that the 2-rank bf16 log-probs equal one process's bit for bit, and
that one update agrees to bf16 rounding (each rank's gradient is rounded to bf16 before the fp32 reduction;
one process rounds the whole batch's once: 4e-3 of the step apart on a tiny model).

`--precision bf16` forces bf16 compute on the CPU too (slow there, but it is how the tests check the GPU recipe
without a GPU); `--precision fp32` keeps everything in fp32 on a GPU.
"""
from contextlib import nullcontext
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    compute: torch.dtype  # matmuls, attention, KV cache, logits
    device_type: str  # "cpu" or "cuda": where autocast applies
    params: torch.dtype = torch.float32  # what the optimiser holds (fp32 masters)

    def autocast(self):
        """The context every forward runs in: bf16 matmuls over fp32 weights, or nothing in fp32."""
        if self.compute == torch.float32:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.compute)

    def fsdp_policy(self):
        """FSDP2's policy: gather weights in the compute dtype, reduce gradients in fp32. Forward inputs are left
        as they are: FSDP2 would otherwise cast each block's input, the fp32 residual stream (and rope's fp32
        cos/sin), to bf16, which one process does not do (2e-3 nats apart on a tiny model, test_distributed)."""
        from torch.distributed.fsdp import MixedPrecisionPolicy
        if self.compute == torch.float32:
            return MixedPrecisionPolicy()
        return MixedPrecisionPolicy(param_dtype=self.compute, reduce_dtype=torch.float32, cast_forward_inputs=False)


def choose(device: torch.device, name: str = "auto") -> Precision:
    """`name`: auto (bf16 on CUDA, fp32 elsewhere), bf16 or fp32."""
    if name not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32, got {name!r}")
    bf16 = name == "bf16" or (name == "auto" and device.type == "cuda")
    return Precision(compute=torch.bfloat16 if bf16 else torch.float32, device_type=device.type)
