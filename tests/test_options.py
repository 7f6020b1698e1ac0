"""Options through the real loop on the shipped tiny base: schedules (also across a resume), the GRPO-family
options' metrics, your own data (--task jsonl with each built-in reward) and your own reward (--reward_fn)."""
import json
from pathlib import Path

import pytest

import train
from nanor1.tasks import get_task
from nanor1.tasks.arithmetic import PROMPT
from nanor1.verifier import Verifier

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (ROOT / "data/tiny/model.safetensors").is_file(), reason="data/tiny not built")
SMALL = ["--prompts_per_step", "4", "--group_size", "4", "--max_completion_len", "12", "--eval_size", "4",
         "--threads", "1", "--log_samples_every", "0", "--eval_every", "0"]


def steps(out):
    return [json.loads(x) for x in (Path(out) / "metrics.jsonl").read_text().splitlines() if '"reward"' in x]


def test_completion_budget_follows_its_schedule_across_a_resume(tmp_path, capsys):
    sched = ["--max_completion_len_schedule", "2:20,4:28"]
    full = train.main(["--out", str(tmp_path / "full"), "--steps", "4", *SMALL, *sched])
    assert [r["max_completion_len"] for r in steps(full)] == [12, 20, 20, 28]
    assert [line.split("| budget ")[1].split()[0] for line in capsys.readouterr().out.splitlines()
            if line.startswith("step ") and "| reward" in line] == ["12", "20", "20", "28"]  # on the console too
    assert max(r["response_length"] for r in steps(full)[:1]) <= 12
    split = tmp_path / "split"
    train.main(["--out", str(split), "--steps", "2", *SMALL, *sched])
    train.main(["--out", str(split), "--steps", "4", "--resume", "latest", *SMALL, *sched])
    assert [r["max_completion_len"] for r in steps(split)] == [12, 20, 20, 28]  # the resume picked stage 2
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]  # noqa: E731
    assert strip(steps(split)) == strip(steps(full))


def test_grpo_family_options_reach_the_metrics(tmp_path):
    out = train.main(["--out", str(tmp_path / "run"), "--steps", "2", *SMALL, "--max_completion_len", "48",
                      "--prompts_per_step", "8", "--beta", "0.01", "--mu", "2",
                      "--dynamic_sampling", "--clip_ratio_c", "3", "--tis_cap", "2", "--entropy_coef", "0.01",
                      "--overlong_buffer", "24", "--scale_rewards", "batch", "--lr_schedule", "cosine",
                      "--eval_samples", "3", "--kl_estimator", "low_var_kl", "--ratio_level", "sequence"])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    step = steps(out)[-1]
    for key in ("clip_frac_low", "clip_frac_high", "ratio_mean", "ratio_max", "kl", "reward_std", "zero_adv_frac",
                "dual_clip_frac", "tis_weight_mean", "tis_capped_frac", "reward_kept", "accuracy_kept",
                "overlong_penalty", "skipped_steps", "entropy", "logprob_mismatch"):
        assert key in step, key
    assert step["ratio_max"] >= 1.0 and 0 <= step["zero_adv_frac"] <= 1 and step["overlong_penalty"] >= 0
    assert steps(out)[0]["lr"] > steps(out)[1]["lr"]  # cosine: the second step's lr is lower
    evals = [r for r in rows if "eval_accuracy" in r]
    assert all({"eval_pass@1", "eval_pass@3"} <= set(r) for r in evals)
    assert all(r["eval_pass@1"] <= r["eval_pass@3"] for r in evals)


def write_rows(path, n, **extra):
    """Arithmetic problems in the tiny base's own format, as a user's JSONL."""
    rows = get_task("arithmetic").train_rows()[:n]
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps({"prompt": PROMPT.format(a=r["a"], b=r["b"]), "answer": r["a"] + r["b"],
                                **{k: v(r) for k, v in extra.items()}}) + "\n")


@pytest.mark.parametrize("reward", ["math", "number", "exact", "countdown"])
def test_jsonl_task_trains_with_each_builtin_reward(tmp_path, reward, capsys):
    data = tmp_path / "rows.jsonl"
    write_rows(data, 40, nums=lambda r: [r["a"], r["b"]])
    out = train.main(["--out", str(tmp_path / "run"), "--steps", "2", *SMALL, "--task", "jsonl", "--data", str(data),
                      "--reward", reward, "--max_completion_len", "40"])
    assert "2 of the 40 rows" in capsys.readouterr().err  # the seeded held-out slice is said (stdout: --dry_run)
    rows = steps(out)
    assert len(rows) == 2 and all(r["completions"] == 16 for r in rows)
    if reward != "countdown":  # the base writes the right sum now and then: the built-in checks see it
        assert max(r["accuracy"] for r in rows) > 0


def test_custom_reward_function(tmp_path):
    data = tmp_path / "rows.jsonl"
    write_rows(data, 20)
    fn = tmp_path / "my_reward.py"
    fn.write_text("def score(completion, row):\n    return 1.0 if str(row['answer']) in completion else 0.0\n")
    out = train.main(["--out", str(tmp_path / "run"), "--steps", "1", *SMALL, "--task", "jsonl", "--data", str(data),
                      "--eval_data", str(data), "--reward_fn", f"{fn}:score"])
    assert steps(out)[0]["completions"] == 16
    with pytest.raises(FileNotFoundError, match="not found"):
        train.main(["--out", str(tmp_path / "x"), *SMALL, "--reward_fn", f"{tmp_path}/none.py:score"])
    with pytest.raises(ValueError, match="has no function 'nope'"):
        train.main(["--out", str(tmp_path / "y"), *SMALL, "--reward_fn", f"{fn}:nope"])
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()  # failed before writing anything


def test_reward_function_that_hangs_or_raises_scores_zero(tmp_path):
    fn = tmp_path / "bad.py"
    fn.write_text("import time\ndef hang(c, row):\n    while True:\n        time.sleep(1)\n"
                  "def text(c, row):\n    return 'one'\ndef ok(c, row):\n    return 0.5\n")
    task = get_task("arithmetic", reward_fn=f"{fn}:hang")
    row = task.eval_rows()[0]
    with Verifier(task, timeout=2.0) as v:
        assert v.score(["x", "y"], [row, row]) == [0.0, 0.0] and v.stats["timeouts"] == 2
    for name, want, errors in (("text", 0.0, 1), ("ok", 0.5, 0)):
        with Verifier(get_task("arithmetic", reward_fn=f"{fn}:{name}"), timeout=5.0) as v:
            assert v.score(["x"], [row]) == [want] and v.stats["errors"] == errors


def test_jsonl_bad_rows_are_one_clear_error(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"prompt": "2+2=", "answer": 4}\n{"answer": 5}\n')
    with pytest.raises(ValueError, match="rows.jsonl:2: a row needs a 'prompt' string or a 'messages' list"):
        get_task("jsonl", data=str(data)).train_rows()
    with pytest.raises(ValueError, match="needs --data"):
        get_task("jsonl")
    with pytest.raises(FileNotFoundError, match="none.jsonl not found"):
        get_task("jsonl", data=str(tmp_path / "none.jsonl"))
