"""Checkpoints that survive crashes and that everything else can read.

    OUT/ckpt-STEP/
        config.json, model.safetensors, tokenizer files   HF layout: Transformer.from_pretrained and
                                                          transformers load it as it is
        (LoRA: adapter_config.json, adapter_model.safetensors instead of the first two: PEFT's layout,
         the adapters only; the base is the --model folder, see nanor1/lora.py)
        trainer.json                                      step, data position, the TrainConfig
        optimizer.pt | optimizer/                         AdamW state (one process) | sharded (DCP, FSDP)
        rng-rank{R}.pt                                    every RNG state of each rank
        critic/                                           PPO: the critic (HF layout) and its optimiser
        manifest.json                                     size and sha256 of every other file

A save, in order (a kill at any moment leaves the previous checkpoints intact):
  1. write every file into OUT/.tmp-ckpt-STEP (stale temp folders of an earlier crash are removed first);
  2. hash and fsync every file, then write manifest.json, last, and fsync the folders;
  3. rename .tmp-ckpt-STEP -> ckpt-STEP: the commit point (then fsync OUT, so the rename is on disk too);
  4. prune: rename each old checkpoint to .trash-ckpt-N, then delete it, so a kill in the middle of a
     deletion leaves a folder whose name no one takes for a checkpoint.
A disk that fills up during 1-2 gives one error, "no space left on device", naming the path; the temp folder
is removed. Reading verifies the manifest first (verify_checkpoint): a truncated file is found by its size, a
zero-filled one of the same size by its checksum, before anything is loaded from it.
Weights are saved in the parameters' dtype: the fp32 master weights, so a resumed run continues exactly.

Resume (`resume_run`): the run folder's log may hold lines written after the checkpoint resumed from, and newer
checkpoints of a branch that died. Those move to OUT/abandoned/ (never deleted), so the log continues as one
run and the next `--resume latest` cannot pick a dead branch. A run that died before its first checkpoint starts
over at step 0 (`start_over`). A resume that changes a setting that alters the trajectory says so and keeps the
earlier settings as config-until-step-N.json.
"""
import errno
import hashlib
import json
import os
import random
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from nanor1.config import save as save_config
from nanor1.distributed import Dist, all_gather_objects, barrier
from nanor1.lora import adapter_keys, read_adapter

CKPT = re.compile(r"^ckpt-(\d+)$")
MANIFEST = "manifest.json"
HASH_CHUNK = 16 << 20  # bytes read per hash update: large reads, and hashlib drops the GIL while it hashes them


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


# ---------------------------------------------------------------------------------------------------- saving

def save_checkpoint(out, step, model, optimizer, trainer_state: dict, tokenizer, d: Dist, keep_last=2,
                    critic=None, critic_optimizer=None):
    """Write OUT/ckpt-STEP as the module docstring describes (with PPO's critic under critic/); every rank calls
    it. Returns the path."""
    out = Path(out)
    tmp, final = out / f".tmp-ckpt-{step}", out / f"ckpt-{step}"
    try:
        # Each phase ends with every rank learning whether any rank failed, so none waits for ever in a
        # collective that a failed rank never enters.
        modules = [(tmp, model, optimizer)] + ([(tmp / "critic", critic, critic_optimizer)] if critic else [])
        _together(d, lambda: _prepare(out, tmp, modules, keep_last) if d.is_main else None)
        for folder, module, opt in modules:
            sd = full_state_dict(module, d)  # a collective under FSDP
            _together(d, lambda: save_module(folder, module, sd, opt, d))
        _together(d, lambda: _write(tmp, trainer_state, tokenizer, d))
        _together(d, lambda: write_manifest(tmp) if d.is_main else None)
    except Exception as e:
        if d.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        if _disk_full(e):
            raise _no_space(final, e) from e
        raise
    if d.is_main:
        _commit(tmp, final)
        for old in list_checkpoints(out)[:-keep_last]:
            _discard(old)
    barrier(d)
    return final


def _prepare(out, tmp, modules, keep_last):
    """Clear what an earlier crash left, make the temp folder, and refuse a save the disk cannot hold."""
    for stale in out.glob(".tmp-ckpt-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in out.glob(".trash-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    # Weights plus optimiser state (AdamW: two fp32 moments per parameter, so about 3x the fp32 weights).
    # numel() of a DTensor is its global size, so under FSDP this is the whole checkpoint, all ranks' shards.
    tensors = [t for _, model, optimizer in modules for t in list(model.state_dict().values()) +
               [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]]
    need = sum(t.numel() * t.element_size() for t in tensors)
    free = shutil.disk_usage(out).free
    if need > free:
        raise OSError(errno.ENOSPC, f"it needs about {need / 1e9:.2f} GB and {out} has {free / 1e9:.2f} GB free "
                                    f"(the {keep_last} kept checkpoints are pruned only after a new one is written)")


def save_module(folder, model, sd, optimizer, d: Dist):
    """A model's full weights `sd` in HF layout (rank 0) and its optimiser state (each rank its shard under FSDP)."""
    if d.is_main:
        model.save_pretrained(folder, state_dict=sd)
    if d.enabled:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
        dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=str(folder / "optimizer"))
    else:
        _torch_save(optimizer.state_dict(), folder / "optimizer.pt")


def _write(tmp, trainer_state, tokenizer, d: Dist):
    if d.is_main:
        tokenizer.save_pretrained(tmp)
        (tmp / "trainer.json").write_text(json.dumps(trainer_state, indent=2))
    _torch_save(rng_state(), tmp / f"rng-rank{d.rank}.pt")


def _torch_save(obj, path):
    # Through a Python file object: a full disk then raises OSError(ENOSPC) (as the RuntimeError's context),
    # where torch's own file writer reports only "unexpected pos N vs M".
    with open(path, "wb") as f:
        torch.save(obj, f)


def _together(d: Dist, fn):
    """Run fn here; then every rank learns whether any rank's fn raised, and all raise."""
    error = None
    try:
        fn()
    except Exception as e:
        error = e
    failed = [m for m in all_gather_objects(None if error is None else f"{type(error).__name__}: {error}", d) if m]
    if error is not None:
        raise error
    if failed:
        raise RuntimeError(f"saving the checkpoint failed on another rank: {failed[0]}")


def _disk_full(e: BaseException) -> bool:
    """Whether `e`, or an exception it was raised from or during, is a full disk or quota."""
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e) or "os error 28" in str(e):  # safetensors' and DCP's wrappers
            return True
        e = e.__cause__ or e.__context__
    return False


def _no_space(final, e):
    detail = e.strerror if isinstance(e, OSError) and e.errno == errno.ENOSPC and e.strerror else str(e)
    err = OSError(f"no space left on device: saving checkpoint {final} failed ({detail}); its temp folder "
                  f"was removed and the earlier checkpoints are intact")
    err.errno = errno.ENOSPC
    return err


def _commit(tmp, final):
    """tmp -> final in one rename. A re-save of the same step (after a resume) swaps the old folder out first."""
    old = final.rename(_trash_name(final)) if final.exists() else None
    tmp.rename(final)  # the commit point
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old)


def _discard(path):
    """Delete a checkpoint folder from its name first: once renamed, a kill mid-deletion leaves only trash."""
    trash = path.rename(_trash_name(path))
    _fsync_dir(path.parent)
    shutil.rmtree(trash)


def _trash_name(path):
    return free_name(path.with_name(f".trash-{path.name}"))


def free_name(path):
    """`path`, or `path.2`, `path.3`, ... : the first that does not exist yet (an earlier resume may have
    set aside a file of the same name)."""
    n, target = 1, path
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{n}")
    return target


# ---------------------------------------------------------------------------------------------------- manifest

def write_manifest(folder):
    """Hash and fsync every file under `folder`, then write folder/manifest.json and fsync the folders.

    One sha256 pass over what was just written (mostly still in the page cache): about 1 GB/s per file on one
    core, files in parallel. The fsyncs make the bytes durable before the commit rename can make them visible."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(files)))) as pool:
        sums = list(pool.map(lambda p: _hash(p, sync=True), files))
    entries = {p.relative_to(folder).as_posix(): {"bytes": size, "sha256": digest}
               for p, (size, digest) in zip(files, sums)}
    manifest = folder / MANIFEST
    with open(manifest, "w") as f:
        json.dump({"format": "nanor1-manifest-1", "files": entries}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    for sub in {folder, *(p.parent for p in files)}:
        _fsync_dir(sub)


def verify_checkpoint(path, names=None):
    """Check the files of checkpoint folder `path` (or only `names`, paths inside it) against its manifest.json.
    Returns None; raises FileNotFoundError or ValueError naming the first file that is missing, has the wrong
    size (truncated) or the wrong sha256 (overwritten, e.g. zero-filled)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} not found")
    try:
        entries = json.loads((path / MANIFEST).read_text())["files"]
        if not all(type(e["bytes"]) is int and isinstance(e["sha256"], str) for e in entries.values()):
            raise TypeError
    except FileNotFoundError:
        raise ValueError(f"{path} has no {MANIFEST}: an incomplete checkpoint (a save or a deletion was "
                         "interrupted) or one written before nanoR1 wrote manifests") from None
    except (ValueError, KeyError, TypeError, AttributeError):  # UnicodeDecodeError is a ValueError
        raise ValueError(f"{path / MANIFEST} is damaged (not the JSON nanoR1 writes: "
                         '{"files": {name: {"bytes", "sha256"}}})') from None
    names = list(entries) if names is None else [n for n in names if n in entries]
    for name in names:  # sizes first: a truncated file is found without reading anything
        file = path / name
        if not file.is_file():
            raise ValueError(f"checkpoint {path} is damaged: {name} is missing")
        size = file.stat().st_size
        if size != entries[name]["bytes"]:
            raise ValueError(f"checkpoint {path} is damaged: {name} has {size} bytes, its manifest says "
                             f"{entries[name]['bytes']} (truncated or overwritten)")
    with ThreadPoolExecutor(max_workers=min(8, max(1, len(names)))) as pool:
        sums = list(pool.map(lambda n: _hash(path / n)[1], names))
    for name, digest in zip(names, sums):
        if digest != entries[name]["sha256"]:
            raise ValueError(f"checkpoint {path} is damaged: {name} does not match its sha256 in {MANIFEST} "
                             "(its bytes changed after the save, e.g. zero-filled by a crash)")


def _hash(path, sync=False):
    """(size in bytes, sha256 hex digest) of a file; fsync it too when `sync`."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
            size += len(chunk)
        if sync:
            os.fsync(f.fileno())
    return size, h.hexdigest()


def _fsync_dir(path):
    """Make a folder's entries (new files, renames) durable. Linux/macOS; Windows cannot open a folder."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a folder; the data files were synced already
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------- resuming

def list_checkpoints(out):
    """Committed checkpoints in OUT (folders named ckpt-STEP), oldest first; verify before trusting one."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out.iterdir() if (m := CKPT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def newest_intact(out, say=print):
    """The newest checkpoint in OUT whose files match its manifest, saying which newer ones were skipped and
    why; None when OUT holds no checkpoint at all. Raises ValueError when it holds some but none is intact."""
    found = list_checkpoints(out)
    problems = []
    for ck in reversed(found):
        try:
            verify_checkpoint(ck)
        except ValueError as e:
            problems.append(str(e))
            say(f"warning: skipping a damaged checkpoint: {e}")
            continue
        if problems:
            say(f"warning: falling back to {ck}, the newest intact checkpoint")
        return ck
    if found:
        raise ValueError(f"no intact checkpoint in {out}: " + "; ".join(problems))
    return None


def resolve(resume: str, out, say=print) -> Path:
    """'latest' -> the newest intact checkpoint in OUT (newest_intact); otherwise the folder given, verified."""
    if resume == "latest":
        found = newest_intact(out, say)
        if found is None:
            raise FileNotFoundError(f"--resume latest: no checkpoint (ckpt-STEP folder) in {out}")
        return found
    path = Path(resume)
    if not (path / "trainer.json").is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no trainer.json)")
    verify_checkpoint(path)
    return path


def make_run_folder(out):
    """Create the run folder OUT, refusing one that cannot be: an existing file, a folder holding a model or a
    checkpoint (the run's config.json would overwrite the model's, which then no longer loads), or a place
    where nothing can be written (tried for real: permissions say little to root, or about /proc)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_config.json",
                 "trainer.json", MANIFEST):
        if (out / name).exists():
            raise ValueError(f"--out {out} holds a model or a checkpoint ({name}): a run written there would "
                             "overwrite its config.json; choose another folder")
    if _holds_model_config(out / "config.json"):
        raise ValueError(f"--out {out} holds a model's config.json (it names a model_type): a run written there "
                         "would overwrite it; choose another folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    return out


def _holds_model_config(file):
    """Whether `file` is a model's config.json (a run's config.json has no model_type)."""
    try:
        return "model_type" in json.loads(file.read_text())
    except (OSError, ValueError, TypeError):  # absent, unreadable, not JSON, not an object
        return False


def start_over(out, say=print):
    """`--resume latest` in a run folder without any checkpoint: the run died before its first save (say in
    the step-0 eval). Move what it wrote (metrics.jsonl, samples.jsonl, config.json) into OUT/abandoned/,
    renamed, never deleted, so that a fresh run can start at step 0 in the same folder. Returns the names moved."""
    out = Path(out)
    if list_checkpoints(out):
        raise ValueError(f"start_over: {out} holds checkpoints; resume from one instead")
    moved = []
    for name in ("metrics.jsonl", "samples.jsonl", "config.json"):
        if (out / name).exists():
            (out / "abandoned").mkdir(exist_ok=True)
            (out / name).rename(free_name(out / "abandoned" / name))  # one rename: a kill cannot split it
            moved.append(name)
    if moved:
        say(f"--resume latest: no checkpoint in {out}, starting at step 0; the earlier attempt's "
            f"{', '.join(moved)} moved to {out / 'abandoned'}")
    return moved


def load_checkpoint(path, model, optimizer, d: Dist, critic=None, critic_optimizer=None) -> dict:
    """Restore weights, optimiser and RNG states in place (and the critic's, when one is given); returns the
    trainer state. `path` comes from `resolve`, which has verified its files against the manifest."""
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
    lora = getattr(model, "lora", None) is not None  # LoRA: the adapters only; the base came from --model
    if lora:
        sd = read_adapter(model, folder) if d.is_main else {}
    else:
        sd = load_file(folder / "model.safetensors") if d.is_main else {}
    if sd and model.config.tie_word_embeddings and not lora and hasattr(model, "lm_head"):  # (a critic: no head)
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    if d.enabled:
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                             set_model_state_dict, set_optimizer_state_dict)
        import torch.distributed.checkpoint as dcp
        set_model_state_dict(model, sd, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True,
                                                                 strict=not lora))  # LoRA: base keys absent
        state = {"optimizer": get_optimizer_state_dict(model, optimizer)}
        dcp.load(state, checkpoint_id=str(folder / "optimizer"))
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
    else:
        with torch.no_grad():
            for name, p in model.state_dict().items():
                if name in sd or not lora:
                    p.copy_(sd[name])
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=False))


# ---------------------------------------------------------------------------------------------------- a run's folder

# Settings a resume may change without changing what the run computes.
RESUME_FREE = {"out", "resume", "steps", "threads", "eval_every", "eval_size", "eval_samples", "eval_temperature",
               "log_samples_every", "save_every", "keep_last", "micro_batch_size", "micro_batch_tokens", "config",
               "dry_run"}


def resume_run(cfg, out: Path, model, optimizer, d: Dist, critic=None, critic_optimizer=None) -> dict:
    """Restore the checkpoint `cfg.resume` names (verified; `latest` falls back to the newest intact one) into
    the models and optimisers, tidy the run folder for the steps that follow it, and return the trainer state.
    `--resume latest` in a folder without any checkpoint starts over at step 0 (`start_over`)."""
    found = None
    if d.is_main:  # only rank 0 hashes the checkpoint: every rank doing it would read it world_size times
        try:
            found = resolve(cfg.resume, out) if cfg.resume != "latest" or list_checkpoints(out) else "start over"
        except (ValueError, FileNotFoundError) as e:
            found = e
    found = all_gather_objects(found, d)[0]
    if isinstance(found, Exception):
        raise found
    if found == "start over":
        if d.is_main:
            start_over(out)
            save_config(cfg, out / "config.json")
        return dict(step=0, cursor=0, opt_step=0)
    state = load_checkpoint(found, model, optimizer, d, critic, critic_optimizer)
    if d.is_main:
        set_aside(out, state["step"])
        print(f"resumed from {found} at step {state['step']}")
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
    free = RESUME_FREE - ({"steps"} if cfg.lr_schedule != "constant" or cfg.warmup_ratio else set())
    return [f"{k} {saved[k]!r} -> {now[k]!r}" for k in sorted(saved)
            if k in now and k not in free and saved[k] != now[k]]


def set_aside(out, step):
    """A resume from checkpoint `step` replays what the run wrote after it. Move that to out/abandoned/ instead
    of deleting it: log lines past the step (and a line torn by a crash) are appended to abandoned/<log>, newer
    checkpoints move there whole. Each log is rewritten to a temp file and renamed over, so a kill midway
    loses nothing."""
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
                f.flush()
                os.fsync(f.fileno())
        tmp = log.with_name(log.name + ".tmp")
        with open(tmp, "w") as f:
            f.writelines(keep)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, log)
    for newer in list_checkpoints(out):
        if int(CKPT.match(newer.name).group(1)) > step:
            aside.mkdir(exist_ok=True)
            newer.rename(free_name(aside / newer.name))
