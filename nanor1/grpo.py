r"""GRPO, the loss DeepSeek-R1-Zero trained with, and its published variants.

For each prompt q, sample a group of G completions o_1..o_G from the old policy, score them with rules
(rewards r_i), and normalise within the group (no value network):

    A_i = (r_i - mean(r)) / (std + 1e-6)      std: unbiased (TRL, veRL); a group with equal rewards gets 0

    | scale | std                                           | who                                  |
    |-------|-----------------------------------------------|--------------------------------------|
    | group | std of the group's G rewards                  | DeepSeekMath / R1; TRL default       |
    | batch | std of all the step's rewards, over all ranks | TRL scale_rewards="batch" (Lite PPO) |
    | none  | no division: A_i = r_i - mean(r)              | Dr. GRPO                             |

DAPO's soft overlong punishment, overlong_penalty(), is added to r_i before this (off unless set).
Every token t of completion i shares A_i (advantages (B,)); PPO/GAE passes one per token (B, T) instead.
With the log-ratio d = log pi(o_t | q, o_<t) - log pi_old(...), clamped to +-20 as veRL does (e^20 ~ 5e8 is
finite; one wild token must not turn the step into inf), and rho = exp(d),

    l_{i,t} = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)  +  beta * KL_{i,t}
    KL_{i,t} = exp(ref - logp) - (ref - logp) - 1     (Schulman's k3 estimator: unbiased, always >= 0; the
                                                        default of kl_estimator below)

and the loss aggregates l over the valid tokens (mask) in one of three ways:

    | loss_type | aggregate                                   | who                        |
    |-----------|---------------------------------------------|----------------------------|
    | grpo      | mean over sequences of each sequence's mean | DeepSeekMath / R1 paper    |
    | dapo      | sum over all tokens / number of tokens      | DAPO (token-level)         |
    | dr_grpo   | sum over all tokens / (sequences * max_len) | Dr. GRPO (with scale=none) |

`grpo` gives a long completion's tokens less weight each, which Dr. GRPO shows biases towards long wrong
answers; `dapo` and `dr_grpo` weight every token alike. Clip-higher (DAPO) is clip_high > clip_low.

The options, each off unless set (veRL = volcengine/verl core_algos.py and its actor/algorithm config;
TRL = trl/trainer/grpo_config.py and grpo_trainer.py, v1.16):

    | option                 | what it does to l_{i,t}                                                      |
    |------------------------|------------------------------------------------------------------------------|
    | clip_ratio_c = c > 1   | A < 0: l = min(l, -A c), the loss bounded at -A c: no pull past rho = c      |
    | ratio_level = sequence | rho_{i,t} = sg[s_i] pi_t / sg[pi_t], s_i = exp(mean_t d): each token carries |
    |                        | its sequence's ratio (so the clip takes or drops the sequence whole)         |
    | kl_estimator           | u = clamp(ref - logp, +-20): k1 = -u, k2 = u^2 / 2, k3 = e^u - u - 1,        |
    |                        | low_var_kl = min(k3, 10)                                                     |
    | entropy_coef = c       | l -= c H_{i,t} (the policy's entropy at t), aggregated by loss_type with l   |
    | tis_cap = C            | the policy term times w = min(exp(old - sampler), C), a constant; KL and     |
    |                        | entropy unweighted. Corrects a sampler that scores tokens unlike the trainer |

  - clip_ratio_c: dual-clip PPO (arXiv 1912.09729). veRL actor.clip_ratio_c = 3.0, applied by its default
    (vanilla) loss; TRL `delta` (INTELLECT-2) is the same bound when delta > 1 + eps_high.
  - ratio_level: GSPO (arXiv 2507.18071), which pairs it with loss_type grpo and clips of 3e-4 / 4e-4.
    TRL importance_sampling_level (default token); veRL actor.policy_loss.loss_mode = gspo.
  - kl_estimator: Schulman, "Approximating KL divergence" (2020). veRL actor.kl_loss_type (default
    low_var_kl; there k3 and low_var_kl are one estimator, both capped at 10). TRL: k3 only.
  - entropy_coef: veRL actor.entropy_coeff (0), aggregated as here; TRL entropy_coef (0) takes a plain token
    mean whatever the loss_type.
  - tis_cap: truncated importance sampling (Yao et al. 2025, fengyao.notion.site/off-policy-rl). veRL
    algorithm.rollout_correction.rollout_is = token, rollout_is_threshold (off; 2.0); TRL
    vllm_importance_sampling_correction (on by default with vLLM, sequence_mask mode, C = 3).

GSPO's two forms agree: with A shared by a sequence's tokens, the gradient of sg[s] pi_t / sg[pi_t] summed
over the sequence equals that of s itself (TRL's form) under every loss_type; the per-token form also serves
per-token advantages.

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
SCALES = ("group", "batch", "none")
RATIO_LEVELS = ("token", "sequence")
KL_ESTIMATORS = ("k1", "k2", "k3", "low_var_kl")
LOG_RATIO_BOUND = 20.0  # veRL's clamp on every log-ratio: e^20 ~ 4.9e8 (e^89 overflows fp32)


def flat_groups(r):
    """(P, G) rewards -> (P,) bool: the groups whose rewards all agree. They carry no signal, and the advantage
    functions give them exactly 0 rather than what the rounding of a mean or a sum would invent."""
    return (r == r[:, :1]).all(1)


def group_advantages(rewards, group_size: int, scale="group", all_reduce=None, return_stats=False):
    """rewards (P*G,) prompt-major -> advantages (P*G,), and with return_stats also the group statistics
    {reward_std: mean over groups of each group's std, zero_adv_frac: share of groups whose rewards are all
    equal (no signal), groups: their count}. scale: group | batch | none (True / False = group / none, as TRL).
    all_reduce: optional callable returning a small tensor summed over ranks; given, the batch std and the
    statistics span every rank's rewards (one collective), so one process and torchrun compute the same."""
    if isinstance(scale, bool):
        scale = "group" if scale else "none"
    if scale not in SCALES:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALES)} (or true/false), got {scale!r}")
    if group_size < 2:
        raise ValueError(f"group_size must be >= 2 for group-relative advantages, got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.float().view(-1, group_size)  # (P, G)
    adv = r - r.mean(1, keepdim=True)
    group_std = r.std(1, keepdim=True) if len(r) else r[:, :1]  # (P, 1) unbiased (G - 1); P = 0: torch warns
    flat = flat_groups(r)[:, None]  # (P, 1)
    if scale == "group":
        adv = adv / (group_std + 1e-6)
    if scale == "batch" or return_stats:
        # Sums, not means, so that ranks holding different numbers of groups combine exactly; fp64 because
        # the variance below is sum(r^2) - sum(r)^2 / N, a difference of two large numbers for big batches.
        r64 = r.double()
        sums = torch.stack([r64.new_tensor(r.numel()), r64.sum(), (r64 * r64).sum(), r64.new_tensor(r.shape[0]),
                            group_std.double().sum(), flat.double().sum()])
        if all_reduce is not None:
            sums = all_reduce(sums)
        n, s1, s2, groups, std_sum, flat_sum = sums.tolist()
        if scale == "batch":
            batch_std = (max(s2 - s1 * s1 / n, 0.0) / (n - 1)) ** 0.5 if n > 1 else 0.0  # unbiased, all ranks
            adv = adv / (batch_std + 1e-6)
    adv = torch.where(flat, 0.0, adv).view(-1)
    if not return_stats:
        return adv
    # A rank may hold no group (every group dropped): it must still call this when all_reduce is given.
    g = max(groups, 1)
    return adv, {"reward_std": std_sum / g, "zero_adv_frac": flat_sum / g, "groups": int(groups)}


def overlong_penalty(lengths, max_len: int, buffer: int, penalty: float):
    """DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13; veRL's DAPO reward manager), added to the
    reward: 0 up to max_len - buffer tokens, then falling linearly to -penalty at max_len:

        R_len(L) = -penalty * clamp((L - (max_len - buffer)) / buffer, 0, 1)

    lengths (B,) completion lengths in tokens -> (B,) float penalties (<= 0). buffer 0 = off (all zeros).
    Unlike mask_truncated (no loss on cut completions), this scores long completions lower."""
    lengths = torch.as_tensor(lengths, dtype=torch.float32)
    if not 0 <= buffer <= max_len:
        raise ValueError(f"overlong_buffer must be in [0, max_completion_len = {max_len}], got {buffer}")
    if penalty < 0:
        raise ValueError(f"overlong_penalty must be >= 0 (it is subtracted from the reward), got {penalty}")
    if buffer == 0:
        return torch.zeros_like(lengths)
    return -penalty * ((lengths - (max_len - buffer)) / buffer).clamp(0.0, 1.0)


def policy_loss(logp, old_logp, advantages, mask, loss_type="grpo", clip_low=0.2, clip_high=0.2,
                ref_logp=None, beta=0.0, max_len=None, normalizer=None, *, entropy=None, entropy_coef=0.0,
                clip_ratio_c=None, ratio_level="token", kl_estimator="k3", sampler_logp=None, tis_cap=None):
    """logp, old_logp, ref_logp, sampler_logp, entropy, mask: (B, T); advantages: (B,) or (B, T).
    Returns (loss, stats); each keyword option is a row of the table above, off by default."""
    _check_args(logp, advantages, loss_type, ref_logp, beta, max_len, entropy, entropy_coef, clip_ratio_c,
                ratio_level, kl_estimator, sampler_logp, tis_cap)
    mask = mask.to(logp.dtype)
    valid = mask > 0
    A = advantages[:, None] if advantages.dim() == 1 else advantages  # (B, 1) shared by a row, or (B, T)
    log_ratio = torch.clamp(logp - old_logp, -LOG_RATIO_BOUND, LOG_RATIO_BOUND)  # (B, T)
    if ratio_level == "sequence":  # GSPO: the sequence's mean log-ratio as value, the token's own gradient
        seq = torch.where(valid, log_ratio, 0).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)
        log_ratio = seq.detach() + torch.where(valid, logp - logp.detach(), 0)  # (B, T), equal along a row
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    per_token = -torch.minimum(ratio * A, clipped * A)  # (B, T)
    if clip_ratio_c:  # dual-clip: for A < 0 the surrogate grows like rho |A| without bound; cap it at c |A|
        dual = (A < 0) & (per_token > -A * clip_ratio_c)
        per_token = torch.where(A < 0, torch.minimum(per_token, -A * clip_ratio_c), per_token)
    if tis_cap:  # truncated importance weight of trainer over sampler, a constant per token
        raw = torch.exp(torch.clamp(old_logp - sampler_logp, -LOG_RATIO_BOUND, LOG_RATIO_BOUND)).detach()
        w = raw.clamp(max=tis_cap)
        per_token = per_token * w
    if beta > 0:
        kl = _kl(logp, ref_logp, kl_estimator)  # (B, T)
        per_token = per_token + beta * kl
    if entropy_coef:  # a bonus: higher entropy lowers the loss
        per_token = per_token - entropy_coef * entropy
    loss = _aggregate(per_token, mask, loss_type, normalizer, max_len)

    with torch.no_grad():  # diagnostics over this batch's valid tokens
        n = mask.sum().clamp(min=1)

        def mean(x):
            return (torch.where(valid, x.to(mask.dtype), 0) * mask).sum() / n

        stats = {
            "clip_frac_low": mean((ratio < 1 - clip_low) & (A < 0)),
            "clip_frac_high": mean((ratio > 1 + clip_high) & (A > 0)),
            "ratio_mean": mean(ratio),
            "ratio_max": torch.where(valid, ratio, 0).max(),
        }
        if clip_ratio_c:
            stats["dual_clip_frac"] = mean(dual)
        if tis_cap:
            stats["tis_weight_mean"], stats["tis_capped_frac"] = mean(w), mean(raw > tis_cap)
        if beta > 0:
            stats["kl"] = mean(kl)
        if entropy is not None:
            stats["entropy"] = mean(entropy)
    return loss, stats


def _check_args(logp, advantages, loss_type, ref_logp, beta, max_len, entropy, entropy_coef, clip_ratio_c,
                ratio_level, kl_estimator, sampler_logp, tis_cap):
    """One clear ValueError per inconsistent argument of policy_loss."""
    for name, value, allowed in (("loss_type", loss_type, LOSS_TYPES), ("ratio_level", ratio_level, RATIO_LEVELS),
                                 ("kl_estimator", kl_estimator, KL_ESTIMATORS)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp")
    if loss_type == "dr_grpo" and not max_len:
        raise ValueError("loss_type 'dr_grpo' needs max_len (the generation budget)")
    if entropy_coef and entropy is None:
        raise ValueError("entropy_coef != 0 needs the per-token entropy")
    if clip_ratio_c and clip_ratio_c <= 1:
        raise ValueError(f"clip_ratio_c must be > 1 (dual-clip bound on the ratio; 0 = off), got {clip_ratio_c}")
    if tis_cap and (tis_cap < 0 or sampler_logp is None):
        raise ValueError(f"tis_cap must be > 0 (0 = off) and needs sampler_logp, got {tis_cap}")
    B, T = logp.shape
    if advantages.shape not in ((B,), (B, T)):
        raise ValueError(f"advantages must be (B,) = ({B},) or (B, T) = ({B}, {T}), got {tuple(advantages.shape)}")


def _kl(logp, ref_logp, estimator):
    """Per-token estimate of KL(pi || ref) from the sampled token alone, u = log ref - log pi (Schulman 2020)."""
    u = torch.clamp(ref_logp - logp, -LOG_RATIO_BOUND, LOG_RATIO_BOUND)  # (B, T)
    if estimator == "k1":
        return -u  # unbiased, but negative on some tokens: high variance
    if estimator == "k2":
        return 0.5 * u * u  # biased value, but on-policy its expected gradient is the true KL's
    k3 = torch.exp(u) - u - 1  # unbiased and >= 0
    return k3 if estimator == "k3" else torch.clamp(k3, max=10.0)  # low_var_kl: veRL bounds it at 10


def _aggregate(per_token, mask, loss_type, normalizer, max_len):
    """The loss_type table: per-token terms (B, T) -> one scalar. torch.where first, so that a non-finite value
    in padding cannot leak in through 0 * inf = nan."""
    x = torch.where(mask > 0, per_token, 0) * mask
    B = x.shape[0]
    if loss_type == "grpo":
        seq_mean = x.sum(1) / mask.sum(1).clamp(min=1)  # (B,)
        return seq_mean.sum() / (normalizer if normalizer is not None else B)
    if loss_type == "dapo":
        return x.sum() / (normalizer if normalizer is not None else mask.sum().clamp(min=1))
    return x.sum() / ((normalizer if normalizer is not None else B) * max_len)


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
    return torch.where(flat_groups(r)[:, None], 0.0, r - others).view(-1)


def token_rewards(rewards, mask, kl=None, beta=0.0):
    """rewards (B,): one per completion; mask (B, T); kl (B, T): a per-token KL estimate (kl_in_reward).
    Returns r (B, T): the reward on each row's last valid token, minus beta * kl on every valid token."""
    mask = mask.float()
    B, T = mask.shape
    has_token = mask.sum(1) > 0  # (B,) a row with no valid token gets no reward anywhere
    last = T - 1 - mask.flip(1).argmax(1)  # (B,) index of each row's last valid token
    r = torch.zeros(B, T, dtype=torch.float32, device=mask.device)
    r[torch.arange(B, device=mask.device), last] = torch.where(has_token, rewards.float().to(mask.device), 0.0)
    if beta > 0:
        if kl is None:
            raise ValueError("token_rewards: beta > 0 needs the per-token kl")
        r = r - beta * kl.float() * mask
    return r



def reinforce_pp_advantages(token_rewards, mask, all_reduce=None):
    """token_rewards, mask: (B, T) (from token_rewards, with the KL in it). Returns the
    advantages (B, T): the reward-to-go of each valid token, whitened over the valid tokens of all ranks
    (all_reduce: see whiten)."""
    mask = mask.float()
    r = token_rewards.float() * mask
    returns = r.flip(1).cumsum(1).flip(1) * mask  # (B, T) sum_{s >= t} r_s, gamma = 1
    return whiten(returns, mask, all_reduce)
