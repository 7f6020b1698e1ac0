"""Bad options at the entry points: each is exactly one `error:` line, exit code 2, and no folder left behind
that would block a rerun (issue 26). The bad-file cases (config.json, weights, tokenizer, data) are in
tests/test_robustness.py."""
from pathlib import Path

import pytest

from tests.test_robustness import entry_point, one_error_line

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
    (["--max_completion_len_schedule", "2:100000"], "--max_completion_len_schedule's last stage 100000 leaves no room"),
])
def test_bad_train_options(tmp_path, monkeypatch, capsys, argv, message):
    out = tmp_path / "run"
    code, err = entry_point("train.py", ["--out", out, "--steps", "1", "--threads", "1", *argv], monkeypatch, capsys)
    one_error_line(code, err, message)
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
    (["--eval", "--grader", "sympy"], "--grader"),
])
def test_bad_sample_options(monkeypatch, capsys, argv, message):
    code, err = entry_point("sample.py", ["--model", ROOT / "data" / "tiny", *argv], monkeypatch, capsys)
    one_error_line(code, err, message)


def test_sample_eval_out_that_is_a_folder(tmp_path, monkeypatch, capsys):
    code, err = entry_point("sample.py", ["--model", ROOT / "data" / "tiny", "--eval", "--limit", "2", "--out",
                                          tmp_path], monkeypatch, capsys)
    assert code == 2 and "is a folder" in err


def test_sample_eval_takes_the_grader(monkeypatch):
    """sample.py --eval --grader math_verify builds its task with that grader, as train.py's --grader does (to
    compare with numbers published with it)."""
    import sample

    class Seen(Exception):
        pass

    def get_task(*args, **kw):
        raise Seen(kw.get("grader"))

    monkeypatch.setattr(sample, "get_task", get_task)
    with pytest.raises(Seen, match="math_verify"):
        sample.main(["--model", str(ROOT / "data" / "tiny"), "--task", "gsm8k", "--eval", "--grader", "math_verify"])


@pytest.mark.parametrize("flag", ["--out", "--save"])
def test_sample_never_overwrites_a_file(tmp_path, monkeypatch, capsys, flag):
    old = tmp_path / "old.jsonl"
    old.write_text('{"kept": true}\n')
    argv = ["--model", ROOT / "data" / "tiny", "--limit", "1", flag, old] + (["--eval"] if flag == "--out" else [])
    code, err = entry_point("sample.py", argv, monkeypatch, capsys)
    assert code == 2 and err.count("error:") == 1 and "exists" in err, err
    assert old.read_text() == '{"kept": true}\n'
