"""Hostile input and crashes (issue 26): a bad file gets one clear error naming it, a crash never damages what
was saved, a damaged checkpoint is found before it is read, and the verifier worker cannot outlive the trainer,
eat the machine's memory or stall a step."""
import errno
import json
import os
import random
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import sample
import train
from nanor1 import checkpoint
from nanor1.checkpoint import (list_checkpoints, make_run_folder, newest_intact, resolve, save_checkpoint,
                               start_over, verify_checkpoint, write_manifest)
from nanor1.distributed import Dist
from nanor1.model import Transformer
from nanor1.tasks import get_task
from nanor1.tokenizer import Tokenizer
from nanor1.verifier import Verifier
from tests.hostile import Hostile

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "data" / "tiny"
needs_tiny = pytest.mark.skipif(not (TINY / "model.safetensors").is_file(), reason="data/tiny not built")
TIMINGS = {"rollout_s", "train_s"}


def entry_point(script, argv, monkeypatch, capsys):
    """Run train.py / sample.py as `python script argv` does (its __main__ block), in this process.
    Returns (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", [script, *map(str, argv)])
    monkeypatch.delenv("NANOR1_TRACEBACK", raising=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(ROOT / script), run_name="__main__")
    return exit_.value.code, capsys.readouterr().err


def one_error_line(code, err, *words):
    """What every bad input gives at an entry point: exit 2 and exactly one `error:` line holding `words`."""
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])


# ------------------------------------------------------------------------------------- bad model and tokenizer files

MODEL = TINY / "model.safetensors"
_DROP = object()


def _config(**change):
    """data/tiny's config.json with keys changed (or dropped: _DROP), as bytes."""
    if not MODEL.is_file():
        return b""  # the tests that use it are skipped
    raw = json.loads((TINY / "config.json").read_text())
    for k, v in change.items():
        if v is _DROP:
            raw.pop(k)
        else:
            raw[k] = v
    return json.dumps(raw).encode()


def _with_bad(name, value):
    """An edit of data/tiny's tensors: tensor `name` replaced by value(tensor)."""
    def edit(t):
        t[name] = value(t[name])
    return edit


BAD_MODEL_FILES = [
    # (id, file, bytes or a tensor edit, words the error must hold)
    ("config-null", "config.json", b"null", ["config.json", "JSON object", "null"]),
    ("config-list", "config.json", b"[1, 2]", ["config.json", "JSON object"]),
    ("config-binary", "config.json", b"\xff\xfe\x00garbage", ["config.json", "not UTF-8"]),
    ("config-torn", "config.json", b'{"model_type": "qwen2", "hidden', ["config.json", "not valid JSON"]),
    ("size-string", "config.json", _config(hidden_size="128"), ["config.json", "hidden_size", "positive integer"]),
    ("size-negative", "config.json", _config(num_hidden_layers=-4), ["num_hidden_layers", "positive integer"]),
    ("size-zero", "config.json", _config(vocab_size=0), ["vocab_size", "positive integer"]),
    ("size-float", "config.json", _config(intermediate_size=384.0), ["intermediate_size", "positive integer"]),
    ("heads-zero", "config.json", _config(num_attention_heads=0), ["num_attention_heads", "positive integer"]),
    ("theta-negative", "config.json", _config(rope_theta=-10000.0), ["rope_theta", "positive finite"]),
    ("theta-zero", "config.json", _config(rope_theta=0), ["rope_theta", "positive finite"]),
    ("eps-nan", "config.json", _config(rms_norm_eps=float("nan")), ["rms_norm_eps", "positive finite"]),
    ("tie-string", "config.json", _config(tie_word_embeddings="yes"), ["tie_word_embeddings", "bool"]),
    ("missing-key", "config.json", _config(hidden_size=_DROP), ["config.json", "missing required key 'hidden_size'"]),
    ("layers-huge", "config.json", _config(num_hidden_layers=10**7), ["num_hidden_layers=10000000", "4 layers"]),
    ("vocab-huge", "config.json", _config(vocab_size=10**9), ["vocab_size=1000000000", "shape (320, 128)"]),
    ("weights-truncated", "model.safetensors", MODEL.read_bytes()[:100_000] if MODEL.is_file() else b"",
     ["model.safetensors", "not a readable safetensors file"]),
    ("weights-garbage", "model.safetensors", random.Random(0).randbytes(5000),
     ["model.safetensors", "not a readable safetensors file"]),
    ("weights-zeros", "model.safetensors", bytes(MODEL.stat().st_size if MODEL.is_file() else 8),
     ["model.safetensors", "not a readable safetensors file"]),
    ("weights-int64", "model.safetensors", _with_bad("model.norm.weight", lambda t: t.long()),
     ["model.norm.weight", "I64", "F32"]),
    ("weights-bool", "model.safetensors", _with_bad("model.norm.weight", lambda t: t > 0),
     ["model.norm.weight", "BOOL"]),
    ("weights-nan", "model.safetensors",
     _with_bad("model.layers.2.mlp.up_proj.weight", lambda t: t.index_fill(0, torch.tensor([7]), float("nan"))),
     ["'model.layers.2.mlp.up_proj.weight'", "NaN or inf"]),
    ("weights-inf", "model.safetensors",
     _with_bad("model.layers.0.self_attn.q_proj.bias", lambda t: t.index_fill(0, torch.tensor([3]), float("inf"))),
     ["'model.layers.0.self_attn.q_proj.bias'", "NaN or inf"]),
    ("tokenizer-garbage", "tokenizer.json", b"\x00\x01 not json", ["tokenizer.json", "not a readable tokenizer.json"]),
    ("tokenizer-torn", "tokenizer.json", (TINY / "tokenizer.json").read_bytes()[:300] if MODEL.is_file() else b"",
     ["tokenizer.json", "not a readable tokenizer.json"]),
    ("tokenizer-config-null", "tokenizer_config.json", b"null", ["tokenizer_config.json", "JSON object"]),
    ("eos-id-string", "generation_config.json", b'{"eos_token_id": "zero"}', ["eos_token_id", "int"]),
]


def bad_model(tmp_path, file, content):
    folder = tmp_path / "model"
    shutil.copytree(TINY, folder)
    if callable(content):
        tensors = load_file(TINY / "model.safetensors")
        content(tensors)
        save_file(tensors, folder / file, metadata={"format": "pt"})
    else:
        (folder / file).write_bytes(content)
    return folder


@needs_tiny
@pytest.mark.parametrize("case", BAD_MODEL_FILES, ids=[c[0] for c in BAD_MODEL_FILES])
def test_bad_model_folder_is_one_error_line(case, tmp_path, monkeypatch, capsys):
    """sample.py on a damaged model folder: exit 2 and one `error:` line naming the file and what is wrong."""
    _, file, content, words = case
    folder = bad_model(tmp_path, file, content)
    code, err = entry_point("sample.py", ["--model", folder, "--prompt", "1+1=", "--max_new_tokens", "2"],
                            monkeypatch, capsys)
    one_error_line(code, err, *words)


@needs_tiny
@pytest.mark.parametrize("case", [c for c in BAD_MODEL_FILES if c[0] in ("config-null", "weights-nan",
                                                                        "tokenizer-garbage", "layers-huge")],
                         ids=lambda c: c[0])
def test_train_py_refuses_a_bad_model_before_writing(case, tmp_path, monkeypatch, capsys):
    """The same through train.py: the error comes before the run folder exists, so nothing blocks a rerun."""
    _, file, content, words = case
    folder = bad_model(tmp_path, file, content)
    code, err = entry_point("train.py", ["--model", folder, "--out", tmp_path / "run", "--steps", "1",
                                         "--threads", "1"], monkeypatch, capsys)
    assert code == 2 and err.count("error:") == 1 and words[0] in err, err
    assert not (tmp_path / "run").exists()


@needs_tiny
def test_float16_and_bfloat16_weights_load(tmp_path):
    for dt in (torch.float16, torch.bfloat16):
        folder = bad_model(tmp_path / str(dt), "model.safetensors",
                           lambda t: t.update({k: v.to(dt) for k, v in t.items()}))
        m = Transformer.from_pretrained(folder, dtype=torch.float32)
        assert torch.isfinite(m(torch.tensor([[1, 2, 3]]))).all()


BAD_ADAPTER_FILES = [
    # (id, file, bytes (or None: flip bytes of the saved file at the same size), words the error must hold)
    ("adapter-config-binary", "adapter_config.json", b"\xff\xfe\x00garbage", ["adapter_config.json", "not UTF-8"]),
    ("adapter-config-null", "adapter_config.json", b"null", ["adapter_config.json", "JSON object"]),
    ("adapter-config-torn", "adapter_config.json", b'{"peft_type": "LORA", "r', ["adapter_config.json",
                                                                                 "not valid JSON"]),
    ("adapter-config-no-r", "adapter_config.json", "drop r", ["adapter_config.json", "r (the adapters' rank)"]),
    ("adapter-weights-zeros", "adapter_model.safetensors", "zeros", ["adapter_model.safetensors",
                                                                     "not a readable safetensors file"]),
    ("adapter-weights-flipped", "adapter_model.safetensors", "flip", ["adapter_model.safetensors", "sha256"]),
]


@needs_tiny
@pytest.mark.parametrize("case", BAD_ADAPTER_FILES, ids=[c[0] for c in BAD_ADAPTER_FILES])
def test_bad_lora_checkpoint_is_one_error_line(case, tmp_path, monkeypatch, capsys):
    """A LoRA checkpoint (PEFT's adapter layout) is checked on load like a full one: its manifest first (same
    size, other bytes), then each file; sample.py prints one `error:` line naming the file."""
    from nanor1 import lora
    _, file, how, words = case
    base = tmp_path / "base"
    shutil.copytree(TINY, base)
    model = lora.apply_lora(Transformer.from_pretrained(base, dtype=torch.float32), 4, base=str(base))
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(base / name, ckpt / name)
    if how == "flip":  # the manifest was written by the save: bytes changed later are found by their hash
        write_manifest(ckpt)
        data = bytearray((ckpt / file).read_bytes())
        data[-8:] = bytes(b ^ 0xFF for b in data[-8:])  # (B starts at zero: flip, do not zero)
        (ckpt / file).write_bytes(bytes(data))
    elif how == "zeros":
        (ckpt / file).write_bytes(bytes((ckpt / file).stat().st_size))
    elif how == "drop r":
        raw = json.loads((ckpt / file).read_text())
        del raw["r"]
        (ckpt / file).write_text(json.dumps(raw))
    else:
        (ckpt / file).write_bytes(how)
    code, err = entry_point("sample.py", ["--model", ckpt, "--prompt", "1+1=", "--max_new_tokens", "2"],
                            monkeypatch, capsys)
    one_error_line(code, err, *words)


def test_out_refuses_model_folders_of_every_layout(tmp_path):
    """--out on a PEFT adapter folder or an HF folder whose weights are pytorch_model.bin: refused, as a
    safetensors model folder is (the run's config.json would overwrite the model's)."""
    for name, content in (("adapter_config.json", "{}"), ("pytorch_model.bin", "")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / name).write_text(content)
        with pytest.raises(ValueError, match=name):
            make_run_folder(folder)
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "qwen2"}')
    with pytest.raises(ValueError, match="model_type"):
        make_run_folder(folder)
    (folder / "config.json").write_text('{"algo": "grpo", "steps": 3}')  # a run's own config.json: fine
    assert make_run_folder(folder) == folder


# ------------------------------------------------------------------------------------------------------ data files

def _gsm8k_dir(tmp_path, lines):
    (tmp_path / "gsm8k").mkdir(parents=True, exist_ok=True)
    (tmp_path / "gsm8k" / "train.jsonl").write_bytes(b"".join(
        (x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines))
    return tmp_path


def test_empty_data_file_is_one_clear_error(tmp_path):
    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "train.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"train\.jsonl is empty"):
        get_task("gsm8k", data_dir=str(tmp_path)).train_rows()


def test_split_with_no_rows_is_one_clear_error(tmp_path):
    """countdown's test split is rows 9002.. of its file: a short file leaves it empty, which is an error, not
    an evaluation of 0 problems."""
    from nanor1.tasks.countdown import COUNTDOWN_FILE
    (tmp_path / COUNTDOWN_FILE).parent.mkdir()
    (tmp_path / COUNTDOWN_FILE).write_text(json.dumps({"target": 3, "nums": [1, 2]}) + "\n")
    task = get_task("countdown", data_dir=str(tmp_path))
    assert len(task.train_rows()) == 1
    with pytest.raises(ValueError, match="split 'test' has no rows"):
        task.eval_rows()


@needs_tiny
@pytest.mark.parametrize("lines, extra, message", [
    ([], [], "empty"),
    (["not json"], [], "data.jsonl:1: not valid JSON"),
    ([{"prompt": "1+1=", "answer": "2"}], ["--eval_data", "EMPTY"], "empty"),
], ids=["empty-data", "bad-line", "empty-eval-data"])
def test_bad_data_through_train_py_is_one_error_line(lines, extra, message, tmp_path, monkeypatch, capsys):
    """The data checks above, through the entry point: one `error:` line, exit 2, no run folder left behind."""
    data, empty = tmp_path / "data.jsonl", tmp_path / "empty.jsonl"
    data.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    empty.write_text("")
    extra = [str(empty) if a == "EMPTY" else a for a in extra]
    code, err = entry_point("train.py", ["--task", "jsonl", "--data", data, *extra, "--out", tmp_path / "run",
                                         "--steps", "1", "--threads", "1"], monkeypatch, capsys)
    one_error_line(code, err, message)
    assert not (tmp_path / "run").exists()


def test_gsm8k_numeric_answers(tmp_path):
    """An answer stored as a JSON number is that number; any other non-string answer names file:line."""
    data = _gsm8k_dir(tmp_path, [{"question": "q1", "answer": "so 3 #### 1,234"}, {"question": "q2", "answer": 18},
                                 {"question": "q3", "answer": -2.5}])
    assert [r["gold"] for r in get_task("gsm8k", data_dir=str(data)).train_rows()] == ["1234", "18", "-2.5"]
    for k, bad in enumerate(({"question": "q", "answer": [18]}, {"question": "q", "answer": True},
                             {"question": ["q"], "answer": "#### 3"})):
        data = _gsm8k_dir(tmp_path / f"bad{k}", [{"question": "q", "answer": "#### 1"}, bad])
        with pytest.raises(ValueError, match=r"train\.jsonl:2: 'question' must be a string"):
            get_task("gsm8k", data_dir=str(data)).train_rows()


def test_binary_data_line_names_file_and_line(tmp_path):
    data = _gsm8k_dir(tmp_path, [{"question": "q", "answer": "#### 1"}, b"\xff\xfe\xfd"])
    with pytest.raises(ValueError, match=r"train\.jsonl:2: not UTF-8"):
        get_task("gsm8k", data_dir=str(data)).train_rows()


# ---------------------------------------------------------------------------------------------- checkpoint integrity

def _folder(tmp_path):
    ck = tmp_path / "ckpt-1"
    (ck / "optimizer").mkdir(parents=True)
    (ck / "model.safetensors").write_bytes(os.urandom(4096))
    (ck / "trainer.json").write_text('{"step": 1}')
    (ck / "optimizer" / "__0_0.distcp").write_bytes(os.urandom(1000))  # subfolders count too (DCP shards)
    write_manifest(ck)
    return ck


def test_manifest_finds_truncated_zeroed_and_missing_files(tmp_path):
    ck = _folder(tmp_path)
    verify_checkpoint(ck)  # intact
    data = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(data[:1000])
    with pytest.raises(ValueError, match=r"model\.safetensors has 1000 bytes, its manifest says 4096"):
        verify_checkpoint(ck)
    (ck / "model.safetensors").write_bytes(bytes(4096))  # zero-filled at the same size
    with pytest.raises(ValueError, match=r"model\.safetensors does not match its sha256"):
        verify_checkpoint(ck)
    verify_checkpoint(ck, names=["trainer.json"])  # a reader that needs only some files checks only those
    (ck / "model.safetensors").write_bytes(data)
    (ck / "optimizer" / "__0_0.distcp").unlink()
    with pytest.raises(ValueError, match=r"optimizer/__0_0\.distcp is missing"):
        verify_checkpoint(ck)
    (ck / "manifest.json").write_bytes(bytes(200))
    with pytest.raises(ValueError, match=r"manifest\.json is damaged"):
        verify_checkpoint(ck)
    (ck / "manifest.json").unlink()
    with pytest.raises(ValueError, match="no manifest.json"):
        verify_checkpoint(ck)


def test_newest_intact_falls_back_and_says_so(tmp_path):
    older = _folder(tmp_path)
    newer = tmp_path / "ckpt-2"
    shutil.copytree(older, newer)
    said = []
    assert newest_intact(tmp_path, said.append) == newer and said == []
    (newer / "model.safetensors").write_bytes(bytes(4096))
    assert newest_intact(tmp_path, said.append) == older
    assert "skipping a damaged checkpoint" in said[0] and "ckpt-2" in said[0] and "ckpt-1" in said[1]
    assert resolve("latest", tmp_path, say=lambda _: None) == older
    with pytest.raises(ValueError, match="does not match its sha256"):  # a named folder is never replaced
        resolve(str(newer), tmp_path)
    (older / "trainer.json").write_text("x")
    with pytest.raises(ValueError, match="no intact checkpoint in"):
        newest_intact(tmp_path, lambda _: None)
    assert newest_intact(tmp_path / "empty", lambda _: None) is None


def test_start_over_sets_the_old_logs_aside(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("metrics.jsonl", "samples.jsonl", "config.json"):
        (out / name).write_text(f"first {name}\n")
    said = []
    assert start_over(out, said.append) == ["metrics.jsonl", "samples.jsonl", "config.json"]
    assert not (out / "metrics.jsonl").exists() and "starting at step 0" in said[0]
    (out / "metrics.jsonl").write_text("second\n")  # it died before its first checkpoint again
    start_over(out, said.append)
    assert (out / "abandoned" / "metrics.jsonl").read_text() == "first metrics.jsonl\n"
    assert (out / "abandoned" / "metrics.jsonl.2").read_text() == "second\n"
    _folder(out)
    with pytest.raises(ValueError, match="holds checkpoints"):
        start_over(out)


def test_make_run_folder_refuses_what_cannot_be_a_run_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        make_run_folder(tmp_path / "file")
    with pytest.raises(ValueError, match=r"holds a model or a checkpoint \(model\.safetensors\)"):
        make_run_folder(TINY)  # --out equal to the model folder would overwrite its config.json
    ck = _folder(tmp_path / "run")
    (ck / "model.safetensors").unlink()  # even without its weights, a checkpoint is no run folder
    with pytest.raises(ValueError, match=r"holds a model or a checkpoint \(trainer\.json\)"):
        make_run_folder(ck)
    if os.path.isdir("/proc/self"):
        with pytest.raises(ValueError, match="/proc/nanor1-run: cannot write there"):
            make_run_folder("/proc/nanor1-run")
    assert make_run_folder(tmp_path / "new" / "run").is_dir() and not list((tmp_path / "new" / "run").iterdir())


def _tiny_save(out, step, keep_last=2):
    torch.manual_seed(step)
    model = Transformer.from_pretrained(TINY, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[1, 2, 3]])).sum().backward()
    opt.step()
    return save_checkpoint(out, step, model, opt, {"step": step}, Tokenizer.from_pretrained(TINY), Dist(),
                           keep_last=keep_last)


@needs_tiny
def test_save_writes_a_verifiable_manifest_and_prunes_by_renaming(tmp_path, monkeypatch):
    out = tmp_path / "out" / "run"
    for step in (1, 2):
        _tiny_save(out, step)
    verify_checkpoint(out / "ckpt-2")
    assert set(json.loads((out / "ckpt-2" / "manifest.json").read_text())["files"]) == {
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
        "trainer.json", "optimizer.pt", "rng-rank0.pt"}
    # A kill in the middle of pruning ckpt-1: some of its files are gone when the process dies.
    real = shutil.rmtree

    def killed_midway(path, *a, **k):
        next(Path(path).glob("*.safetensors")).unlink()
        raise KeyboardInterrupt("SIGKILL")

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        _tiny_save(out, 3)
    monkeypatch.setattr(checkpoint.shutil, "rmtree", real)
    # The half-deleted folder was renamed before anything was deleted: no reader takes it for a checkpoint.
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-2", "ckpt-3"]
    assert (out / ".trash-ckpt-1").is_dir() and not (out / ".trash-ckpt-1" / "model.safetensors").exists()
    monkeypatch.chdir(tmp_path)
    assert sample.default_model() == str(Path("out") / "run" / "ckpt-3")
    _tiny_save(out, 4)  # the next save clears the trash
    assert not list(out.glob(".trash-*")) and [p.name for p in list_checkpoints(out)] == ["ckpt-3", "ckpt-4"]


@needs_tiny
def test_a_damaged_checkpoint_fails_to_load_with_one_error(tmp_path):
    """Zero the data part of model.safetensors, keep its header: safetensors reads zeros without complaint,
    the manifest does not."""
    ck = _tiny_save(tmp_path / "run", 1)
    data = bytearray((ck / "model.safetensors").read_bytes())
    data[-100_000:] = bytes(100_000)
    (ck / "model.safetensors").write_bytes(bytes(data))
    load_file(ck / "model.safetensors")  # the format itself cannot tell
    with pytest.raises(ValueError, match=r"ckpt-1 is damaged: model\.safetensors does not match its sha256"):
        Transformer.from_pretrained(ck)


@needs_tiny
def test_disk_full_during_a_save(tmp_path, monkeypatch):
    """torch.save on a full disk raises RuntimeError("... unexpected pos N vs M") with the OSError(ENOSPC) as its
    context (measured on a 2 MB tmpfs): the save says "no space left on device" and removes its temp folder."""
    out = tmp_path / "run"
    _tiny_save(out, 1)

    def full_disk(obj, f, *a, **k):
        f.write(b"PK\x03\x04" + bytes(500))
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    with pytest.raises(OSError, match=r"^no space left on device: saving checkpoint .*ckpt-2 failed") as e:
        _tiny_save(out, 2)
    assert e.value.errno == errno.ENOSPC and str(e.value) == e.value.args[0]  # one line, the entry point prints it
    assert not list(out.glob(".tmp-*")) and [p.name for p in list_checkpoints(out)] == ["ckpt-1"]
    verify_checkpoint(out / "ckpt-1")


@needs_tiny
def test_disk_full_on_a_real_small_filesystem(tmp_path, monkeypatch):
    """The same on a real full disk (a 12 MB tmpfs; needs root, skipped elsewhere): first the estimate refuses a
    save that cannot fit, then a save the estimate lets through fails for real and cleans up."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        _tiny_save(disk, 1)  # about 10 MB: weights 3.3 MB + AdamW moments 6.7 MB
        with pytest.raises(OSError, match=r"no space left on device: .*ckpt-2 .*needs about 0\.01 GB"):
            _tiny_save(disk, 2)
        assert not list(disk.glob(".tmp-*"))
        roomy = shutil.disk_usage(disk)._replace(free=1 << 40)  # the estimate now lets the save through
        monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: roomy)
        with pytest.raises(OSError, match=r"^no space left on device: saving checkpoint .*ckpt-2 failed"):
            _tiny_save(disk, 2)
        assert not list(disk.glob(".tmp-*")) and [p.name for p in list_checkpoints(disk)] == ["ckpt-1"]
        verify_checkpoint(disk / "ckpt-1")
    finally:
        subprocess.run(["umount", str(disk)], check=True)


# ---------------------------------------------------------------------------------- resume from a damaged checkpoint

def run_args(out, *extra):
    return ["--model", str(TINY), "--out", str(out), "--prompts_per_step", "4", "--group_size", "4",
            "--max_completion_len", "24", "--eval_size", "8", "--eval_every", "2", "--lr", "1e-3",
            "--threads", "1", "--log_samples_every", "0", *map(str, extra)]


def metrics(out):
    rows = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    train.main(run_args(out, "--steps", 3, "--save_every", 1, "--keep_last", 3))
    return out


@needs_tiny
@pytest.mark.parametrize("damage", ["truncate", "zero-fill"])
def test_resume_latest_skips_a_damaged_newest_checkpoint(damage, uninterrupted, tmp_path, capsys):
    out = tmp_path / "run"
    train.main(run_args(out, "--steps", 2, "--save_every", 1, "--keep_last", 3))
    weights = out / "ckpt-2" / "model.safetensors"
    size = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[:size // 2] if damage == "truncate" else bytes(size))
    capsys.readouterr()
    train.main(run_args(out, "--steps", 3, "--save_every", 1, "--keep_last", 3, "--resume", "latest"))
    said = capsys.readouterr().out
    assert "skipping a damaged checkpoint" in said and "ckpt-2 is damaged: model.safetensors" in said
    assert f"falling back to {out / 'ckpt-1'}" in said and f"resumed from {out / 'ckpt-1'} at step 1" in said
    assert metrics(out) == metrics(uninterrupted)  # steps 2 and 3 redone from ckpt-1: the same run
    assert (out / "abandoned" / "ckpt-2" / "model.safetensors").stat().st_size in (size // 2, size)  # kept
    for ck in list_checkpoints(out):
        verify_checkpoint(ck)


@needs_tiny
def test_resume_latest_without_a_checkpoint_starts_over(uninterrupted, tmp_path):
    """A run killed after its step-0 eval, before its first checkpoint: --resume latest starts at step 0."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text(json.dumps(metrics(uninterrupted)[0]) + "\n")
    train.main(run_args(out, "--steps", 3, "--save_every", 1, "--keep_last", 3, "--resume", "latest"))
    assert metrics(out) == metrics(uninterrupted)
    assert (out / "abandoned" / "metrics.jsonl").is_file()


# ------------------------------------------------------------------------------------------- kill and resume, for real

STEPS = 10


def _start(out, *extra):
    return subprocess.Popen([sys.executable, "train.py", *run_args(out, "--steps", STEPS, "--save_every", 1,
                                                                    "--eval_every", 3, *extra)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(proc, pattern, timeout=300):
    """Read the child's output until a line matches `pattern` (the match) or the child exits (None)."""
    t0 = time.time()
    for line in proc.stdout:
        if m := re.search(pattern, line):
            return m
        assert time.time() - t0 < timeout, f"no line matching {pattern!r} within {timeout} s"
    return None


@needs_tiny
@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_run(tmp_path):
    """SIGKILL train.py four times at seeded random moments, resuming with --resume latest each time: after the
    log line of one of the next two steps past the one resumed from, plus a random delay of up to two steps' time
    (as the uninterrupted run measured it: a faster step must not let the run finish between kills), so kills land
    in rollouts, updates, evals and saves. The final metrics equal those of a run never killed, and every checkpoint
    left is intact."""
    rng = random.Random(26)
    full = tmp_path / "full"
    assert _start(full).wait(timeout=600) == 0
    rows = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines() if "rollout_s" in x]
    step_s = sum(r["rollout_s"] + r["train_s"] for r in rows) / len(rows)
    out, kills = tmp_path / "killed", []
    for attempt in range(4):
        proc = _start(out, *(["--resume", "latest"] if attempt else []))
        # the first kill comes after the first save (a run with no checkpoint at all: see the test above)
        m = _wait_for(proc, r"^saved .*ckpt-(\d+)" if attempt == 0 else r"^resumed from .* at step (\d+)")
        start = int(m.group(1))
        if start == STEPS:
            proc.wait(timeout=60)
            break
        step, delay = rng.randint(start + 1, min(start + 2, STEPS)), rng.uniform(0.0, 2.0) * step_s
        if _wait_for(proc, rf"^step +{step} \|"):
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
        kills.append((start, step, round(delay, 2), proc.wait(timeout=60)))
        proc.stdout.close()
    proc = _start(out, "--resume", "latest")
    tail = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, tail
    assert sum(code == -signal.SIGKILL for *_, code in kills) >= 3, kills  # (resumed at, step, delay, exit code)
    assert metrics(out) == metrics(full), kills
    assert [p.name for p in list_checkpoints(out)][-1] == f"ckpt-{STEPS}"
    for ck in list_checkpoints(out):
        verify_checkpoint(ck)
    assert not list(out.glob(".tmp-*")) and not list(out.glob(".trash-*"))
    print("kills (resumed at, killed after step, delay s, exit code):", kills)


# ------------------------------------------------------------------------------------------------ the verifier worker

def _gone(pid):
    """Whether process `pid` has exited (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the worker's guard needs fork")
def test_worker_dies_with_a_sigkilled_trainer(tmp_path):
    pidfile = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, "-c",
                               "import sys\nfrom nanor1.verifier import Verifier\n"
                               "from tests.hostile import Hostile\n"
                               "Verifier(Hostile(), timeout=600).score(['spin'], [{'pidfile': sys.argv[1]}])\n",
                               str(pidfile)], cwd=ROOT)
    try:
        t0 = time.time()
        while not pidfile.exists() or not pidfile.read_text():
            assert parent.poll() is None and time.time() - t0 < 120, "the worker never started its reward"
            time.sleep(0.1)
        worker = int(pidfile.read_text())
        assert not _gone(worker)
        parent.kill()  # SIGKILL: the trainer runs no clean-up code at all
        parent.wait()
        t0 = time.time()
        while not _gone(worker) and time.time() - t0 < 10:
            time.sleep(0.1)
        assert _gone(worker), f"the worker {worker} outlived its trainer by 10 s"
        print(f"worker gone {time.time() - t0:.2f} s after the trainer's SIGKILL")
    finally:
        parent.kill()
        if pidfile.exists() and pidfile.read_text() and not _gone(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RLIMIT_AS is enforced on Linux only")
def test_a_reward_past_the_memory_cap_scores_zero():
    with Verifier(Hostile(), timeout=30.0, memory_limit=128 << 20) as v:
        rows = [{"bytes": 64 << 20}, {"bytes": 512 << 20}, {}]
        assert v.score(["alloc", "alloc", "ok"], rows) == [1.0, 0.0, 1.0]  # 64 MB fits, 512 MB does not
        assert v.stats["errors"] == 1 and v.stats["timeouts"] == 0 and "MemoryError" in v.stats["last_error"]
        assert "0.12 GiB" in v.stats["last_error"]


def test_step_budget_scores_the_rest_zero_and_counts_them():
    with Verifier(Hostile(), timeout=30.0) as v:
        v.score(["ok"], [{}])  # the worker's first start (importing torch) is not what we time
        comps = ["ok", "sleep", "sleep", "sleep", "ok"]
        t0 = time.perf_counter()
        out = v.score(comps, [{"seconds": 2.0}] * len(comps), budget_s=3.0)
        took = time.perf_counter() - t0
        # ok at ~0 s, the first sleep done at ~2 s, the second would end at ~4 s: past the budget
        assert out == [1.0, 1.0, 0.0, 0.0, 0.0], out
        assert v.stats["budget_skipped"] == 3 and v.stats["timeouts"] == 0 and v.stats["errors"] == 0
        assert took < 3.0 + 2.0, took  # the budget, plus the kill; never the 30 s timeout
        assert v.score(["ok", "ok"], [{}] * 2, budget_s=30.0) == [1.0, 1.0]  # a fresh worker takes over


@needs_tiny
@pytest.mark.parametrize("algo", ["grpo", "sft"])
def test_a_run_that_only_ever_skips_stops_without_saving(algo, tmp_path, monkeypatch):
    """Every optimiser step skipped (a non-finite gradient norm, planted here): the run stops with one error at
    the third such step, before saving it, for RL and SFT alike (steps 1 and 2 left the weights as they were)."""
    from nanor1 import sft, step

    def never(model, opt, lr, grad_clip):
        opt.zero_grad(set_to_none=True)
        return torch.tensor(float("inf")), False

    monkeypatch.setattr(step, "optimiser_step", never)
    monkeypatch.setattr(sft, "optimiser_step", never)
    args = ["--out", tmp_path / "run", "--steps", "5", "--save_every", "1", "--eval_every", "0", "--threads", "1",
            "--prompts_per_step", "4", "--group_size", "4", "--max_completion_len", "8"]
    if algo == "sft":
        data = tmp_path / "sft.jsonl"
        data.write_text("".join(json.dumps({"prompt": f"What is {i}+1?", "completion": f" {i + 1}"}) + "\n"
                                for i in range(8)))
        args += ["--algo", "sft", "--data", data]
    with pytest.raises(ValueError, match="step 3: the gradient norm was not finite in the last 3 steps"):
        train.main([str(a) for a in args])
    assert [c.name for c in list_checkpoints(tmp_path / "run")] == ["ckpt-1", "ckpt-2"]
