"""Everything distributed, in one place: process-group setup from torchrun's environment, FSDP2 sharding,
the weight gathering the rollout phase needs, and the few collectives the trainer uses.

A single process without torchrun runs the same code: every helper here is then the identity.

    torchrun --standalone --nproc_per_node=8 train.py ...    one node, 8 GPUs (nccl)
    torchrun --nproc_per_node=2 train.py ...                 2 CPU processes (gloo): how the tests run it
"""
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def enabled(self):
        return self.world_size > 1


def setup() -> Dist:
    """Read RANK / WORLD_SIZE / LOCAL_RANK (set by torchrun); the rendezvous address comes from its
    MASTER_ADDR / MASTER_PORT too, so nothing here picks a port."""
    cuda = torch.cuda.is_available()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        # The trainer's small collectives (metrics, counts) are CPU tensors: gloo carries those, nccl the
        # CUDA ones (FSDP's all-gathers and reduce-scatters).
        dist.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo")
    return Dist(rank, world, local, torch.device(f"cuda:{local}" if cuda else "cpu"))


def teardown(d: Dist):
    """The end of a run: every rank waits for the others (no collective is left half done), then the process
    groups go."""
    if d.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_main(main):
    """Run an entry script's main: bad input (a ValueError, a missing file, an OSError such as a full disk or an
    unwritable folder, ...) is one `error:` line and exit code 2, never a traceback; NANOR1_TRACEBACK=1 shows the
    traceback instead, for debugging. Then a torchrun worker leaves with exit_worker."""
    try:
        main()
    except (ValueError, OSError, KeyError, NotImplementedError) as e:
        if os.environ.get("NANOR1_TRACEBACK") == "1":
            raise
        if isinstance(e, OSError) and e.strerror and e.filename:  # errno's text and the path, not "error: 2"
            message = f"{e.filename}: {e.strerror}"
        else:
            message = e.args[0] if e.args else str(e)  # (str(KeyError) adds quotes)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    exit_worker()


def exit_worker():
    """End a torchrun worker with os._exit, skipping Python's interpreter shutdown (a no-op in a single process).

    gloo's worker threads outlive destroy_process_group (FSDP still holds the group), and one may still be
    releasing the last collective's work object when the main thread returns. Its tensors hold Python
    references, so the release needs the GIL; during interpreter shutdown the thread cannot take it and the
    process aborts ("terminate called without an active exception", SIGABRT). Measured here: 4 of 134
    two-rank CPU runs before, 0 of 200 after (BENCHMARKS.md); a core dump shows c10d::ProcessGroupGloo::AsyncWork::~AsyncWork -> decref_pyobject ->
    PyThread_exit_thread in a runLoop thread while the main thread is in Py_FinalizeEx. Everything the run
    wrote is closed by then; only the streams need flushing."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def shard(model, d: Dist, prec=None, frozen=False):
    """FSDP2: each transformer block is one unit (all-gathered just before it runs, freed after), then the
    root (embedding, final norm, lm_head). Parameters stay fp32 (the master copy the optimiser updates);
    `prec.fsdp_policy()` gathers them in the compute dtype and reduces gradients in fp32 (nanor1/precision.py).
    A `frozen` model (the KL reference) has no backward, so its root frees its gathered weights after each
    forward too. No-op in one process, and for model None.
    Under LoRA (nanor1/lora.py, applied before this) the same units hold a frozen base (bf16 on CUDA) beside fp32
    adapters: FSDP2 gathers mixed dtypes in one buffer and needs one dtype only among the trainable parameters
    (the adapters), the only ones it reduce-scatters; nothing here changes."""
    if not d.enabled or model is None:
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    mp = prec.fsdp_policy() if prec is not None else MixedPrecisionPolicy()
    for block in model.model.layers:
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    if frozen:
        model.set_reshard_after_forward(True)
    return model


def fsdp_modules(model):
    from torch.distributed.fsdp import FSDPModule
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextmanager
def gathered(model):
    """Hold the full weights for the rollout phase. Ranks run different numbers of decode steps, so no
    collective may happen inside the decode loop: all-gather once here, and keep the weights gathered
    across forwards (unshard() alone would reshard after the first forward, and the ranks would deadlock
    on the next all-gather)."""
    mods = fsdp_modules(model)
    for m in mods:
        m.unshard()
        m.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for m in mods:
            m.reshard()
            # Blocks reshard after forward again; the root keeps its weights between forward and backward,
            # which is FSDP2's own default for the root (its parameters are needed again first in backward).
            m.set_reshard_after_forward(m is not model, recurse=False)


def all_reduce(t: torch.Tensor, d: Dist, op="sum"):
    """Sum (or max / min) a tensor over ranks, in place; returns it."""
    if d.enabled:
        dist.all_reduce(t, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op])
    return t


def all_gather(t: torch.Tensor, d: Dist):
    """(W, *t.shape): every rank's tensor, in rank order; (1, *t.shape) in one process."""
    if not d.enabled:
        return t[None]
    out = [torch.empty_like(t) for _ in range(d.world_size)]
    dist.all_gather(out, t)
    return torch.stack(out)


def all_gather_objects(obj, d: Dist):
    """A list with every rank's `obj`, in rank order."""
    if not d.enabled:
        return [obj]
    out = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist):
    if d.enabled:
        dist.barrier()
