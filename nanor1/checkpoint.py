"""Checkpoints that survive crashes and that everything else can read.

    OUT/ckpt-STEP/
        config.json, model.safetensors, tokenizer files   HF layout: Transformer.from_pretrained and
                                                          transformers load it as it is
        trainer.json                                      step, data position, the TrainConfig
        optimizer.pt | optimizer/                         AdamW state (one process) | sharded (DCP, FSDP)
        rng-rank{R}.pt                                    every RNG state of each rank
        critic/                                           PPO only: the critic (nanor1/ppo.py) in HF layout
            config.json, model.safetensors                (a token-classification model with one label)
            optimizer.pt | optimizer/                     its own AdamW state

Atomic: everything is written into OUT/.tmp-ckpt-STEP, then renamed to OUT/ckpt-STEP in one step, so a run
killed in the middle of a save leaves the previous checkpoint intact (and a stale .tmp folder, ignored).
Weights are saved in the parameters' dtype: the fp32 master weights, so a resumed run continues exactly.

Resume (`resume_run`): the run folder's log may hold lines written after the checkpoint resumed from, and newer
checkpoints of a branch that died. Those move to OUT/abandoned/ (never deleted), so the log continues as one
run and the next `--resume latest` cannot pick a dead branch. A resume that changes a setting that alters the
trajectory says so and keeps the earlier settings as config-until-step-N.json.
"""
import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from nanor1.config import save as save_config
from nanor1.distributed import Dist, barrier

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
    """The unsharded model state on the CPU (a collective under FSDP: every rank must call it)."""
    if not d.enabled:
        return model.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_checkpoint(out, step, model, optimizer, trainer_state: dict, tokenizer, d: Dist, keep_last=2,
                    critic=None, critic_optimizer=None):
    out = Path(out)
    tmp, final = out / f".tmp-ckpt-{step}", out / f"ckpt-{step}"
    if d.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(d)
    save_module(tmp, model, optimizer, d)
    if critic is not None:
        save_module(tmp / "critic", critic, critic_optimizer, d)
    if d.is_main:
        tokenizer.save_pretrained(tmp)
        (tmp / "trainer.json").write_text(json.dumps(trainer_state, indent=2))
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


def save_module(folder, model, optimizer, d: Dist):
    """The model's full weights in HF layout (rank 0) and its optimiser state (sharded under FSDP) into
    `folder`. A collective under FSDP: every rank calls it."""
    sd = full_state_dict(model, d)
    if d.is_main:
        model.save_pretrained(folder, state_dict=sd)
    if d.enabled:  # each rank writes its shard of the optimiser state
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
        dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=str(folder / "optimizer"))
    else:
        torch.save(optimizer.state_dict(), folder / "optimizer.pt")


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


def load_checkpoint(path, model, optimizer, d: Dist, critic=None, critic_optimizer=None) -> dict:
    """Restore weights, optimiser and RNG states in place (and the critic's, when one is given); returns the
    trainer state."""
    path = Path(path)
    load_module(path, model, optimizer, d)
    if critic is not None:
        if not (path / "critic" / "model.safetensors").is_file():
            raise FileNotFoundError(f"{path} holds no critic (no critic/model.safetensors): it was not written by "
                                    "a run with --algo ppo")
        load_module(path / "critic", critic, critic_optimizer, d)
    rng = path / f"rng-rank{d.rank}.pt"
    if not rng.is_file():
        raise FileNotFoundError(f"{rng} missing: resume needs the same world size the checkpoint was written with")
    set_rng_state(torch.load(rng, weights_only=False))
    return json.loads((path / "trainer.json").read_text())


def load_module(folder, model, optimizer, d: Dist):
    """The inverse of save_module, in place."""
    from safetensors.torch import load_file
    # Under FSDP only rank 0 reads the full weights; set_model_state_dict broadcasts and shards them
    # (every rank reading them would hold world_size full fp32 copies in host memory).
    sd = load_file(folder / "model.safetensors") if d.is_main else {}
    if sd and model.config.tie_word_embeddings and hasattr(model, "lm_head"):  # (a critic has no LM head)
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    if d.enabled:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                             set_model_state_dict, set_optimizer_state_dict)
        import torch.distributed.checkpoint as dcp
        set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        state = {"optimizer": get_optimizer_state_dict(model, optimizer)}
        dcp.load(state, checkpoint_id=str(folder / "optimizer"))
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
    else:
        with torch.no_grad():
            for name, p in model.state_dict().items():
                p.copy_(sd[name])
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=False))


# ----------------------------------------------------------------------------- resuming a run

# Settings a resume may change without changing what the run computes.
RESUME_FREE = {"out", "resume", "steps", "threads", "eval_every", "eval_size", "log_samples_every", "save_every",
               "keep_last", "micro_batch_size"}


def resume_run(cfg, out: Path, model, optimizer, d: Dist, critic=None, critic_optimizer=None) -> dict:
    """Restore the checkpoint `cfg.resume` names into model and optimizer (and the critic's), tidy the run folder
    for the steps that follow it, and return the trainer state (step, cursor, ...)."""
    ck = resolve(cfg.resume, out)
    state = load_checkpoint(ck, model, optimizer, d, critic, critic_optimizer)
    if d.is_main:
        set_aside(out, state["step"])
        print(f"resumed from {ck} at step {state['step']}")
        changed = changed_settings(state.get("config", {}), cfg)
        if changed:
            print("warning: resumed with changed settings, so this is no longer one uninterrupted run: "
                  + ", ".join(changed))
            if (out / "config.json").exists():  # keep what the earlier steps ran with
                (out / "config.json").rename(free_name(out / f"config-until-step-{state['step']}.json"))
        save_config(cfg, out / "config.json")
    return state


def changed_settings(saved: dict, cfg) -> list:
    """'name old -> new' for each setting that differs from the checkpoint's and changes the trajectory. More
    --steps change nothing done so far, except where the lr schedule is planned over all the steps."""
    now = vars(cfg)
    free = RESUME_FREE | {"config", "dry_run"}
    if cfg.lr_schedule != "constant" or cfg.warmup_ratio:
        free = free - {"steps"}
    return [f"{k} {saved[k]!r} -> {now[k]!r}" for k in sorted(saved)
            if k in now and k not in free and saved[k] != now[k]]


def set_aside(out, step):
    """A resume from checkpoint `step` replays what the run wrote after it. Move that to out/abandoned/ instead
    of deleting it: log lines past the step (and a line torn by a crash) are appended to abandoned/<log>,
    newer checkpoints move there whole."""
    aside = Path(out) / "abandoned"
    for name in ("metrics.jsonl", "samples.jsonl"):
        log = Path(out) / name
        if not log.exists():
            continue
        keep, drop = [], []
        for line in log.read_text().splitlines():
            try:
                kept = json.loads(line)["step"] <= step
            except (json.JSONDecodeError, KeyError, TypeError):
                kept = False
            (keep if kept else drop).append(line + "\n")
        if drop:
            aside.mkdir(exist_ok=True)
            with open(aside / name, "a") as f:
                f.writelines(drop)
        log.write_text("".join(keep))
    for newer in list_checkpoints(out):
        if int(CKPT.match(newer.name).group(1)) > step:
            aside.mkdir(exist_ok=True)
            newer.rename(free_name(aside / newer.name))


def free_name(path):
    """`path`, or `path.2`, `path.3`, ... : the first that does not exist yet (an earlier resume may have
    set aside a file of the same name)."""
    n, target = 1, path
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{n}")
    return target
