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
    """logp, old_logp, ref_logp, mask: (B, T); advantages: (B,) one per sequence, or (B, T) one per token.
    Returns (loss, stats)."""
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp")
    if loss_type == "dr_grpo" and not max_len:
        raise ValueError("loss_type 'dr_grpo' needs max_len (the generation budget)")
    mask = mask.to(logp.dtype)
    A = advantages[:, None] if advantages.dim() == 1 else advantages  # (B, 1): shared by the tokens, or (B, T)
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
