"""PPO's pieces (nanor1/ppo.py), RLOO and REINFORCE++ (nanor1/grpo.py) against values computed by hand or by a
float64 loop; the critic against transformers' token-classification model."""
import json
import math
import shutil

import pytest
import torch

from nanor1.checkpoint import load_checkpoint, save_checkpoint
from nanor1.distributed import Dist
from nanor1.grpo import group_advantages, reinforce_pp_advantages, rloo_advantages, whiten
from nanor1.model import Transformer
from nanor1.ppo import Critic, explained_variance, gae, load_critic, token_rewards, value_loss
from tests.tiny import hf_tiny


# ---------------------------------------------------------------- GAE and token rewards

def gae_loop(rewards, values, mask, gamma, lam):
    """The textbook recursion in float64 Python, one row at a time over its valid positions only."""
    B, T = len(mask), len(mask[0])
    adv = [[0.0] * T for _ in range(B)]
    ret = [[0.0] * T for _ in range(B)]
    for b in range(B):
        idx = [t for t in range(T) if mask[b][t]]
        a_next, v_next = 0.0, 0.0
        for t in reversed(idx):
            delta = rewards[b][t] + gamma * v_next - values[b][t]
            a_next = delta + gamma * lam * a_next
            v_next = values[b][t]
            adv[b][t], ret[b][t] = a_next, a_next + values[b][t]
    return adv, ret


def ragged_mask():
    """Rows as the trainer packs them: prompt positions (0) first, then the completion (1), then padding (0).
    Completion lengths 5, 1, 3 and 0 (a row whose completion was masked out entirely)."""
    mask = torch.zeros(4, 8, dtype=torch.long)
    mask[0, 2:7] = 1
    mask[1, 0:1] = 1
    mask[2, 4:7] = 1
    return mask


def test_gae_matches_a_float64_loop_on_ragged_rows():
    g = torch.Generator().manual_seed(0)
    mask = ragged_mask()
    rewards = torch.randn(4, 8, generator=g)  # a reward on every token (the KL-in-reward case), padding too
    values = torch.randn(4, 8, generator=g)  # values in padding and prompt positions must not matter
    gamma, lam = 0.9, 0.8
    adv, ret = gae(rewards, values, mask, gamma, lam)
    want_adv, want_ret = gae_loop((rewards * mask).double().tolist(), values.double().tolist(), mask.tolist(),
                                  gamma, lam)
    torch.testing.assert_close(adv, torch.tensor(want_adv, dtype=torch.float32), rtol=0, atol=1e-6)
    torch.testing.assert_close(ret, torch.tensor(want_ret, dtype=torch.float32), rtol=0, atol=1e-6)
    assert (adv[mask == 0] == 0).all() and (ret[mask == 0] == 0).all()
    # The recursion really discounts: the loop with gamma = lam = 1 gives other numbers on the long row.
    ones, _ = gae_loop((rewards * mask).double().tolist(), values.double().tolist(), mask.tolist(), 1.0, 1.0)
    assert abs(ones[0][2] - want_adv[0][2]) > 0.1


def test_gae_at_gamma_lambda_one_is_final_reward_minus_value():
    mask = ragged_mask()
    R = torch.tensor([1.0, 0.0, 0.5, 1.0])
    values = torch.randn(4, 8)
    r = token_rewards(R, mask)
    adv, ret = gae(r, values, mask, 1.0, 1.0)
    valid = mask.bool()
    torch.testing.assert_close(adv[valid], (R[:, None] - values).expand(4, 8)[valid], rtol=0, atol=1e-6)
    torch.testing.assert_close(ret[valid], R[:, None].expand(4, 8)[valid], rtol=0, atol=1e-6)
    # With a KL penalty in the reward: the reward to go minus the value.
    kl = torch.rand(4, 8)
    r = token_rewards(R, mask, kl, beta=0.1)
    adv, _ = gae(r, values, mask, 1.0, 1.0)
    to_go = (r * mask).flip(1).cumsum(1).flip(1)
    torch.testing.assert_close(adv[valid], (to_go - values)[valid], rtol=0, atol=1e-6)


def test_token_rewards_hand_values():
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    R = torch.tensor([2.0, -1.0, 5.0])
    r = token_rewards(R, mask)
    assert r.tolist() == [[0, 0, 0, 2, 0], [0, -1, 0, 0, 0], [0, 0, 0, 0, 0]]  # no token: no reward anywhere
    kl = torch.full((3, 5), 0.5)
    r = token_rewards(R, mask, kl, beta=0.2)  # -0.1 on every valid token, nothing in padding
    torch.testing.assert_close(r, torch.tensor([[0, -0.1, -0.1, 1.9, 0], [-0.1, -1.1, 0, 0, 0], [0.0] * 5]))
    with pytest.raises(ValueError, match="kl"):
        token_rewards(R, mask, beta=0.2)


# ---------------------------------------------------------------- whitening and explained variance

def test_whiten_hand_values_and_over_ranks():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # mean 2, unbiased variance ((-1)^2 + 0 + 1^2) / 2 = 1
    torch.testing.assert_close(whiten(x, mask), torch.tensor([[-1.0, 0.0, 1.0, 0.0]]) / math.sqrt(1 + 1e-8))
    # Two "ranks" each holding half the rows give what one process gives on all rows: rank B's reduction is
    # recorded, then rank A's all_reduce adds it (what a sum over two ranks does).
    g = torch.Generator().manual_seed(1)
    x, mask = torch.randn(6, 5, generator=g), (torch.rand(6, 5, generator=g) > 0.4).long()
    seen = []
    whiten(x[3:], mask[3:], all_reduce=lambda t: seen.append(t.clone()) or t)
    part = whiten(x[:3], mask[:3], all_reduce=lambda t: t + seen[0])
    torch.testing.assert_close(part, whiten(x, mask)[:3])
    assert not torch.allclose(part, whiten(x[:3], mask[:3]))  # the other rank's tokens changed the answer
    assert (whiten(x, torch.zeros_like(mask)) == 0).all()


def test_explained_variance_hand_values():
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    R = torch.tensor([[1.0, 0.0, 9.0], [1.0, 0.0, 9.0]])  # valid returns 1, 0, 1, 0: unbiased var 1/3
    assert abs(explained_variance(R, R, mask) - 1.0) < 1e-12
    V = torch.tensor([[1.0, 0.0, -5.0], [0.0, 0.0, 7.0]])  # errors 0, 0, 1, 0: unbiased var (1 - 1/4) / 3 = 1/4
    assert abs(explained_variance(V, R, mask) - (1 - 0.25 / (1 / 3 + 1e-5))) < 1e-12
    assert abs(explained_variance(torch.full((2, 3), 0.5), R, mask)) < 1e-4  # a constant explains nothing
    seen = []
    explained_variance(V[1:], R[1:], mask[1:], all_reduce=lambda t: seen.append(t.clone()) or t)
    split = explained_variance(V[:1], R[:1], mask[:1], all_reduce=lambda t: t + seen[0])
    assert abs(split - explained_variance(V, R, mask)) < 1e-12


# ---------------------------------------------------------------- the value loss

def value_batch():
    """One row, three valid tokens and one of padding, value_clip 0.5:
      t0: V 1.0, V_old 0.8, R 0.0: V moved 0.2 < 0.5, so V_clip = V: l = 0.5 * 1 = 0.5, gradient V - R = 1
      t1: V 1.0, V_old 0.0, R 1.2: V_clip 0.5, (V-R)^2 0.04 < (V_clip-R)^2 0.49: l = 0.245, the clip binds,
          and V_clip does not move with V: gradient 0
      t2: V -1.0, V_old 0.0, R 0.0: V_clip -0.5, (V-R)^2 1 > 0.25: l = 0.5, gradient V - R = -1
      t3: padding (V 5): nothing."""
    values = torch.tensor([[1.0, 1.0, -1.0, 5.0]], requires_grad=True)
    old = torch.tensor([[0.8, 0.0, 0.0, 0.0]])
    ret = torch.tensor([[0.0, 1.2, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    return values, old, ret, mask


def test_value_loss_clipped_hand_values():
    values, old, ret, mask = value_batch()
    loss, stats = value_loss(values, old, ret, mask, clip=0.5)
    assert abs(loss.item() - (0.5 + 0.245 + 0.5) / 3) < 1e-6
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[1.0, 0.0, -1.0, 0.0]]) / 3)
    assert abs(stats["value_clip_frac"].item() - 1 / 3) < 1e-6  # t1 only
    assert abs(stats["values_mean"].item() - 1 / 3) < 1e-6 and abs(stats["returns_mean"].item() - 0.4) < 1e-6
    # A step-wide normaliser of 6 tokens (this batch is half the step): each token weighs 1/6.
    values.grad = None
    loss, _ = value_loss(values, old, ret, mask, clip=0.5, normalizer=6)
    assert abs(loss.item() - 1.245 / 6) < 1e-6


def test_value_loss_unclipped_hand_values():
    values, old, ret, mask = value_batch()
    loss, stats = value_loss(values, old, ret, mask, clip=10.0)  # the clip never binds: plain 0.5 (V - R)^2
    assert abs(loss.item() - 0.5 * (1.0 + 0.04 + 1.0) / 3) < 1e-6
    loss.backward()
    torch.testing.assert_close(values.grad, torch.tensor([[1.0, -0.2, -1.0, 0.0]]) / 3)
    assert stats["value_clip_frac"].item() == 0


def test_value_loss_micro_batches_with_step_normaliser_add_up():
    g = torch.Generator().manual_seed(2)
    values = torch.randn(8, 6, generator=g).requires_grad_(True)
    old = values.detach() + 0.5 * torch.randn(8, 6, generator=g)
    ret = torch.randn(8, 6, generator=g)
    mask = (torch.rand(8, 6, generator=g) > 0.3).long()
    full, _ = value_loss(values, old, ret, mask, clip=0.2)
    (g_full,) = torch.autograd.grad(full, values)
    total, grad = 0.0, torch.zeros_like(values)
    for idx in torch.arange(8).chunk(4):
        part, _ = value_loss(values[idx], old[idx], ret[idx], mask[idx], clip=0.2, normalizer=mask.sum())
        total += part.item()
        grad += torch.autograd.grad(part, values)[0]
    assert abs(total - full.item()) < 1e-6
    torch.testing.assert_close(grad, g_full)


# ---------------------------------------------------------------- RLOO and REINFORCE++

def test_rloo_hand_values():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5, 3.0, 0.0, 0.0, 0.0])
    a = rloo_advantages(r, 4)
    # 1 - mean(0, 0, 1) = 2/3; 0 - mean(1, 0, 1) = -2/3; 3 - 0 = 3; 0 - mean(3, 0, 0) = -1
    torch.testing.assert_close(a, torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0, 3, -1, -1, -1]))
    assert (a[4:8] == 0).all()
    # Leave-one-out is GRPO's unscaled advantage times G / (G - 1).
    torch.testing.assert_close(a, group_advantages(r, 4, scale=False) * 4 / 3)
    assert (rloo_advantages(torch.tensor([0.1, 0.1, 0.1]), 3) == 0).all()  # rounding invents no signal
    with pytest.raises(ValueError, match="groups of 3"):
        rloo_advantages(r[:4], 3)
    with pytest.raises(ValueError, match="group_size"):
        rloo_advantages(r, 1)


def test_reinforce_pp_hand_values():
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # token rewards: reward 1.0 and 0.6 on the last tokens, -beta KL = -0.1, -0.2, -0.1 | -0.1, -0.1 before
    R = torch.tensor([1.0, 0.6])
    kl = torch.tensor([[0.1, 0.2, 0.1], [0.1, 0.1, 7.0]])
    r = token_rewards(R, mask, kl, beta=1.0)
    torch.testing.assert_close(r, torch.tensor([[-0.1, -0.2, 0.9], [-0.1, 0.5, 0.0]]))
    # rewards to go: 0.6, 0.7, 0.9 | 0.4, 0.5; mean 0.62; unbiased var 0.148 / 4 = 0.037
    returns = [0.6, 0.7, 0.9, 0.4, 0.5]
    std = math.sqrt(0.037 + 1e-8)
    want = torch.tensor([[(x - 0.62) / std for x in returns[:3]], [(x - 0.62) / std for x in returns[3:]] + [0.0]])
    a = reinforce_pp_advantages(r, mask)
    torch.testing.assert_close(a, want, rtol=0, atol=1e-5)
    # Normalised over the whole batch: rank 1 holding the second row changes rank 0's advantages.
    seen = []
    reinforce_pp_advantages(r[1:], mask[1:], all_reduce=lambda t: seen.append(t.clone()) or t)
    torch.testing.assert_close(reinforce_pp_advantages(r[:1], mask[:1], all_reduce=lambda t: t + seen[0]), a[:1])


# ---------------------------------------------------------------- the critic

@pytest.fixture(scope="module", params=[("qwen2", True), ("qwen3", False)], ids=["qwen2-tied", "qwen3-untied"])
def folder(request, tmp_path_factory):
    kind, tied = request.param
    return hf_tiny(tmp_path_factory.mktemp(kind), kind=kind, tied=tied)[0]


def test_critic_backbone_loads_from_a_policy_checkpoint(folder):
    critic = Critic.from_pretrained(folder)
    policy = Transformer.from_pretrained(folder, dtype=torch.float32)
    assert not hasattr(critic, "lm_head") and critic.score.weight.shape == (1, critic.config.hidden_size)
    assert all(k.startswith(("model.", "score.")) for k in critic.state_dict())
    for k, v in critic.model.state_dict().items():
        assert torch.equal(v, policy.model.state_dict()[k]), k
    ids = torch.randint(0, critic.config.vocab_size, (3, 7))
    with torch.no_grad():
        values = critic(ids)
        hidden = policy(ids, return_hidden=True)  # (B, T, C)
    assert values.shape == (3, 7) and values.dtype == torch.float32
    assert (values == 0).all()  # a fresh head is zero: V = 0 before the first update
    with torch.no_grad():
        critic.score.weight.normal_()
        critic.score.bias.fill_(0.3)
        torch.testing.assert_close(critic(ids), hidden @ critic.score.weight[0] + 0.3)
        # Under bf16 autocast the blocks' matmuls run in bf16, the head in fp32: exactly the fp32 dot product of
        # the hidden states, not a bf16-rounded one.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            v16, h16 = critic(ids), policy(ids, return_hidden=True)
        assert v16.dtype == torch.float32 and not torch.equal(h16.float(), hidden)  # autocast did act
        assert torch.equal(v16, h16.float() @ critic.score.weight[0] + 0.3)


def test_critic_save_load_round_trip_and_transformers_reads_it(folder, tmp_path):
    transformers = pytest.importorskip("transformers")
    critic = Critic.from_pretrained(folder)
    with torch.no_grad():
        for p in critic.parameters():
            p.add_(0.01 * torch.randn_like(p))  # every weight moved, the head included
    critic.save_pretrained(tmp_path / "critic")
    back = Critic.from_pretrained(tmp_path / "critic")
    for k, v in critic.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k
    hf = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path / "critic", dtype=torch.float32)
    assert hf.config.num_labels == 1 and type(hf).__name__.endswith("ForTokenClassification")
    ids = torch.randint(0, critic.config.vocab_size, (2, 9))
    with torch.no_grad():
        ours, theirs = back(ids), hf.eval()(ids).logits[..., 0]
    assert (ours - theirs).abs().max().item() < 1e-5, (ours - theirs).abs().max().item()
    assert ours.abs().max().item() > 1e-2  # not trivially equal (a zero head)


def test_critic_gradient_checkpointing_changes_nothing(folder):
    ids = torch.randint(0, 97, (2, 6))
    head = torch.randn(1, 64)
    grads = []
    for ckpt in (False, True):
        critic = Critic.from_pretrained(folder)
        with torch.no_grad():
            critic.score.weight.copy_(head)
        critic.gradient_checkpointing = ckpt
        critic(ids).square().sum().backward()
        grads.append({k: p.grad for k, p in critic.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-5, atol=1e-6)
    assert grads[0]["model.layers.0.mlp.up_proj.weight"].abs().max() > 0  # the backbone does learn


def test_checkpoint_with_critic_round_trip(folder, tmp_path):
    class Tok:  # this model folder has no tokenizer files
        def save_pretrained(self, path):
            pass
    d = Dist()
    policy = Transformer.from_pretrained(folder, dtype=torch.float32)
    critic = Critic.from_pretrained(folder)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    copt = torch.optim.AdamW(critic.parameters(), lr=1e-3)
    ids = torch.randint(0, 97, (2, 6))
    policy(ids).logsumexp(-1).sum().backward()
    value_loss(critic(ids), torch.zeros(2, 6), torch.ones(2, 6), torch.ones(2, 6), clip=0.5)[0].backward()
    opt.step()
    copt.step()
    path = save_checkpoint(tmp_path, 1, policy, opt, {"step": 1}, Tok(), d, critic=critic, critic_optimizer=copt)
    assert (path / "critic" / "config.json").is_file() and (path / "critic" / "optimizer.pt").is_file()
    policy2, critic2 = Transformer.from_pretrained(folder, dtype=torch.float32), Critic.from_pretrained(folder)
    opt2 = torch.optim.AdamW(policy2.parameters(), lr=1e-3)
    copt2 = torch.optim.AdamW(critic2.parameters(), lr=1e-3)
    assert load_checkpoint(path, policy2, opt2, d, critic=critic2, critic_optimizer=copt2) == {"step": 1}
    for k, v in critic.state_dict().items():
        assert torch.equal(v, critic2.state_dict()[k]), k
    assert critic.score.weight.abs().max() > 0  # the step moved the head: the comparison is not of zeros
    s1, s2 = copt.state_dict()["state"], copt2.state_dict()["state"]
    assert s1.keys() == s2.keys() and all(torch.equal(s1[i]["exp_avg_sq"], s2[i]["exp_avg_sq"]) for i in s1)
    # The same checkpoint without its critic folder cannot resume a PPO run.
    shutil.rmtree(path / "critic")
    with pytest.raises(FileNotFoundError, match="no critic"):
        load_checkpoint(path, policy2, opt2, d, critic=critic2, critic_optimizer=copt2)


# ---------------------------------------------------------------- bad input

def test_bad_inputs(folder, tmp_path):
    values, old, ret, mask = value_batch()
    for clip in (0.0, -0.5):
        with pytest.raises(ValueError, match="value_clip must be > 0"):
            value_loss(values, old, ret, mask, clip=clip)
    with pytest.raises(ValueError, match="gamma"):
        gae(ret, old, mask, gamma=1.5)
    # A critic whose embedding has fewer rows (97) than the policy's tokenizer has ids (200).
    with pytest.raises(ValueError, match=r"--critic_model .*97 rows .*200 ids"):
        load_critic(folder, vocab_size=200, n_positions=64)
    with pytest.raises(ValueError, match=r"--critic_model .*context of 128"):
        load_critic(folder, vocab_size=97, n_positions=300)
    # Another tokenizer beside the critic's weights: the same ids would be other tokens.
    critic_dir, policy_dir = tmp_path / "critic", tmp_path / "policy"
    shutil.copytree(folder, critic_dir)
    policy_dir.mkdir()
    tok = {"model": {"vocab": {"a": 0, "b": 1}}, "added_tokens": [{"id": 2, "content": "<|endoftext|>"}]}
    (policy_dir / "tokenizer.json").write_text(json.dumps(tok))
    (critic_dir / "tokenizer.json").write_text(json.dumps(tok))
    assert isinstance(load_critic(critic_dir, 97, 64, policy_path=policy_dir), Critic)
    tok["model"]["vocab"] = {"b": 0, "a": 1}
    (critic_dir / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ValueError, match="tokenizer.json differs"):
        load_critic(critic_dir, 97, 64, policy_path=policy_dir)
    # An architecture nanoR1 does not implement, and a folder that is not there.
    raw = json.loads((folder / "config.json").read_text())
    (critic_dir / "config.json").write_text(json.dumps(dict(raw, model_type="llama")))
    with pytest.raises(ValueError, match="model_type 'llama'"):
        load_critic(critic_dir, 97, 64)
    with pytest.raises(FileNotFoundError):
        load_critic(tmp_path / "nowhere", 97, 64)
