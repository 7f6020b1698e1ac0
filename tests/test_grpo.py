"""GRPO pieces against values computed by hand."""
import math

import pytest
import torch

from nanor1.grpo import group_advantages, policy_loss


def test_group_advantages_hand_values():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.5])
    a = group_advantages(r, 4)
    s = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]: sum of squares 1, over G - 1 = 3
    expect = torch.tensor([0.5, -0.5, -0.5, 0.5]) / (s + 1e-6)
    torch.testing.assert_close(a[:4], expect)
    assert (a[4:] == 0).all()  # equal rewards: exactly zero
    torch.testing.assert_close(group_advantages(r, 4, scale=False)[:4], torch.tensor([0.5, -0.5, -0.5, 0.5]))
    # 0.1 * 3 has rounding error; the group is still flat.
    assert (group_advantages(torch.tensor([0.1, 0.1, 0.1]), 3) == 0).all()
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(r, 3)
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(r, 1)


def setup_batch():
    # Two sequences: lengths 3 and 1 (mask), ratios chosen to hit each clip branch.
    logp = torch.log(torch.tensor([[1.5, 0.7, 1.0], [0.5, 9.0, 9.0]]))
    logp.requires_grad_(True)
    old = torch.zeros(2, 3)
    adv = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    return logp, old, adv, mask


def test_policy_loss_hand_values_each_variant():
    logp, old, adv, mask = setup_batch()
    # Per token -min(rA, clip(r)A): row 0 (A=2): r=1.5 -> clip 1.2 -> -2.4; r=0.7 -> min(1.4, 1.6) -> -1.4;
    # r=1 -> -2. Row 1 (A=-1): r=0.5 -> min(-0.5, -0.8) = -0.8 -> +0.8 (the low clip binds).
    tok = [[-2.4, -1.4, -2.0], [0.8]]
    want = {
        "grpo": (sum(tok[0]) / 3 + 0.8) / 2,
        "dapo": (sum(tok[0]) + 0.8) / 4,
        "dr_grpo": (sum(tok[0]) + 0.8) / (2 * 5),
    }
    for lt, w in want.items():
        loss, stats = policy_loss(logp, old, adv, mask, loss_type=lt, max_len=5)
        assert abs(loss.item() - w) < 1e-6, lt
    loss, stats = policy_loss(logp, old, adv, mask, loss_type="grpo")
    assert abs(stats["clip_frac_high"].item() - 1 / 4) < 1e-6  # r=1.5 with A>0
    assert abs(stats["clip_frac_low"].item() - 1 / 4) < 1e-6  # r=0.5 with A<0
    assert abs(stats["ratio_max"].item() - 1.5) < 1e-6  # 9.0 sits in padding: not counted


def test_gradients_hand_values_and_padding_gets_none():
    logp, old, adv, mask = setup_batch()
    loss, _ = policy_loss(logp, old, adv, mask, loss_type="dapo")
    loss.backward()
    g = logp.grad
    # d/dlogp of -r*A is -r*A where unclipped, 0 where the clip binds. Divided by 4 tokens.
    expect = torch.tensor([[0.0, -0.7 * 2, -1.0 * 2], [0.0, 0.0, 0.0]]) / 4
    torch.testing.assert_close(g, expect)


def ragged_batch():
    """Three sequences of lengths 3, 1, 2 (T = 3) with old log-probs != 0, so the ratio is exp(logp - old).
    Padding holds a ratio of 7 that must not count. Ratios per row, with A = (1, 2, -0.5):
      row 0 (A=1):    1.1, 0.9 inside the clip range; 1.5 clipped to 1.2 (binds: A > 0)
      row 1 (A=2):    1.05 inside
      row 2 (A=-0.5): 0.95 inside; 1.5 above 1 + eps but A < 0: min(rA, 1.2A) = rA, the clip does not bind."""
    ratio = torch.tensor([[1.1, 0.9, 1.5], [1.05, 7.0, 7.0], [0.95, 1.5, 7.0]])
    old = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.0, -1.0], [-0.2, -0.7, -4.0]])
    logp = (old + torch.log(ratio)).requires_grad_(True)
    adv = torch.tensor([1.0, 2.0, -0.5])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0]])
    # By hand: per-token loss -min(rA, clip(r)A), and its derivative in logp (dr/dlogp = r): -rA where the
    # unclipped term is the min, 0 where the clip binds or in padding.
    tok_loss = [[-1.1, -0.9, -1.2], [-2.1], [0.475, 0.75]]
    tok_grad = torch.tensor([[-1.1, -0.9, 0.0], [-2.1, 0.0, 0.0], [0.475, 0.75, 0.0]])
    return logp, old, adv, mask, tok_loss, tok_grad


def test_grpo_weights_each_sequence_by_its_own_length():
    """grpo: mean over the 3 sequences of each sequence's token mean, so a token of row i weighs 1 / (B * L_i):
    1/9 in the 3-token row, 1/3 in the 1-token row, 1/6 in the 2-token row."""
    logp, old, adv, mask, tok_loss, tok_grad = ragged_batch()
    loss, _ = policy_loss(logp, old, adv, mask, loss_type="grpo")
    want = (sum(tok_loss[0]) / 3 + sum(tok_loss[1]) / 1 + sum(tok_loss[2]) / 2) / 3  # -0.8513888...
    assert abs(loss.item() - want) < 1e-6 and abs(want - (-3.2 / 3 - 2.1 + 1.225 / 2) / 3) < 1e-12
    loss.backward()
    weight = torch.tensor([[1 / 9], [1 / 3], [1 / 6]])
    torch.testing.assert_close(logp.grad, tok_grad * weight)
    assert (logp.grad[mask == 0] == 0).all() and logp.grad[0, 2] == 0  # padding and the binding clip: none
    # With a step-wide normaliser of 6 sequences (this batch is half the step), each weight is 1 / (6 * L_i).
    logp.grad = None
    loss, _ = policy_loss(logp, old, adv, mask, loss_type="grpo", normalizer=6)
    assert abs(loss.item() - want * 3 / 6) < 1e-6
    loss.backward()
    torch.testing.assert_close(logp.grad, tok_grad * weight * 3 / 6)


def test_dr_grpo_divides_by_sequences_times_max_len():
    """dr_grpo: the token sum over B * max_len = 3 * 4 (the generation budget, not T = 3 nor the 6 valid
    tokens): every valid token weighs 1/12 whatever its sequence's length."""
    logp, old, adv, mask, tok_loss, tok_grad = ragged_batch()
    loss, _ = policy_loss(logp, old, adv, mask, loss_type="dr_grpo", max_len=4)
    want = sum(sum(row) for row in tok_loss) / (3 * 4)  # -4.075 / 12
    assert abs(loss.item() - want) < 1e-6 and abs(want + 4.075 / 12) < 1e-12
    loss.backward()
    torch.testing.assert_close(logp.grad, tok_grad / 12)
    # With a step-wide normaliser of 6 sequences: / (6 * 4).
    logp.grad = None
    loss, _ = policy_loss(logp, old, adv, mask, loss_type="dr_grpo", max_len=4, normalizer=6)
    assert abs(loss.item() - sum(sum(row) for row in tok_loss) / 24) < 1e-6
    loss.backward()
    torch.testing.assert_close(logp.grad, tok_grad / 24)


def test_clip_higher_and_kl():
    logp = torch.log(torch.tensor([[1.25]])).requires_grad_(True)
    old = torch.zeros(1, 1)
    adv = torch.tensor([1.0])
    mask = torch.ones(1, 1)
    loss, _ = policy_loss(logp, old, adv, mask, clip_high=0.28)  # 1.25 < 1.28: not clipped
    assert abs(loss.item() + 1.25) < 1e-6
    ref = torch.log(torch.tensor([[1.0]]))
    loss, stats = policy_loss(logp, old, adv, mask, clip_high=0.28, ref_logp=ref, beta=0.1)
    d = math.log(1.0) - math.log(1.25)
    k3 = math.exp(d) - d - 1
    assert abs(stats["kl"].item() - k3) < 1e-6
    assert abs(loss.item() - (-1.25 + 0.1 * k3)) < 1e-6
    loss.backward()
    # d/dlogp [ -r + beta (e^{ref-logp} - (ref - logp) - 1) ] = -r + beta (1 - e^{ref-logp})
    assert abs(logp.grad.item() - (-1.25 + 0.1 * (1 - math.exp(d)))) < 1e-6


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_micro_batches_with_step_normaliser_add_up(loss_type):
    torch.manual_seed(0)
    B, T = 8, 6
    logp = torch.randn(B, T).requires_grad_(True)
    old = logp.detach() + 0.1 * torch.randn(B, T)
    adv = torch.randn(B)
    mask = (torch.rand(B, T) > 0.3).long()
    mask[:, 0] = 1
    full, _ = policy_loss(logp, old, adv, mask, loss_type=loss_type, max_len=T)
    (g_full,) = torch.autograd.grad(full, logp)
    norm = mask.sum() if loss_type == "dapo" else B
    total, g = 0.0, torch.zeros_like(logp)
    for idx in torch.arange(B).chunk(4):
        part, _ = policy_loss(logp[idx], old[idx], adv[idx], mask[idx], loss_type=loss_type, max_len=T,
                              normalizer=norm)
        total += part.item()
        g += torch.autograd.grad(part, logp)[0]
    assert abs(total - full.item()) < 1e-6
    torch.testing.assert_close(g, g_full)


def test_bad_arguments():
    logp, old, adv, mask = setup_batch()
    with pytest.raises(ValueError, match="loss_type"):
        policy_loss(logp, old, adv, mask, loss_type="ppo")
    with pytest.raises(ValueError, match="max_len"):
        policy_loss(logp, old, adv, mask, loss_type="dr_grpo")
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, old, adv, mask, beta=0.1)
