"""The embedded default: the shipped tiny base learns its task with GRPO on the CPU; sample.py talks and evaluates."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import sample
import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "data" / "tiny"
pytestmark = pytest.mark.skipif(not (TINY / "model.safetensors").is_file(), reason="data/tiny not built")


def run(*args, env=None):
    p = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=None if env is None else dict(os.environ, **env))
    return p.returncode, p.stdout, p.stderr


@pytest.mark.slow
def test_shortened_demo_improves_held_out_accuracy(tmp_path):
    """The demo's defaults, 20 steps instead of 100: greedy pass@1 on 200 held-out problems rises by >= 0.2."""
    out = train.main(["--out", str(tmp_path / "demo"), "--steps", "20", "--eval_every", "0"])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_accuracy"] for r in rows if "eval_accuracy" in r]
    assert len(evals) == 2
    assert evals[1] - evals[0] >= 0.2, evals


def test_sample_py_streams_a_completion():
    code, out, err = run("sample.py", "--model", TINY, "--max_new_tokens", "40", "--temperature", "0")
    assert code == 0, err
    assert "What is" in out and "<answer>" in out  # the default prompt is a held-out problem; the base answers


def test_sample_py_eval_reports_pass_at_k(tmp_path):
    jsonl = tmp_path / "eval.jsonl"
    code, out, err = run("sample.py", "--model", TINY, "--eval", "--limit", "16", "--num_samples", "5",
                         "--temperature", "1.0", "--top_k", "20", "--out", jsonl)
    assert code == 0, err
    assert "pass@1=" in out and "pass@4=" in out and "pass@5=" in out  # powers of two, and n itself
    records = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert len(records) == 16 and all(len(r["completions"]) == 5 == len(r["rewards"]) for r in records)


def test_sample_py_context_error_is_one_line():
    code, out, err = run("sample.py", "--model", TINY, "--prompt", "1+1=", "--max_new_tokens", "100000")
    assert code == 2 and err.strip().startswith("error:") and "context" in err and "Traceback" not in err
    # NANOR1_TRACEBACK=1: the same error with its traceback, for debugging
    code, _, err = run("sample.py", "--model", TINY, "--prompt", "1+1=", "--max_new_tokens", "100000",
                       env={"NANOR1_TRACEBACK": "1"})
    assert code == 1 and "Traceback" in err and "context" in err


def test_sample_py_defaults_to_the_newest_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sample.default_model() == sample.TINY  # no out/ yet: the shipped base
    from nanor1.checkpoint import write_manifest
    for run, step in (("run-a", 5), ("run-b", 2), ("run-a", 9)):
        ck = tmp_path / "out" / run / f"ckpt-{step}"
        ck.mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):  # stand-ins: only the manifest's checksums are read
            (ck / name).write_text(name)
        write_manifest(ck)
        (tmp_path / "out" / run / ".tmp-ckpt-10").mkdir(exist_ok=True)  # an unfinished save never counts
        t = time.time() + step  # written in this order; mtime decides, not the step number
        os.utime(tmp_path / "out" / run / f"ckpt-{step}", (t, t))
    assert sample.default_model() == str(Path("out") / "run-a" / "ckpt-9")
    os.utime(tmp_path / "out" / "run-b" / "ckpt-2", (time.time() + 100, time.time() + 100))
    assert sample.default_model() == str(Path("out") / "run-b" / "ckpt-2")
    (tmp_path / "out" / "run-b" / "ckpt-2" / "model.safetensors").write_text("zeroed")  # damaged: skipped
    assert sample.default_model() == str(Path("out") / "run-a" / "ckpt-9")


@pytest.mark.slow
def test_lora_demo_improves_held_out_accuracy(tmp_path):
    """LoRA rank 8 on the tiny base, at the learning rate it needs (1e-3, about 30x full fine-tuning's; see
    BENCHMARKS.md): greedy pass@1 on 200 held-out problems rises by >= 0.2 within 20 steps."""
    out = train.main(["--out", str(tmp_path / "lora"), "--steps", "20", "--eval_every", "0", "--lora_rank", "8",
                      "--lr", "1e-3"])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_accuracy"] for r in rows if "eval_accuracy" in r]
    assert evals[-1] - evals[0] >= 0.2, evals
    assert (out / "ckpt-20" / "adapter_model.safetensors").is_file()  # PEFT's layout
