"""Checkpoints (atomic, loadable by transformers), exact resume, and the pass@k estimator."""
import json
import math
from pathlib import Path

import pytest
import torch

import train
from nanor1.checkpoint import list_checkpoints
from nanor1.evaluate import pass_at_k
from nanor1.model import Transformer

TINY = Path(__file__).resolve().parents[1] / "data" / "tiny"
needs_tiny = pytest.mark.skipif(not (TINY / "model.safetensors").is_file(), reason="data/tiny not built")
TIMINGS = {"rollout_s", "train_s"}


def run(out, *extra):
    args = ["--model", str(TINY), "--out", str(out), "--prompts_per_step", "4", "--group_size", "4",
            "--max_completion_len", "24", "--eval_size", "8", "--eval_every", "2", "--lr", "1e-3",
            "--threads", "1", "--log_samples_every", "0", *extra]
    return train.main(args)


def metrics(out):
    rows = [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]


@needs_tiny
def test_resume_gives_the_same_metrics(tmp_path):
    run(tmp_path / "full", "--steps", "4")
    run(tmp_path / "split", "--steps", "2")
    # A crashed run may have logged past its last checkpoint: the resume must drop those rows.
    with open(tmp_path / "split" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 3, "reward": -1}) + "\n" + '{"step": 4, "rew')  # and a torn last line
    run(tmp_path / "split", "--steps", "4", "--resume", "latest")
    full, split = metrics(tmp_path / "full"), metrics(tmp_path / "split")
    assert [r["step"] for r in full] == [0, 1, 2, 2, 3, 4, 4]
    assert full == split
    assert [p.name for p in list_checkpoints(tmp_path / "split")] == ["ckpt-2", "ckpt-4"]
    # The crashed run's rows past the checkpoint, the torn one included, were set aside, not lost.
    assert (tmp_path / "split" / "abandoned" / "metrics.jsonl").read_text() == \
        json.dumps({"step": 3, "reward": -1}) + "\n" + '{"step": 4, "rew' + "\n"


@needs_tiny
def test_resume_from_a_named_checkpoint_folder(tmp_path, capsys):
    run(tmp_path / "full", "--steps", "2")
    out = tmp_path / "split"
    run(out, "--steps", "3", "--save_every", "1", "--keep_last", "3")
    (out / "ckpt-2" / "stale").touch()
    capsys.readouterr()
    run(out, "--steps", "2", "--resume", str(out / "ckpt-1"))  # an older branch point, not the latest
    assert f"resumed from {out / 'ckpt-1'} at step 1" in capsys.readouterr().out
    full = metrics(tmp_path / "full")
    assert [r["step"] for r in full] == [0, 1, 2, 2]
    assert metrics(out) == full  # the rows of steps 2 and 3 from before the resume left the log
    # Checkpoints newer than step 1 were set aside (the next --resume latest must not pick ckpt-3), and step
    # 2 was saved afresh; nothing is deleted: the old branch's checkpoints and rows are under abandoned/.
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-1", "ckpt-2"]
    assert not (out / "ckpt-2" / "stale").exists()
    assert (out / "abandoned" / "ckpt-2" / "stale").exists() and (out / "abandoned" / "ckpt-3").is_dir()
    assert [r["step"] for r in metrics(out / "abandoned") if "reward" in r] == [2, 3]


@needs_tiny
def test_keep_last_prunes_older_checkpoints(tmp_path):
    out = run(tmp_path / "run", "--steps", "3", "--save_every", "1", "--keep_last", "2")
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-2", "ckpt-3"]
    assert not list(out.glob(".tmp-ckpt-*"))


@needs_tiny
def test_resume_with_changed_settings_warns_and_keeps_the_old_config(tmp_path, capsys):
    out = tmp_path / "run"
    run(out, "--steps", "1")
    capsys.readouterr()
    run(out, "--steps", "2", "--resume", "latest", "--eval_every", "1")  # steps, eval_every: free to change
    assert "changed settings" not in capsys.readouterr().out
    assert not list(out.glob("config-until-*"))
    run(out, "--steps", "3", "--resume", "latest", "--lr", "1e-4", "--clip_high", "0.28")
    said = capsys.readouterr().out
    assert "changed settings" in said and "clip_high 0.2 -> 0.28, lr 0.001 -> 0.0001" in said
    assert json.loads((out / "config-until-step-2.json").read_text())["lr"] == 1e-3
    run(out, "--steps", "3", "--resume", str(out / "ckpt-2"), "--lr", "2e-4")  # again from step 2: both kept
    assert json.loads((out / "config-until-step-2.json.2").read_text())["lr"] == 1e-4
    saved = json.loads((out / "config.json").read_text())
    assert saved["lr"] == 2e-4 and saved["out"] == str(out) and saved["template"] == "base"  # resolved values


@needs_tiny
def test_killed_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run(out, "--steps", "1")
    real = Path.rename

    def crash(self, target):  # the process dies between writing the files and the commit rename
        if self.name.startswith(".tmp-ckpt"):
            raise KeyboardInterrupt("killed")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", crash)
    with pytest.raises(KeyboardInterrupt):
        run(out, "--steps", "2", "--resume", "latest")
    monkeypatch.undo()
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-1"]
    assert (out / ".tmp-ckpt-2" / "model.safetensors").is_file()  # the half-done save, ignored
    model = Transformer.from_pretrained(out / "ckpt-1", dtype=torch.float32)
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]]))).all()
    run(out, "--steps", "2", "--resume", "latest")  # and the run can go on from it
    assert [p.name for p in list_checkpoints(out)] == ["ckpt-1", "ckpt-2"]


@needs_tiny
def test_checkpoint_loads_in_transformers_with_same_logits(tmp_path):
    transformers = pytest.importorskip("transformers")
    out = run(tmp_path / "run", "--steps", "1", "--keep_last", "1")
    ckpt = list_checkpoints(out)[-1]
    for f in ("config.json", "model.safetensors", "tokenizer.json", "trainer.json", "optimizer.pt"):
        assert (ckpt / f).is_file(), f
    ours = Transformer.from_pretrained(ckpt, dtype=torch.float32)
    hf = transformers.AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    ids = torch.randint(0, ours.config.vocab_size, (2, 12))
    with torch.no_grad():
        a, b = ours(ids), hf(ids).logits
    assert ((a - b).norm() / b.norm()).item() < 1e-4
    # The trained weights differ from the base: the checkpoint holds the update, not a copy of the input.
    base = Transformer.from_pretrained(TINY, dtype=torch.float32)
    assert not torch.equal(base.lm_head.weight, ours.lm_head.weight)


def test_pass_at_k_hand_values():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert abs(pass_at_k(10, 3, 1) - 0.3) < 1e-12
    # 1 - C(7, 2) / C(10, 2) = 1 - 21 / 45
    assert abs(pass_at_k(10, 3, 2) - (1 - 21 / 45)) < 1e-12
    assert abs(pass_at_k(5, 1, 3) - (1 - math.comb(4, 3) / math.comb(5, 3))) < 1e-12
    assert pass_at_k(4, 2, 3) == 1.0  # n - c < k: every draw of 3 includes a correct one
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)


@needs_tiny
def test_lora_rl_with_a_kl_reference_resumes_exactly(tmp_path):
    """RL through train.py with LoRA and --beta > 0: the KL reference is the policy with its adapters off (no
    second model); step 1's policy is the base (B = 0), so its KL is 0, and later steps' is not. A resume from
    the adapter checkpoint gives the same metrics as the run without a stop."""
    lora = ["--lora_rank", "4", "--beta", "0.1", "--eval_every", "0"]
    run(tmp_path / "full", "--steps", "3", *lora)
    run(tmp_path / "split", "--steps", "2", "--save_every", "1", *lora)
    run(tmp_path / "split", "--steps", "3", "--resume", "latest", *lora)
    steps = [r for r in metrics(tmp_path / "full") if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and steps[0]["kl"] == 0 and steps[2]["kl"] > 0
    assert [r for r in metrics(tmp_path / "split") if "reward" in r] == steps  # (the split run also evaluated at 2)
    assert (tmp_path / "split" / "ckpt-3" / "adapter_model.safetensors").is_file()
