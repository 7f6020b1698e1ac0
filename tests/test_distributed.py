"""FSDP2 on the CPU with gloo: 2 processes started by torchrun from pytest."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nanor1.distributed import Dist
from nanor1.model import Transformer
from tests import dist_worker
from tests.tiny import hf_tiny

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "data" / "tiny"


def torchrun(*args, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"torchrun failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p.stdout


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return hf_tiny(tmp_path_factory.mktemp("m"), kind="qwen2", tied=True)[0]


def test_two_ranks_make_the_same_update_as_one(folder, tmp_path):
    """grpo and dapo without clipping, and grpo with a grad_clip that binds at every optimiser step: under FSDP
    the clip must scale by the global norm over all shards, as one process does, not by each rank's own."""
    torchrun("tests/dist_worker.py", "step", folder, tmp_path)
    two = torch.load(tmp_path / "params.pt")
    norms = {}
    for variant in ("grpo", "dapo", "grpo_clip"):
        torch.manual_seed(0)
        with dist_worker.recorded_grad_norms() as norms[variant]:
            one = dist_worker.one_step(Transformer.from_pretrained(folder, dtype=torch.float32), Dist(), variant)
        base = Transformer.from_pretrained(folder, dtype=torch.float32).state_dict()
        moved = max((one[k] - base[k]).abs().max().item() for k in one)
        assert moved > 1e-2, "the step barely moved the weights: the comparison would be vacuous"
        for k in one:
            torch.testing.assert_close(two[variant][k], one[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")
            if variant == "grpo":  # gradient checkpointing inside the FSDP units changes nothing
                torch.testing.assert_close(two["grpo_ckpt"][k], one[k], rtol=1e-5, atol=1e-6,
                                           msg=lambda m: f"checkpointed {k}: {m}")
    # The clipped variant: one process's pre-clip norms all exceed grad_clip, so every step clips; both ranks saw
    # the same global norm, equal to one process's.
    clip = dist_worker.STEP_VARIANTS["grpo_clip"][1]
    one_norms = torch.tensor(norms["grpo_clip"], dtype=torch.float64)[:, 0]  # (steps,)
    rank_norms = two["grpo_clip_norms"]  # (ranks, steps, [global, local])
    assert len(one_norms) == 4 and (one_norms > 1.2 * clip).all(), one_norms
    torch.testing.assert_close(rank_norms[..., 0], one_norms.expand(2, -1), rtol=1e-5, atol=0)
    # Clipping per shard would scale rank r's shard by min(1, clip / local_r) instead of clip / global: at least
    # 5% off at every step here (each rank holds a share of the gradient), far beyond the tolerance above.
    local = rank_norms[..., 1]
    assert torch.allclose((local ** 2).sum(0), one_norms ** 2, rtol=1e-4), "local norms do not add up to the global"
    per_shard_scale = (clip / local).clamp(max=1)
    assert ((per_shard_scale / (clip / one_norms) - 1).abs() > 0.05).all(), (local, one_norms)


def test_two_rank_ppo_step_matches_one_process(folder, tmp_path):
    """PPO through score + update with both learners: GAE advantages whitened over both ranks, the clipped value
    loss normalised over both ranks' tokens, FSDP on the policy and the critic: the same policy, the same
    critic and the same statistics as one process holding every group."""
    torchrun("tests/dist_worker.py", "ppo", folder, tmp_path)
    two = torch.load(tmp_path / "ppo.pt")
    torch.manual_seed(0)
    one = dist_worker.ppo_step(folder, Dist())
    base = Transformer.from_pretrained(folder, dtype=torch.float32).state_dict()
    for name in ("policy", "critic"):
        moved = max((one[name][k] - base[k]).abs().max().item() for k in one[name] if k in base)
        assert moved > 1e-2, f"the step barely moved the {name}'s backbone: the comparison would be vacuous"
        assert one[name].keys() == two[name].keys()
        for k in one[name]:
            torch.testing.assert_close(two[name][k], one[name][k], rtol=1e-5, atol=1e-6,
                                       msg=lambda m: f"{name} {k}: {m}")
    a, b = one["stats"], two["stats"]
    # The step exercised what it compares: the second pass moved the ratio, and the value clip bound.
    assert a["ratio_max"] > 1.01 and a["value_clip_frac"] > 0 and abs(a["explained_variance"]) > 1e-3, a
    for k in ("loss", "value_loss", "value_clip_frac", "critic_tokens", "explained_variance", "values_sum",
              "returns_sum", "value_tokens", "ratio_max", "clip_frac_low", "clip_frac_high", "entropy"):
        assert abs(a[k] - b[k]) <= 1e-5 * max(1.0, abs(a[k])), (k, a[k], b[k])
    # Each rank adds the global gradient norm once per optimiser step: two ranks sum it twice.
    assert abs(b["critic_grad_norm"] - 2 * a["critic_grad_norm"]) <= 1e-5 * a["critic_grad_norm"]


def test_two_rank_sft_step_equals_one_process(folder, tmp_path):
    """nanor1/sft.py's learner through step.update: 2 ranks with different micro-batch counts (evened out) make
    the same SGD step as one process on all the rows, and log the same loss and target-token count."""
    torchrun("tests/dist_worker.py", "sft", folder, tmp_path)
    two = torch.load(tmp_path / "sft.pt")
    torch.manual_seed(0)
    one, sums = dist_worker.sft_step(Transformer.from_pretrained(folder, dtype=torch.float32), Dist(),
                                     dist_worker.sft_examples())
    base = Transformer.from_pretrained(folder, dtype=torch.float32).state_dict()
    assert max((one[k] - base[k]).abs().max().item() for k in one) > 1e-2  # the step moved the weights
    for k in one:
        torch.testing.assert_close(two["params"][k], one[k], rtol=1e-5, atol=1e-6, msg=lambda m: f"{k}: {m}")
    assert two["sums"]["tokens"] == sums["tokens"] and abs(two["sums"]["loss"] - sums["loss"]) < 1e-6


def test_ranks_with_different_decode_lengths_finish(folder, tmp_path):
    torchrun("tests/dist_worker.py", "rollout", folder, tmp_path, timeout=240)
    total = int((tmp_path / "rollout.txt").read_text())
    assert 0 < total <= 2 * 2 * 3 + 2 * 25


def test_dynamic_sampling_deals_groups_evenly_over_ranks(folder, tmp_path):
    """Rank 0 keeps its 4 informative groups, rank 1 none (all flat): each trains on 2 of rank 0's."""
    torchrun("tests/dist_worker.py", "deal", folder, tmp_path)
    r0, r1 = ((tmp_path / f"deal-{r}.txt").read_text().split() for r in (0, 1))
    assert r0 == ["0:0", "0:1", "|", "16", "8"] and r1 == ["0:2", "0:3", "|", "16", "8"]


def test_two_rank_checkpoint_loads_in_one_process(folder, tmp_path):
    torchrun("tests/dist_worker.py", "ckpt", folder, tmp_path)
    ckpt = tmp_path / "ckpt-1"
    assert (ckpt / "optimizer").is_dir() and (ckpt / "rng-rank1.pt").is_file()
    model = Transformer.from_pretrained(ckpt, dtype=torch.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers ran (OMP_NUM_THREADS=1): 2 threads split the sums differently
    try:
        with torch.no_grad():
            logits = model(torch.tensor([[5, 6, 7, 8, 9]]))
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(logits, torch.load(tmp_path / "logits.pt"), rtol=0, atol=0)


@pytest.mark.skipif(not (TINY / "model.safetensors").is_file(), reason="data/tiny not built")
def test_torchrun_train_default_setup(tmp_path):
    out = tmp_path / "run"
    torchrun("train.py", "--steps", "3", "--out", out, "--prompts_per_step", "8", "--group_size", "4",
             "--eval_size", "16", "--threads", "1", timeout=600)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2, 3]
    assert [r["step"] for r in rows if "eval_accuracy" in r] == [0, 3]
    assert (out / "ckpt-3" / "model.safetensors").is_file()
    # The 2-rank run's checkpoint can be resumed at the same world size.
    torchrun("train.py", "--steps", "4", "--out", out, "--prompts_per_step", "8", "--group_size", "4",
             "--eval_size", "16", "--threads", "1", "--resume", "latest", timeout=600)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward" in r] == [1, 2, 3, 4]
    # ... exactly: the same rows as 4 steps without a stop (so rank 1's shards were restored too).
    full = tmp_path / "full"
    torchrun("train.py", "--steps", "4", "--out", full, "--prompts_per_step", "8", "--group_size", "4",
             "--eval_size", "16", "--threads", "1", timeout=600)
    strip = lambda f: [{k: v for k, v in json.loads(x).items() if k not in ("rollout_s", "train_s")}
                       for x in (f / "metrics.jsonl").read_text().splitlines() if '"eval_accuracy"' not in x]
    assert strip(out) == strip(full)


@pytest.mark.skipif(not (TINY / "model.safetensors").is_file(), reason="data/tiny not built")
def test_torchrun_train_with_reference_model_and_mini_batches(tmp_path):
    """beta > 0 shards a frozen reference; mu = 2 with 2 mini-batches needs old log-probs: all under 2 ranks."""
    out = tmp_path / "kl"
    torchrun("train.py", "--steps", "2", "--beta", "0.01", "--mu", "2", "--mini_batch_size", "16", "--out", out,
             "--prompts_per_step", "8", "--group_size", "4", "--eval_size", "16", "--threads", "1", timeout=600)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"reward"' in x]
    assert [r["step"] for r in rows] == [1, 2] and all(r["kl"] >= 0 for r in rows) and rows[1]["kl"] > 0


def test_two_ranks_compute_bf16_as_one_process(folder, tmp_path):
    """--precision bf16 (nanor1/precision.py): FSDP2 all-gathers bf16 weights and runs under the same autocast
    as one process over fp32 weights, with the model's fp32 residual stream on both paths. Each rank's
    log-probs equal one process's on the same rows, bit for bit; one step (gradients reduced in fp32 over
    the ranks, where one process sums over all rows in one backward) agrees to bf16 rounding."""
    torchrun("tests/dist_worker.py", "bf16", folder, tmp_path)
    two = torch.load(tmp_path / "bf16.pt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers ran
    try:
        for rank in range(2):
            one = dist_worker.bf16_logprobs(Transformer.from_pretrained(folder, dtype=torch.float32), Dist(), rank)
            theirs = two["logp"][rank, :, :one.shape[1]]
            diff = (theirs - one).abs().max().item()
            assert diff == 0, f"rank {rank}: bf16 log-probs differ from one process's by up to {diff:.2e}"
        torch.manual_seed(0)
        one = dist_worker.one_step(Transformer.from_pretrained(folder, dtype=torch.float32), Dist(), "grpo",
                                   precision="bf16")
    finally:
        torch.set_num_threads(threads)
    base = Transformer.from_pretrained(folder, dtype=torch.float32).state_dict()
    moved = torch.cat([(one[k] - base[k]).flatten() for k in one])
    gap = torch.cat([(two["params"][k] - one[k]).flatten() for k in one])
    print(f"bf16 step: |two - one| max {gap.abs().max():.2e}, relative to the step {gap.norm() / moved.norm():.2e}")
    assert moved.abs().max() > 1e-2
    assert gap.norm() / moved.norm() < 1e-2  # bf16 keeps 8 bits: gradients rounded per rank differ at ~4e-3
