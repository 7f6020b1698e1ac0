"""Checkpoints that survive crashes and that everything else can read.

    OUT/ckpt-STEP/
        config.json, model.safetensors, tokenizer files   HF layout: Transformer.from_pretrained and
                                                          transformers load it as it is
        (LoRA: adapter_config.json, adapter_model.safetensors instead of the first two: PEFT's layout,
         the adapters only; the base is the --model folder, see nanor1/lora.py)
        trainer.json                                      step, data position, the TrainConfig
        optimizer.pt | optimizer/                         AdamW state (one process) | sharded (DCP, FSDP)
        rng-rank{R}.pt                                    every RNG state of each rank

Atomic: everything is written into OUT/.tmp-ckpt-STEP, then renamed to OUT/ckpt-STEP in one step, so a run
killed in the middle of a save leaves the previous checkpoint intact (and a stale .tmp folder, ignored).
Weights are saved in the parameters' dtype: the fp32 master weights, so a resumed run continues exactly.
"""
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from nanor1.distributed import Dist, barrier
from nanor1.lora import adapter_keys, read_adapter

CKPT = re.compile(r"^ckpt-(\d+)$")


def rng_state():
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def full_state_dict(model, d: Dist):
    """The unsharded model state on the CPU (a collective under FSDP: every rank must call it). Under LoRA only
    the adapters: the frozen base is the --model folder itself, and gathering it would copy the whole model."""
    lora = getattr(model, "lora", None) is not None
    if not d.enabled:
        sd = model.state_dict()
        if lora:
            keys = set(adapter_keys(model))
            sd = {k: v for k, v in sd.items() if k in keys}
        return sd
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True,
                                                                ignore_frozen_params=lora))


def save_checkpoint(out, step, model, optimizer, trainer_state: dict, tokenizer, d: Dist, keep_last=2):
    out = Path(out)
    tmp, final = out / f".tmp-ckpt-{step}", out / f"ckpt-{step}"
    if d.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(d)
    sd = full_state_dict(model, d)
    if d.is_main:
        model.save_pretrained(tmp, state_dict=sd)
        tokenizer.save_pretrained(tmp)
        (tmp / "trainer.json").write_text(json.dumps(trainer_state, indent=2))
    if d.enabled:  # each rank writes its shard of the optimiser state
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
        dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=str(tmp / "optimizer"))
    else:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / f"rng-rank{d.rank}.pt")
    barrier(d)
    if d.is_main:
        if final.exists():  # a re-save of the same step (e.g. after a resume): replace it
            shutil.rmtree(final)
        tmp.rename(final)  # the commit point
        for old in list_checkpoints(out)[:-keep_last]:
            shutil.rmtree(old)
    barrier(d)
    return final


def list_checkpoints(out):
    """Complete checkpoints in OUT, oldest first."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := CKPT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def resolve(resume: str, out) -> Path:
    """'latest' -> the newest checkpoint in OUT; otherwise the folder given."""
    if resume == "latest":
        found = list_checkpoints(out)
        if not found:
            raise FileNotFoundError(f"--resume latest: no checkpoint (ckpt-STEP folder) in {out}")
        return found[-1]
    path = Path(resume)
    if not (path / "trainer.json").is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no trainer.json)")
    return path


def load_checkpoint(path, model, optimizer, d: Dist) -> dict:
    """Restore weights, optimiser and RNG states in place; returns the trainer state."""
    from safetensors.torch import load_file
    path = Path(path)
    # Under FSDP only rank 0 reads the full weights; set_model_state_dict broadcasts and shards them
    # (every rank reading them would hold world_size full fp32 copies in host memory).
    lora = getattr(model, "lora", None) is not None  # LoRA: the adapters only; the base came from --model
    if lora:
        sd = read_adapter(model, path) if d.is_main else {}
    else:
        sd = load_file(path / "model.safetensors") if d.is_main else {}
    if sd and model.config.tie_word_embeddings and not lora:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    if d.enabled:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                             set_model_state_dict, set_optimizer_state_dict)
        import torch.distributed.checkpoint as dcp
        set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True,
                                                                 strict=not lora))  # LoRA: base keys absent
        state = {"optimizer": get_optimizer_state_dict(model, optimizer)}
        dcp.load(state, checkpoint_id=str(path / "optimizer"))
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
    else:
        with torch.no_grad():
            for name, p in model.state_dict().items():
                if name in sd or not lora:
                    p.copy_(sd[name])
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    rng = path / f"rng-rank{d.rank}.pt"
    if not rng.is_file():
        raise FileNotFoundError(f"{rng} missing: resume needs the same world size the checkpoint was written with")
    set_rng_state(torch.load(rng, weights_only=False))
    return json.loads((path / "trainer.json").read_text())
