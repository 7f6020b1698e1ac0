r"""GRPO, the loss DeepSeek-R1-Zero trained with, and its published variants.

For each prompt q, sample a group of G completions o_1..o_G from the old policy, score them with rules
(rewards r_i), and normalise within the group (no value network):

    A_i = (r_i - mean(r)) / (std(r) + 1e-6)          std: unbiased (TRL, veRL); scale=False: A_i = r_i - mean(r)

Every token t of completion i shares A_i. With ratio rho_{i,t} = pi(o_{i,t} | q, o_{i,<t}) / pi_old(...),

    l_{i,t} = -min(rho A_i, clip(rho, 1 - eps_low, 1 + eps_high) A_i)  +  beta * KL_{i,t}
    KL_{i,t} = exp(ref - logp) - (ref - logp) - 1     (Schulman's k3 estimator: unbiased, always >= 0)

and the loss aggregates l over the valid tokens (mask) in one of three ways:

    | loss_type | aggregate                                   | who                             |
    |-----------|---------------------------------------------|---------------------------------|
    | grpo      | mean over sequences of each sequence's mean | DeepSeekMath / R1 paper         |
    | dapo      | sum over all tokens / number of tokens      | DAPO (token-level)              |
    | dr_grpo   | sum over all tokens / (sequences * max_len) | Dr. GRPO (with scale=False)     |

`grpo` gives a long completion's tokens less weight each, which Dr. GRPO shows biases towards long wrong
answers; `dapo` and `dr_grpo` weight every token alike. Clip-higher (DAPO) is clip_high > clip_low.

Micro-batching and ranks: the denominator must be the step's, not the micro-batch's, or splitting a step
changes the update. Pass `normalizer` = the step-wide count of the aggregation unit (sequences for grpo and
dr_grpo, tokens for dapo); each micro-batch then contributes its share and the gradients simply add up.
With one optimiser step per rollout batch, old_logp = logp.detach(): ratio 1, the clip never binds.

Other baselines for the same loss (--algo), each an advantage per token fed to the same policy_loss:

    | algo         | advantage of token t of completion i                         | who                         |
    |--------------|--------------------------------------------------------------|-----------------------------|
    | grpo         | (r_i - mean(r)) / std(r) within the group (above)            | DeepSeekMath                |
    | rloo         | r_i - mean_{j != i} r_j within the group                     | Ahmadian et al. 2024 (RLOO) |
    | reinforce_pp | whiten_batch(sum_{s >= t} r_{i,s}),                          | Hu 2025 (REINFORCE++)       |
    |              | r_{i,s} = R_i [s = last] - beta KL_{i,s}                     |                             |
    | ppo          | GAE over a learned critic's values (nanor1/ppo.py)           | Schulman et al. 2017        |

RLOO's leave-one-out mean does not include r_i itself, so it is an unbiased baseline: A_i = G/(G-1) (r_i -
mean(r)), GRPO's numerator scaled up and never divided by the std. REINFORCE++ has no group baseline at all:
the KL to the reference goes into the reward of every token (nanor1/ppo.py token_rewards), the return of
token t sums the rewards to the end (gamma = 1), and the returns are whitened over every valid token of the
batch on all ranks, which centres them (the batch mean is the baseline) and fixes their scale.
"""
import torch

LOSS_TYPES = ("grpo", "dapo", "dr_grpo")


def group_advantages(rewards, group_size: int, scale: bool = True):
    """rewards (P*G,) prompt-major -> advantages (P*G,). A group whose rewards are all equal gets exactly 0."""
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for group-relative advantages, got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.float().view(-1, group_size)  # (P, G)
    adv = r - r.mean(1, keepdim=True)
    if scale:
        adv = adv / (r.std(1, keepdim=True) + 1e-6)  # torch.std is the unbiased (G - 1) estimator
    flat = (r == r[:, :1]).all(1, keepdim=True)  # no signal: the mean's rounding must not invent one
    return torch.where(flat, 0.0, adv).view(-1)


def policy_loss(logp, old_logp, advantages, mask, loss_type="grpo", clip_low=0.2, clip_high=0.2,
                ref_logp=None, beta=0.0, max_len=None, normalizer=None):
    """logp, old_logp, ref_logp, mask: (B, T); advantages: (B,). Returns (loss, stats)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp")
    if loss_type == "dr_grpo" and not max_len:
        raise ValueError("loss_type 'dr_grpo' needs max_len (the generation budget)")
    mask = mask.to(logp.dtype)
    A = advantages[:, None]  # (B, 1): every token of a completion shares its advantage
    ratio = torch.exp(logp - old_logp)  # (B, T)
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    per_token = -torch.minimum(ratio * A, clipped * A)  # (B, T)
    if beta > 0:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1  # (B, T) k3 estimator of KL(pi || ref)
        per_token = per_token + beta * kl

    B = logp.shape[0]
    if loss_type == "grpo":
        seq_mean = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B,)
        loss = seq_mean.sum() / (normalizer if normalizer is not None else B)
    elif loss_type == "dapo":
        loss = (per_token * mask).sum() / (normalizer if normalizer is not None else mask.sum().clamp(min=1))
    else:
        loss = (per_token * mask).sum() / ((normalizer if normalizer is not None else B) * max_len)

    with torch.no_grad():  # diagnostics over this batch's valid tokens
        n = mask.sum().clamp(min=1)
        stats = {
            "clip_frac_low": ((ratio < 1 - clip_low) & (A < 0)).to(mask.dtype).mul(mask).sum() / n,
            "clip_frac_high": ((ratio > 1 + clip_high) & (A > 0)).to(mask.dtype).mul(mask).sum() / n,
            "ratio_mean": (ratio * mask).sum() / n,
            "ratio_max": torch.where(mask.bool(), ratio, 0).max(),
        }
        if beta > 0:
            stats["kl"] = (kl * mask).sum() / n
    return loss, stats


@torch.no_grad()
def whiten(x, mask, all_reduce=None):
    """(x - mean) / sqrt(var + 1e-8) over the valid tokens of the whole step, 0 outside the mask.

    all_reduce: a callable that sums a small tensor over ranks in place and returns it (under torchrun:
    `lambda t: distributed.all_reduce(t, d)`); None in one process. One collective of 3 float64 numbers
    (count, sum, sum of squares; float64 so that the variance's subtraction loses nothing that matters)."""
    mask = mask.float()
    x64, m64 = x.double(), mask.double()
    stats = torch.stack([m64.sum(), (x64 * m64).sum(), (x64 * x64 * m64).sum()])
    if all_reduce is not None:
        stats = all_reduce(stats)
    n, s, ss = stats.tolist()
    if n == 0:
        return torch.zeros_like(x, dtype=torch.float32)
    mean = s / n
    var = max(ss - n * mean * mean, 0.0) / max(n - 1, 1)  # unbiased (Bessel), as veRL's masked_var
    return ((x.float() - mean) * (var + 1e-8) ** -0.5) * mask


def rloo_advantages(rewards, group_size: int):
    """rewards (P*G,) prompt-major -> advantages (P*G,): A_i = r_i - mean_{j != i} r_j within each group.
    A group whose rewards are all equal gets exactly 0."""
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for leave-one-out advantages, got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.float().view(-1, group_size)  # (P, G)
    others = (r.sum(1, keepdim=True) - r) / (group_size - 1)  # (P, G) mean of the other G - 1
    flat = (r == r[:, :1]).all(1, keepdim=True)  # no signal: rounding in the sums must not invent one
    return torch.where(flat, 0.0, r - others).view(-1)


def reinforce_pp_advantages(token_rewards, mask, all_reduce=None):
    """token_rewards, mask: (B, T) (token_rewards from nanor1.ppo.token_rewards, with the KL in it). Returns the
    advantages (B, T): the reward-to-go of each valid token, whitened over the valid tokens of all ranks
    (all_reduce: see whiten)."""
    mask = mask.float()
    r = token_rewards.float() * mask
    returns = r.flip(1).cumsum(1).flip(1) * mask  # (B, T) sum_{s >= t} r_s, gamma = 1
    return whiten(returns, mask, all_reduce)
