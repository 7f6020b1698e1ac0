"""Bad options at the entry points: each is exactly one `error:` line, exit code 2, and no folder left behind
that would block a rerun (issue 26). The bad-file cases (config.json, weights, tokenizer, data) are in
tests/test_robustness.py."""
from pathlib import Path

import pytest

from tests.test_robustness import entry_point

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / "data/tiny/model.safetensors").is_file(), reason="data/tiny not built")


@pytest.mark.parametrize("argv, message", [
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--grad_clip", "nan"], "--grad_clip must be a finite number"),
    (["--beta", "inf"], "--beta must be a finite number"),
    (["--temperature", "1e-8"], "--temperature must be in"),
    (["--temperature", "1e308"], "--temperature must be in"),
    (["--lr", "-1"], "--lr must be > 0"),
    (["--group_size", "10000000"], "more than 10 million sequences"),
    (["--prompts_per_step", "1000000000"], "more than 10 million sequences"),
    (["--group_size", "200000"], "GiB for the KV cache"),
    (["--max_prompt_len", "5"], "longer than the prompt budget of 5 tokens"),
    (["--max_completion_len", "100000"], "leaves no room for a prompt in the model's context"),
    (["--task", "nope"], "unknown task 'nope'"),
    (["--model", "no/such/folder"], "model folder not found"),
    (["--lora_rank", "0", "--lora_alpha", "16"], "--lora_alpha"),
    (["--algo", "ppo", "--value_clip", "0"], "--value_clip"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--max_completion_len_schedule", "10:5,3:9"], "steps must increase"),
])
def test_bad_train_options(tmp_path, monkeypatch, capsys, argv, message):
    out = tmp_path / "run"
    code, err = entry_point("train.py", ["--out", out, "--steps", "1", "--threads", "1", *argv], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert not (out / "metrics.jsonl").exists() and not list(out.glob("ckpt-*"))  # nothing blocks a rerun


def test_out_that_cannot_be_a_run_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    for out, message in ((tmp_path / "file", "is a file"), (ROOT / "data" / "tiny", "holds a model"),
                         (Path("/proc/x"), "cannot write there")):
        code, err = entry_point("train.py", ["--out", out, "--steps", "1"], monkeypatch, capsys)
        assert code == 2 and err.count("error:") == 1 and message in err, err
    assert (ROOT / "data" / "tiny" / "config.json").read_text().startswith("{")  # untouched


@pytest.mark.parametrize("argv, message", [
    (["--device", "banana"], "--device 'banana' is not a device"),
    (["--num_samples", "100000000"], "GiB for the KV cache"),
    (["--eval", "--batch_size", "-1"], "--batch_size must be >= 1"),
    (["--eval", "--limit", "-1"], "--limit must be >= 0"),
    (["--temperature", "-3"], "--temperature must be >= 0"),
    (["--top_p", "nan"], "--top_p must be a finite number"),
])
def test_bad_sample_options(monkeypatch, capsys, argv, message):
    code, err = entry_point("sample.py", ["--model", ROOT / "data" / "tiny", *argv], monkeypatch, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err


def test_sample_eval_out_that_is_a_folder(tmp_path, monkeypatch, capsys):
    code, err = entry_point("sample.py", ["--model", ROOT / "data" / "tiny", "--eval", "--limit", "2", "--out",
                                          tmp_path], monkeypatch, capsys)
    assert code == 2 and "is a folder" in err
