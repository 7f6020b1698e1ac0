"""The GRPO-family options (issue 22) and the numeric guards (issue 17 items 3, 6) against hand-computed values:
per-token advantages, dual-clip, GSPO's sequence ratio, KL estimators, the +-20 clamp, entropy bonus, TIS,
batch-std advantages, DAPO's overlong penalty, and the lr / completion-budget schedules."""
import math
import threading

import pytest
import torch

from nanor1.grpo import group_advantages, overlong_penalty, policy_loss
from nanor1.schedule import length_at, lr_at, parse_length_schedule


def ragged(ratios, adv, lengths):
    """logp (requires grad) whose ratio over old_logp is `ratios` (padding holds 7.0, which must never count)."""
    ratio = torch.tensor(ratios, dtype=torch.float64)
    T = ratio.shape[1]
    old = -0.5 - 0.25 * torch.arange(ratio.numel(), dtype=torch.float64).view(ratio.shape)
    logp = (old + torch.log(ratio)).requires_grad_(True)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    return logp, old, torch.tensor(adv, dtype=torch.float64), mask


# ---------------------------------------------------------------------------------------------------------------
# Advantages of shape (B, T)

def test_sequence_advantages_equal_their_broadcast_per_token():
    logp, old, adv, mask = ragged([[1.1, 0.9, 1.5], [1.05, 7.0, 7.0], [0.95, 1.5, 7.0]], [1.0, 2.0, -0.5], [3, 1, 2])
    ref = old - 0.3
    ent = torch.rand(3, 3, dtype=torch.float64)
    opts = dict(ref_logp=ref, beta=0.1, entropy=ent, entropy_coef=0.01, clip_ratio_c=3.0, max_len=4)
    for lt in ("grpo", "dapo", "dr_grpo"):
        a, _ = policy_loss(logp, old, adv, mask, lt, **opts)
        (ga,) = torch.autograd.grad(a, logp)
        b, _ = policy_loss(logp, old, adv[:, None].expand(3, 3).clone(), mask, lt, **opts)
        (gb,) = torch.autograd.grad(b, logp)
        assert a.item() == b.item()
        torch.testing.assert_close(ga, gb, rtol=0, atol=0)


def test_per_token_advantages_hand_values():
    """Row 0 (3 tokens), A_t = (1, -2, 0.5), ratios (1.5, 0.5, 1.0): -min(rA, clip(r)A) = -1.2 (clip binds),
    +1.6 (-min(-1, -1.6): clip binds), -0.5; row 1 (1 token) A = 3, r = 1.1: -3.3. dapo over 4 tokens."""
    logp, old, _, mask = ragged([[1.5, 0.5, 1.0], [1.1, 7.0, 7.0]], [0.0, 0.0], [3, 1])
    A = torch.tensor([[1.0, -2.0, 0.5], [3.0, 99.0, 99.0]], dtype=torch.float64)
    loss, st = policy_loss(logp, old, A, mask, "dapo")
    assert abs(loss.item() - (-1.2 + 1.6 - 0.5 - 3.3) / 4) < 1e-12
    assert abs(st["clip_frac_high"].item() - 1 / 4) < 1e-12 and abs(st["clip_frac_low"].item() - 1 / 4) < 1e-12
    loss.backward()
    # d/dlogp of -r A is -r A where unclipped (dr/dlogp = r), 0 where the clip binds.
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0, -0.5], [-3.3, 0.0, 0.0]], dtype=torch.float64) / 4)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logp, old, A[:, :2], mask)


# ---------------------------------------------------------------------------------------------------------------
# Dual-clip

def test_dual_clip_bounds_negative_advantages_at_c():
    """A = -1 rows: ratio 4 (> c = 3) -> loss 3 |A| = 3, gradient 0 (without dual-clip: 4, gradient -rA = 4);
    ratio 2 (< c) -> 2, gradient 2. A = +1 row with ratio 4: the ordinary clip (1.2) binds, untouched."""
    logp, old, adv, mask = ragged([[4.0, 2.0], [4.0, 7.0]], [-1.0, 1.0], [2, 1])
    loss, st = policy_loss(logp, old, adv, mask, "dapo", clip_ratio_c=3.0)
    assert abs(loss.item() - (3.0 + 2.0 - 1.2) / 3) < 1e-12
    assert abs(st["dual_clip_frac"].item() - 1 / 3) < 1e-12
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 2.0], [0.0, 0.0]], dtype=torch.float64) / 3)
    logp.grad = None
    loss, st = policy_loss(logp, old, adv, mask, "dapo")  # off: the A < 0 token at ratio 4 pulls with 4
    assert abs(loss.item() - (4.0 + 2.0 - 1.2) / 3) < 1e-12 and "dual_clip_frac" not in st
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[4.0, 2.0], [0.0, 0.0]], dtype=torch.float64) / 3)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        policy_loss(logp, old, adv, mask, clip_ratio_c=0.9)


# ---------------------------------------------------------------------------------------------------------------
# GSPO: the sequence-level ratio

def test_sequence_ratio_is_shared_and_clipped_as_a_whole():
    """Row 0, A = 1, ratios (1.5, 1.3, 1.1): s = (1.5 * 1.3 * 1.1)^(1/3) = 1.2898 > 1.2: every token clipped,
    no gradient in the row (token-level, the 1.1 token would still pull). Row 1, A = -0.5, ratios (0.95, 1.5):
    s = 1.425^(1/2) = 1.19373, inside the range: each token's loss 0.5 s, gradient 0.5 s each (its own)."""
    logp, old, adv, mask = ragged([[1.5, 1.3, 1.1], [0.95, 1.5, 7.0]], [1.0, -0.5], [3, 2])
    s0, s1 = (1.5 * 1.3 * 1.1) ** (1 / 3), 1.425 ** 0.5
    loss, st = policy_loss(logp, old, adv, mask, "grpo", ratio_level="sequence")
    assert abs(loss.item() - (-1.2 + 0.5 * s1) / 2) < 1e-12
    assert abs(st["ratio_mean"].item() - (3 * s0 + 2 * s1) / 5) < 1e-12  # each token carries its row's s
    assert abs(st["ratio_max"].item() - s0) < 1e-12 and abs(st["clip_frac_high"].item() - 3 / 5) < 1e-12
    loss.backward()
    # grpo weights a token of row i by 1 / (B * L_i): 1/6 in the 3-token row, 1/4 in the 2-token row.
    torch.testing.assert_close(logp.grad, torch.tensor([[0, 0, 0], [0.5 * s1 / 4, 0.5 * s1 / 4, 0]],
                                                       dtype=torch.float64))
    logp.grad = None
    policy_loss(logp, old, adv, mask, "grpo")[0].backward()  # token-level: the 1.1 token of row 0 pulls
    assert logp.grad[0, 2].item() == pytest.approx(-1.1 / 6)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_sequence_ratio_gradient_equals_differentiating_s_itself(loss_type):
    """The per-token form sg[s] pi_t / sg[pi_t] and TRL's differentiable s = exp(mean_t d) broadcast over the
    sequence give the same loss and the same gradient when the advantage is shared by a sequence."""
    torch.manual_seed(0)
    B, T = 6, 5
    logp = (torch.randn(B, T, dtype=torch.float64) * 0.1).requires_grad_(True)
    old = logp.detach() + 0.1 * torch.randn(B, T, dtype=torch.float64)
    adv = torch.randn(B, dtype=torch.float64)
    mask = (torch.arange(T)[None, :] < torch.tensor([5, 1, 3, 4, 2, 5])[:, None]).long()
    ours, _ = policy_loss(logp, old, adv, mask, loss_type, 0.05, 0.08, max_len=T, ratio_level="sequence")
    (g_ours,) = torch.autograd.grad(ours, logp)
    m = mask.double()
    s = torch.exp(((logp - old) * m).sum(1) / m.sum(1))[:, None]  # (B, 1), differentiable
    per_token = -torch.minimum(s * adv[:, None], s.clamp(0.95, 1.08) * adv[:, None]).expand(B, T)
    theirs = {"grpo": ((per_token * m).sum(1) / m.sum(1)).mean(), "dapo": (per_token * m).sum() / m.sum(),
              "dr_grpo": (per_token * m).sum() / (B * T)}[loss_type]
    (g_theirs,) = torch.autograd.grad(theirs, logp)
    assert ((s < 0.95) | (s > 1.08)).any() and ((s > 0.95) & (s < 1.08)).any()  # both branches exercised
    assert abs(ours.item() - theirs.item()) < 1e-12
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# KL estimators and the +-20 clamp

@pytest.mark.parametrize("estimator", ["k1", "k2", "k3", "low_var_kl"])
def test_kl_estimators_hand_values(estimator):
    """u = ref - logp per token = (0.5, -1, 3); on-policy (ratio 1, A = 0) so the loss is beta * mean KL (dapo)."""
    logp = torch.tensor([[-1.0, -2.0, -0.5]], dtype=torch.float64, requires_grad=True)
    u = torch.tensor([0.5, -1.0, 3.0], dtype=torch.float64)
    ref = logp.detach() + u
    k3 = [math.exp(x) - x - 1 for x in u.tolist()]  # 0.1487, 0.3679, 16.0855
    value = {"k1": [-x for x in u.tolist()], "k2": [x * x / 2 for x in u.tolist()], "k3": k3,
             "low_var_kl": [min(k, 10.0) for k in k3]}[estimator]
    # d/dlogp with du/dlogp = -1: k1 -> 1; k2 -> -u; k3 -> 1 - e^u; low_var_kl -> the same, 0 where capped at 10.
    grad = {"k1": [1.0] * 3, "k2": [-x for x in u.tolist()], "k3": [1 - math.exp(x) for x in u.tolist()],
            "low_var_kl": [1 - math.exp(0.5), 1 - math.exp(-1.0), 0.0]}[estimator]
    loss, st = policy_loss(logp, logp.detach(), torch.zeros(1, dtype=torch.float64), torch.ones(1, 3), "dapo",
                           ref_logp=ref, beta=0.1, kl_estimator=estimator)
    assert abs(st["kl"].item() - sum(value) / 3) < 1e-12
    assert abs(loss.item() - 0.1 * sum(value) / 3) < 1e-12
    loss.backward()
    torch.testing.assert_close(logp.grad, 0.1 * torch.tensor([grad], dtype=torch.float64) / 3)


def test_extreme_log_ratios_stay_finite():
    """A token 100 nats above old and reference: exp(100) overflows fp32 (inf), exp(20) = 4.85e8 does not. The
    clamp keeps ratio, KL, TIS weight, loss and gradients finite, and ratio_max reads e^20."""
    logp = torch.tensor([[-0.5, 99.0], [-1.0, -2.0]], requires_grad=True)  # fp32, as the trainer's log-probs
    old = torch.tensor([[-0.5, -1.0], [-1.0, -2.0]])
    mask = torch.ones(2, 2)
    assert torch.isinf(torch.exp(logp.detach() - old)).any()  # unclamped, this batch would give inf
    for A in ([-1.0, 1.0], [1.0, 1.0]):
        for level in ("token", "sequence"):
            loss, st = policy_loss(logp, old, torch.tensor(A), mask, "dapo", ref_logp=old, beta=0.1,
                                   ratio_level=level, sampler_logp=old - 100, tis_cap=2.0)
            (g,) = torch.autograd.grad(loss, logp)
            assert torch.isfinite(loss) and torch.isfinite(g).all() and all(torch.isfinite(v) for v in st.values())
    _, st = policy_loss(logp, old, torch.tensor([1.0, 1.0]), mask)
    assert st["ratio_max"].item() == pytest.approx(math.exp(20), rel=1e-6)
    # k3 of u = -20 on the wild token: e^-20 + 20 - 1, finite (and > 0: the estimator's floor holds).
    _, st = policy_loss(logp, old, torch.tensor([1.0, 1.0]), mask, ref_logp=old, beta=0.1)
    assert st["kl"].item() == pytest.approx((math.exp(-20) + 19) / 4, rel=1e-6)


def test_infinite_padding_cannot_leak_into_the_loss():
    """Log-probs padded with -inf / +inf (outside the mask): loss and gradient equal those with finite padding."""
    logp, old, adv, mask = ragged([[1.1, 0.9, 7.0], [1.05, 7.0, 7.0]], [1.0, -2.0], [2, 1])
    ent = torch.ones(2, 3, dtype=torch.float64)
    opts = dict(ref_logp=old, beta=0.1, entropy=ent, entropy_coef=0.01)
    for level in ("token", "sequence"):
        want, _ = policy_loss(logp, old, adv, mask, "grpo", ratio_level=level, **opts)
        (g_want,) = torch.autograd.grad(want, logp)
        bad = torch.where(mask.bool(), logp, torch.tensor([[-math.inf], [math.inf]], dtype=torch.float64))
        got, _ = policy_loss(bad, old, adv, mask, "grpo", ratio_level=level,
                             **dict(opts, entropy=torch.where(mask.bool(), ent, math.inf)))
        (g_got,) = torch.autograd.grad(got, logp)
        assert got.item() == pytest.approx(want.item(), abs=1e-12)
        torch.testing.assert_close(g_got, g_want)


# ---------------------------------------------------------------------------------------------------------------
# Entropy bonus

def test_entropy_bonus_sign_and_aggregation():
    """loss = policy - c * aggregate(H): with grpo, H of row i's token weighs 1 / (B L_i); raising the entropy
    lowers the loss (d loss / d H = -c / (B L_i)), and the policy-loss gradient is untouched."""
    logp, old, adv, mask = ragged([[1.1, 0.9, 1.0], [1.05, 7.0, 7.0]], [1.0, 2.0], [3, 1])
    H = torch.tensor([[2.0, 1.0, 0.5], [3.0, 9.0, 9.0]], dtype=torch.float64, requires_grad=True)
    base, _ = policy_loss(logp, old, adv, mask, "grpo")
    (g_base,) = torch.autograd.grad(base, logp)
    loss, st = policy_loss(logp, old, adv, mask, "grpo", entropy=H, entropy_coef=0.01)
    assert abs(loss.item() - (base.item() - 0.01 * ((2.0 + 1.0 + 0.5) / 3 + 3.0) / 2)) < 1e-12
    assert abs(st["entropy"].item() - 6.5 / 4) < 1e-12  # token mean over the 4 valid tokens
    g_logp, g_H = torch.autograd.grad(loss, (logp, H))
    torch.testing.assert_close(g_logp, g_base)
    torch.testing.assert_close(g_H, -0.01 * torch.tensor([[1 / 6] * 3, [1 / 2, 0, 0]], dtype=torch.float64))
    loss, _ = policy_loss(logp, old, adv, mask, "dapo", entropy=H, entropy_coef=0.01)  # dapo: -c / 4 tokens
    torch.testing.assert_close(torch.autograd.grad(loss, H)[0], -0.01 / 4 * mask.double())
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logp, old, adv, mask, entropy_coef=0.01)


# ---------------------------------------------------------------------------------------------------------------
# Truncated importance sampling

def test_tis_weights_by_hand():
    """old - sampler = log(0.5), log(2.5), log(4) with C = 3: w = 0.5, 2.5, 3 (capped); on-policy (ratio 1),
    A = 1: the policy term -1 per token becomes -w; the KL term (beta) is not weighted. dapo over 3 tokens."""
    logp = torch.tensor([[-1.0, -2.0, -0.7]], dtype=torch.float64, requires_grad=True)
    old = logp.detach()
    sampler = old - torch.log(torch.tensor([[0.5, 2.5, 4.0]], dtype=torch.float64))
    ref = old + 0.5
    A, mask = torch.ones(1, dtype=torch.float64), torch.ones(1, 3)
    loss, st = policy_loss(logp, old, A, mask, "dapo", sampler_logp=sampler, tis_cap=3.0, ref_logp=ref, beta=0.1)
    k3 = math.exp(0.5) - 0.5 - 1
    assert abs(loss.item() - (-(0.5 + 2.5 + 3.0) + 3 * 0.1 * k3) / 3) < 1e-12
    assert abs(st["tis_weight_mean"].item() - 2.0) < 1e-12 and abs(st["tis_capped_frac"].item() - 1 / 3) < 1e-12
    loss.backward()  # d/dlogp: -w r A (the weight is a constant) + beta (1 - e^u)
    want = (-torch.tensor([[0.5, 2.5, 3.0]], dtype=torch.float64) + 0.1 * (1 - math.exp(0.5))) / 3
    torch.testing.assert_close(logp.grad, want)
    with pytest.raises(ValueError, match="tis_cap"):
        policy_loss(logp, old, A, mask, tis_cap=2.0)


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_micro_batches_add_up_with_every_option_on(loss_type):
    torch.manual_seed(1)
    B, T = 8, 6
    logp = torch.randn(B, T, dtype=torch.float64).requires_grad_(True)
    old = logp.detach() + 0.3 * torch.randn(B, T, dtype=torch.float64)
    adv = torch.randn(B, T, dtype=torch.float64)
    mask = (torch.rand(B, T) > 0.3).long()
    mask[:, 0] = 1
    extra = dict(ref_logp=old - 0.2, beta=0.05, kl_estimator="low_var_kl", entropy=torch.rand(B, T).double(),
                 entropy_coef=0.01, clip_ratio_c=3.0, sampler_logp=old + 0.3 * torch.randn(B, T).double(),
                 tis_cap=1.5, max_len=T)
    full, _ = policy_loss(logp, old, adv, mask, loss_type, **extra)
    (g_full,) = torch.autograd.grad(full, logp)
    norm = mask.sum() if loss_type == "dapo" else B
    total, g = 0.0, torch.zeros_like(logp)
    for idx in torch.arange(B).chunk(4):
        sub = {k: (v[idx] if torch.is_tensor(v) else v) for k, v in extra.items()}
        part, _ = policy_loss(logp[idx], old[idx], adv[idx], mask[idx], loss_type, normalizer=norm, **sub)
        total += part.item()
        g += torch.autograd.grad(part, logp)[0]
    assert abs(total - full.item()) < 1e-10
    torch.testing.assert_close(g, g_full)


def test_bad_option_names():
    logp, old, adv, mask = ragged([[1.0]], [1.0], [1])
    for kw in ({"ratio_level": "seq"}, {"kl_estimator": "k4", "beta": 0.1, "ref_logp": old}):
        with pytest.raises(ValueError, match=next(iter(kw))):
            policy_loss(logp, old, adv, mask, **kw)


# ---------------------------------------------------------------------------------------------------------------
# Advantages: batch std, statistics, over ranks

REWARDS = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1])  # 3 groups of 4; the last is flat


def test_batch_scale_hand_values_and_group_stats():
    # 12 rewards, sum 8, sum of squares 8: unbiased var = (8 - 64/12) / 11 = 8/33. Group means 1/4, 3/4, 1.
    std = math.sqrt(8 / 33)
    adv, st = group_advantages(REWARDS, 4, scale="batch", return_stats=True)
    want = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.25, 0.25, -0.75, 0.25, 0, 0, 0, 0]) / (std + 1e-6)
    torch.testing.assert_close(adv, want)
    assert (adv[8:] == 0).all()
    # Unbiased group stds: [1,0,0,0] -> sqrt(0.75 / 3) = 0.5, [1,1,0,1] -> 0.5, flat -> 0.
    assert st == {"reward_std": pytest.approx(1 / 3), "zero_adv_frac": pytest.approx(1 / 3), "groups": 3}
    torch.testing.assert_close(group_advantages(REWARDS, 4, scale=True), group_advantages(REWARDS, 4, "group"))
    torch.testing.assert_close(group_advantages(REWARDS, 4, scale=False), group_advantages(REWARDS, 4, "none"))
    torch.testing.assert_close(group_advantages(REWARDS, 4, "none")[:4], torch.tensor([0.75, -0.25, -0.25, -0.25]))
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(REWARDS, 4, scale="rank")
    adv, st = group_advantages(torch.zeros(0), 4, "batch", return_stats=True)  # a rank left without groups
    assert adv.numel() == 0 and st == {"reward_std": 0.0, "zero_adv_frac": 0.0, "groups": 0}


def test_batch_std_and_stats_span_ranks():
    """Two ranks (threads) hold groups {0, 1} and {2}; with a callable that sums over them, each computes the
    advantages of its groups and the statistics exactly as one process does over all three."""
    one, one_st = group_advantages(REWARDS, 4, scale="batch", return_stats=True)
    parts, barrier, out = [None, None], threading.Barrier(2), {}

    def run(rank, rewards):
        def all_reduce(t):
            parts[rank] = t.clone()
            barrier.wait()
            total = parts[0] + parts[1]
            barrier.wait()
            return total
        out[rank] = group_advantages(rewards, 4, scale="batch", all_reduce=all_reduce, return_stats=True)

    threads = [threading.Thread(target=run, args=(0, REWARDS[:8])), threading.Thread(target=run, args=(1, REWARDS[8:]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    torch.testing.assert_close(torch.cat([out[0][0], out[1][0]]), one)
    assert out[0][1] == out[1][1] == one_st
    alone = group_advantages(REWARDS[:8], 4, scale="batch")  # without the callable: this rank's std only
    assert not torch.allclose(alone, one[:8])


# ---------------------------------------------------------------------------------------------------------------
# DAPO overlong penalty

def test_overlong_penalty_by_hand():
    # Budget 20, buffer 5: free up to 15 tokens, then -1/5 per token, -1 at 20 (and beyond).
    got = overlong_penalty([10, 15, 16, 18, 20, 25], max_len=20, buffer=5, penalty=1.0)
    torch.testing.assert_close(got, torch.tensor([0.0, 0.0, -0.2, -0.6, -1.0, -1.0]))
    torch.testing.assert_close(overlong_penalty(torch.tensor([18]), 20, 5, 0.5), torch.tensor([-0.3]))
    assert (overlong_penalty([20, 3], 20, 0, 1.0) == 0).all()  # buffer 0: off
    with pytest.raises(ValueError, match="overlong_buffer"):
        overlong_penalty([1], 20, 21, 1.0)
    with pytest.raises(ValueError, match="overlong_penalty"):
        overlong_penalty([1], 20, 5, -1.0)


# ---------------------------------------------------------------------------------------------------------------
# Schedules

def test_constant_schedule_is_the_old_lr_at():
    def old(lr, warmup, s):  # train.py's lr_at before the schedules
        return lr * min(1.0, (s + 1) / warmup) if warmup else lr
    for warmup in (0, 1, 3, 10):
        for s in range(25):
            assert lr_at(s, 20, 3e-5, warmup_steps=warmup) == old(3e-5, warmup, s)


def test_linear_and_cosine_hand_values():
    # N = 10, W = 2, lr 1, floor 0.1. Warm-up 0.5, 1.0; then p = (s - 2) / 8.
    lin = {0: 0.5, 1: 1.0, 2: 1.0, 3: 1 - 0.9 / 8, 9: 1 - 0.9 * 7 / 8, 40: 0.1}
    cos = {0: 0.5, 1: 1.0, 2: 1.0, 6: 0.55, 9: 0.1 + 0.45 * (1 + math.cos(7 * math.pi / 8)), 40: 0.1}
    for s, v in lin.items():
        assert lr_at(s, 10, 1.0, "linear", warmup_steps=2, min_lr_ratio=0.1) == pytest.approx(v, abs=1e-12), s
    for s, v in cos.items():
        assert lr_at(s, 10, 1.0, "cosine", warmup_steps=2, min_lr_ratio=0.1) == pytest.approx(v, abs=1e-12), s
    # warmup_ratio 0.15 of 10 steps: ceil(1.5) = 2 warm-up steps, the same curve.
    assert [lr_at(s, 10, 1.0, "cosine", warmup_ratio=0.15, min_lr_ratio=0.1) for s in range(10)] == \
        [lr_at(s, 10, 1.0, "cosine", warmup_steps=2, min_lr_ratio=0.1) for s in range(10)]
    assert lr_at(9, 10, 1.0, "linear") == pytest.approx(0.1)  # no warm-up, floor 0: the last step at lr / N
    for kw, name in (({"schedule": "step"}, "lr_schedule"), ({"warmup_steps": 2, "warmup_ratio": 0.1}, "not both"),
                     ({"min_lr_ratio": 1.5}, "min_lr_ratio"), ({"warmup_ratio": 1.0}, "warmup_ratio")):
        with pytest.raises(ValueError, match=name):
            lr_at(0, 10, 1.0, **kw)


def test_length_schedule():
    sched = parse_length_schedule("1040:16384, 1520:24576")
    assert sched == [(1040, 16384), (1520, 24576)] and parse_length_schedule("") == []
    at = {1: 8192, 1039: 8192, 1040: 16384, 1519: 16384, 1520: 24576, 9999: 24576}
    assert {s: length_at(s, 8192, sched) for s in at} == at
    for bad, msg in (("1040-16384", "step:length"), ("1:2:3", "step:length"), ("a:b", "step:length"),
                     ("1040:16384,1040:20000", "increase"), ("1520:1,1040:2", "increase"), ("0:5", ">= 1"),
                     ("5:0", ">= 1")):
        with pytest.raises(ValueError, match=msg):
            parse_length_schedule(bad)
