"""--algo ppo | rloo | reinforce_pp through train.py on the shipped tiny base: exact resume with a critic, bad
input as one error line, a couple of steps of each; the slow test: PPO on the demo raises held-out accuracy."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import train
from nanor1 import step as rl
from nanor1.config import TrainConfig
from nanor1.distributed import Dist
from tests.test_checkpoint import metrics, run  # a short run on the tiny base, its metrics without timings
from tests.tiny import hf_tiny

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "data" / "tiny"
pytestmark = pytest.mark.skipif(not (TINY / "model.safetensors").is_file(), reason="data/tiny not built")
PPO_METRICS = ("value_loss", "value_clip_frac", "explained_variance", "values_mean", "returns_mean",
               "critic_grad_norm")


def test_ppo_resume_with_a_critic_continues_exactly(tmp_path):
    """4 steps at once, or 2 then a resume to 4: the same metrics, value statistics included. The critic learns
    fast (--critic_lr 1e-3), so a critic or critic optimiser not restored would change values_mean and
    value_loss after the resume. Step 1 is the critic's warm-up (no policy update)."""
    ppo = ("--algo", "ppo", "--critic_lr", "1e-3", "--critic_warmup", "1")
    run(tmp_path / "full", "--steps", "4", *ppo)
    run(tmp_path / "split", "--steps", "2", *ppo)
    assert (tmp_path / "split" / "ckpt-2" / "critic" / "optimizer.pt").is_file()
    run(tmp_path / "split", "--steps", "4", "--resume", "latest", *ppo)
    full, split = metrics(tmp_path / "full"), metrics(tmp_path / "split")
    assert full == split
    steps = [r for r in full if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert "opt_steps" not in steps[0] and all("opt_steps" in r for r in steps[1:])  # the warm-up step
    for r in steps:
        assert all(k in r for k in PPO_METRICS), r
    assert steps[0]["values_mean"] == 0  # the value head starts at zero ...
    assert all(abs(r["values_mean"]) > 1e-3 for r in steps[2:]), steps  # ... and has learned by step 3


def test_rloo_and_reinforce_pp_train(tmp_path):
    """Two steps each; REINFORCE++ with beta > 0 puts the KL into the reward (logged as kl), as does GRPO with
    --kl_in_reward. A --critic_warmup without a critic trains the policy from step 1."""
    for algo, extra in (("rloo", ()), ("reinforce_pp", ("--beta", "0.05")),
                        ("grpo", ("--beta", "0.05", "--kl_in_reward", "--critic_warmup", "2"))):
        # 48 tokens leave room for an answer (rewards differ within groups); the demo's lr keeps the policy sane
        out = run(tmp_path / algo, "--steps", "2", "--algo", algo, "--max_completion_len", "48", "--lr", "3e-5",
                  *extra)
        rows = [r for r in metrics(out) if "reward" in r]
        assert [r["step"] for r in rows] == [1, 2], algo
        assert all(r["opt_steps"] == 1 for r in rows) and rows[0]["grad_norm"] > 0, (algo, rows)
        if extra:  # step 1 samples from the reference itself (KL 0); step 2 from the updated policy
            assert rows[0]["kl"] == 0 and rows[1]["kl"] > 0, (algo, rows)
        assert not any(k in r for r in rows for k in PPO_METRICS)


def test_kl_in_reward_enters_group_advantages():
    """grpo and rloo with --kl_in_reward: the sequence reward is the task's minus beta times its summed KL."""
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    kl = torch.tensor([[0.5, 0.5, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0])
    batch = rl.Batch(ids=None, targets=None, completion=mask, mask=mask, sampler_logp=None, prompt_lens=None,
                     lengths=None, loss_tokens=None, rewards=rewards)
    for algo in ("rloo", "grpo"):
        cfg = TrainConfig(algo=algo, group_size=4, beta=0.5, kl_in_reward=True, scale_rewards="none")
        run_ = rl.Run(cfg=cfg, d=Dist(), prec=None, tok=None, task=None, rows=[], prompts=[], stream=None,
                      verifier=None, stop=None)
        adv = rl.advantages(run_, batch, rewards, kl, None, rl.Sums())
        r = torch.tensor([0.5, 0.0, 0.0, -0.5])  # 1 - 0.5 * 1, 1 - 0.5 * 2, 0 - 0, 0 - 0.5 * 1
        want = r - r.mean() if algo == "grpo" else r - (r.sum() - r) / 3
        torch.testing.assert_close(adv, want[:, None] * mask)


def train_py(*args):
    p = subprocess.run([sys.executable, "train.py", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    return p.returncode, p.stderr


def test_ppo_bad_input_is_one_error_line(tmp_path):
    """A critic for another vocabulary or an architecture nanoR1 lacks, and --value_clip 0: exit 2, one line,
    and no run folder written."""
    other = hf_tiny(tmp_path, kind="qwen2", tied=True)[0]  # 97 embedding rows; the tiny base's tokenizer has more
    llama = tmp_path / "llama"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps(dict(json.loads((TINY / "config.json").read_text()),
                                                      model_type="llama")))
    for argv, said in (((("--critic_model", other), "--critic_model .*97 rows")),
                       (("--critic_model", llama), "model_type 'llama'"),
                       (("--value_clip", "0"), "--value_clip")):
        out = tmp_path / "run"
        code, err = train_py("--algo", "ppo", "--out", out, "--threads", "1", *argv)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err[-2000:])
        assert re.search(said, lines[0]), lines[0]
        assert not out.exists()


@pytest.mark.slow
def test_ppo_demo_improves_held_out_accuracy(tmp_path):
    """`python train.py --algo ppo` with the demo's defaults (the critic's too: lr 1e-5, no warm-up), 20 of its
    100 steps, one thread as scripts/compare.py runs it: greedy pass@1 on 200 held-out problems rises by >= 0.2
    (0.185 -> 0.54 at step 10 -> 0.83 at step 20 on 2026-12-02)."""
    out = train.main(["--algo", "ppo", "--out", str(tmp_path / "ppo"), "--steps", "20", "--threads", "1",
                      "--log_samples_every", "0"])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval_accuracy"] for r in rows if "eval_accuracy" in r]
    assert len(evals) == 3  # steps 0, 10, 20
    assert evals[-1] - evals[0] >= 0.2, evals
    assert all("explained_variance" in r for r in rows if "reward" in r)  # it was PPO: the critic ran every step


def test_compare_script_runs_and_tabulates(tmp_path):
    """scripts/compare.py with one of its runs (ppo), 2 steps of 4 x 4 (options after its own go to every
    train.py): its table row with the evaluations; a second call runs nothing again."""
    out = tmp_path / "cmp"
    cmd = [sys.executable, "scripts/compare.py", "--out", str(out), "--steps", "2", "--threads", "1", "--only",
           "ppo", "--png", str(tmp_path / "c.png"), "--prompts_per_step", "4", "--group_size", "4",
           "--max_completion_len", "16", "--eval_size", "8", "--eval_every", "1"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0 or "needs matplotlib" in p.stderr, p.stderr[-2000:]
    rows = [x.split(" | ") for x in p.stdout.splitlines() if x.startswith("| ")]
    assert rows[0][:3] == ["| run", "options", "pass@1 step 0"] and rows[-1][0] == "| ppo", p.stdout
    assert "--prompts_per_step 4" in rows[-1][1] and "--algo ppo" in rows[-1][1]
    evals = [json.loads(x) for x in (out / "ppo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if "eval_accuracy" in r] == [0, 1, 2]
    assert [float(x) for x in rows[-1][2:4]] == [r["eval_accuracy"] for r in evals if "eval_accuracy" in r][::2]
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert "== " not in again.stdout and "all runs: 0.0 min" in again.stdout, again.stdout
