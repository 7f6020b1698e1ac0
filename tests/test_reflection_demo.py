"""The reflection demo (`make train`: data/tiny_recheck/demo.toml), shortened: GRPO with a reward that checks only
the final sum raises held-out accuracy, and with it completion length and reflection_rate (issue 23)."""
import json
from pathlib import Path

import pytest

import train

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "data" / "tiny_recheck"
pytestmark = pytest.mark.skipif(not (BASE / "model.safetensors").is_file(), reason="data/tiny_recheck not built")


@pytest.mark.slow
def test_shortened_reflection_demo_grows_accuracy_length_and_reflection(tmp_path, monkeypatch):
    """The demo's settings, STEPS steps instead of the full run: the three curves move the way R1-Zero's do."""
    monkeypatch.chdir(ROOT)  # the config names data/tiny_recheck relative to the repository
    steps = 30
    out = train.main(["--config", "data/tiny_recheck/demo.toml", "--out", str(tmp_path / "demo"),
                      "--steps", str(steps), "--eval_every", "0", "--save_every", "0"])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_accuracy"] for r in rows if "eval_accuracy" in r]
    train_rows = [r for r in rows if "reward" in r]
    assert len(evals) == 2 and len(train_rows) == steps
    mean = lambda key, rs: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    first, last = train_rows[:10], train_rows[-10:]
    assert evals[1] > evals[0], evals
    assert mean("response_length", last) > mean("response_length", first)
    assert mean("reflection_rate", last) > mean("reflection_rate", first)
