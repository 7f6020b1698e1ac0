"""The critic under FSDP2 on the CPU (gloo): 2 processes started by torchrun from pytest."""
import os
import subprocess
import sys
from pathlib import Path

import torch

from nanor1.checkpoint import full_state_dict
from nanor1.distributed import Dist
from nanor1.ppo import Critic
from tests import ppo_dist_worker
from tests.tiny import hf_tiny

ROOT = Path(__file__).resolve().parents[1]


def test_two_rank_critic_step_and_resume_match_one_process(tmp_path):
    folder = hf_tiny(tmp_path, kind="qwen2", tied=True)[0]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "tests/ppo_dist_worker.py", str(folder), str(tmp_path)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"torchrun failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    two = torch.load(tmp_path / "critic.pt")

    d = Dist()
    critic = ppo_dist_worker.new_critic(folder, d)
    base = {k: v.clone() for k, v in critic.state_dict().items()}
    norm = ppo_dist_worker.critic_step(critic, torch.optim.SGD(critic.parameters(), lr=0.5), d)
    one = full_state_dict(critic, d)
    moved = max((one[k] - base[k]).abs().max().item() for k in one)
    assert moved > 1e-2, "the step barely moved the weights: the comparison would be vacuous"
    assert one.keys() == two["plain"].keys() and not any(k.startswith("lm_head") for k in one)
    for k in one:  # the same update from 2 ranks (with and without recomputed blocks) as from one process
        torch.testing.assert_close(two["plain"][k], one[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")
        torch.testing.assert_close(two["checkpointed"][k], one[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")
    assert abs(two["plain_norm"] - norm) < 1e-5 * norm and abs(two["checkpointed_norm"] - norm) < 1e-5 * norm

    # The 2-rank checkpoint: the critic folder loads in one process, and a resume continues exactly.
    saved = Critic.from_pretrained(tmp_path / "ckpt-1" / "critic").state_dict()
    for k, v in two["saved"].items():
        assert torch.equal(saved[k], v), k
    for k, v in two["continued"].items():
        assert torch.equal(two["resumed"][k], v), k
    assert any(not torch.equal(two["continued"][k], two["saved"][k]) for k in two["saved"])  # the step did move
