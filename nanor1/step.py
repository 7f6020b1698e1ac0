"""One RL step, in three phases that train.py calls in order:

    groups, generated, cursor = collect(run, policy, step, cursor)   P prompts x G completions, with rewards
    batch, sums = score(run, groups, policy, ref, critic)            advantages, old / reference log-probs
    opt_step = update(run, batch, learners, opt_step, lr_at, sums)   mu passes, an optimiser step per mini-batch

A rollout is a list of `Sample`s (one per completion); `pack` turns them into a `Batch` of padded (B, T)
tensors, which the later phases read and never mutate in place. Advantages are per token, so GRPO (one value
per completion, broadcast over its tokens) and a critic's GAE (one per token) feed the same policy loss.

The update runs over "learners": objects with `.loss(mb, norms, budget) -> (loss, sums, maxes)` (one
micro-batch's share of the mini-batch loss, and its statistics by name) and `.step(lr) -> (grad_norm, taken)`.
The policy is one (`PolicyLearner` below); PPO's critic is another (nanor1/ppo.py's `CriticLearner`, its own
optimiser, the same mini- and micro-batches), and SFT's learner (nanor1/sft.py) replaces the policy's: a new
algorithm is a module plus a line in train.py, not a branch in every phase.

Normalisers: a loss averaged per micro-batch would change the update whenever a step is split differently.
Each mini-batch's denominator (its sequences, or its tokens for `dapo`) is counted over the whole mini-batch
and all ranks before any forward; every micro-batch then contributes its share and gradients simply add.
FSDP averages gradients over ranks, but that denominator already spans them, so each rank's loss is
multiplied by the world size W first:

    grad = sum_r grad(W * loss_r) / W = grad(sum_r loss_r)     loss_r = rank r's sum / global normaliser

Rows whose gradient is exactly zero (every advantage 0, as in a GRPO group whose rewards all agree, and no KL or
entropy term in the loss) run forward only, for the statistics: the normalisers already count them, so the
update is the same, without their backward (`zero_gradient_rows`; one process only).
"""
import math
from dataclasses import dataclass, field, replace
from typing import Optional

import torch

from nanor1 import distributed
from nanor1.data import deal, mix_seed
from nanor1.grpo import (LOG_RATIO_BOUND, flat_groups, group_advantages, overlong_penalty, policy_loss,
                         reinforce_pp_advantages, rloo_advantages, token_rewards)
from nanor1.rollout import generate


@dataclass
class Sample:
    """One completion and what the step learns about it."""
    prompt: list  # prompt token ids
    completion: list  # sampled token ids (ending with EOS / the stop string when one was hit)
    sampler_logp: list  # the sampler's log-prob of each completion token
    truncated: bool  # cut by max_completion_len
    reward: float  # the task's reward
    text: str  # the decoded completion, as the reward read it


@dataclass
class Run:
    """What every step reads and no step changes: set up once by train.py."""
    cfg: object  # TrainConfig
    d: object  # distributed.Dist
    prec: object  # precision.Precision
    tok: object  # Tokenizer
    task: object  # Task
    rows: list  # the train split (each prompt fits the budget)
    prompts: list  # their prompt token ids
    stream: object  # data.PromptStream over rows
    verifier: object  # verifier.Verifier
    stop: object  # rollout.Stop: EOS ids and the task's stop strings
    eval_rows: list = field(default_factory=list)  # the held-out rows evaluated
    length_schedule: list = field(default_factory=list)  # [(step, completion budget)] (schedule.py)


# ----------------------------------------------------------------------------- collect

def collect(run: Run, policy, step: int, cursor: int, budget=None):
    """This rank's rollout batch: a list of groups (each G samples), the samples of every group generated (for
    the metrics), and the new cursor. With dynamic sampling (DAPO), groups whose rewards are all equal carry
    no signal and are dropped; new prompts are drawn until every rank holds P / ranks groups or the
    refill cap is reached (then the step goes on with what it has: the log says so in `refill_cap_hit`, and
    warns; veRL's DAPO recipe raises at its cap, max_num_gen_batches, but a long run had better train on fewer
    groups for a step than stop)."""
    cfg, d = run.cfg, run.d
    P_rank = cfg.prompts_per_step // d.world_size
    kept, generated = [], []
    for rnd in range(1 + (cfg.max_refill_rounds if cfg.dynamic_sampling else 0)):
        ids = [run.stream[cursor + i] for i in range(d.rank * P_rank, (d.rank + 1) * P_rank)]
        cursor += cfg.prompts_per_step  # every rank advances the same global cursor
        groups = rollout_groups(run, policy, ids, mix_seed(cfg.seed, step, rnd, d.rank), budget)
        generated += [s for g in groups for s in g]
        kept += [g for g in groups if not cfg.dynamic_sampling or len({s.reward for s in g}) > 1]
        full = torch.tensor(float(len(kept) >= P_rank))
        if not cfg.dynamic_sampling or distributed.all_reduce(full, d, "min").item() == 1:
            break
    # Every rank must run the same number of micro-batches (FSDP's collectives). When the counts differ, pool
    # the groups and deal them out evenly; the groups themselves travel between ranks only then.
    counts = {min(c, P_rank) for c in distributed.all_gather_objects(len(kept), d)}
    kept = kept[:counts.pop()] if len(counts) == 1 else deal(distributed.all_gather_objects(kept, d), d.rank,
                                                              P_rank)
    return kept, generated, cursor


def rollout_groups(run: Run, policy, row_ids, seed, budget=None):
    """G completions for each of the rows, scored by the task's reward in the verifier process."""
    cfg, G = run.cfg, run.cfg.group_size
    with distributed.gathered(policy), run.prec.autocast():
        res = generate(policy, [run.prompts[i] for i in row_ids], budget or cfg.max_completion_len, cfg.temperature,
                       cfg.top_k, cfg.top_p, n=G, seed=seed, stop=run.stop)
    texts = run.tok.decode_batch(res.tokens)
    rewards = run.verifier.score(texts, [run.rows[i] for i in row_ids for _ in range(G)],
                                 budget_s=cfg.reward_budget_s)  # per-completion timeout inside, a cap on the whole
    samples = [Sample(run.prompts[row_ids[k // G]], res.tokens[k], res.logprobs[k], res.truncated[k], rewards[k],
                      texts[k]) for k in range(len(texts))]
    return [samples[i:i + G] for i in range(0, len(samples), G)]


# ----------------------------------------------------------------------------- the batch

@dataclass
class Batch:
    """This rank's rollout batch as right-padded (B, T) tensors on the device, plus host-side lengths; row b is
    one completion. Column t of the targets is token t + 1 of the row, so a row's completion tokens are the
    targets at columns [prompt_len - 1, length - 1). Padding only follows real tokens, so causal attention
    keeps it away from them: no attention mask is needed."""
    ids: torch.Tensor  # (B, T) input ids
    targets: torch.Tensor  # (B, T) next-token ids
    completion: torch.Tensor  # (B, T) float: 1 on completion tokens
    mask: torch.Tensor  # (B, T) float: 1 on the completion tokens that count in the loss
    sampler_logp: torch.Tensor  # (B, T) the sampler's log-probs at the completion tokens
    prompt_lens: torch.Tensor  # (B,) host
    lengths: torch.Tensor  # (B,) host: prompt + completion tokens
    loss_tokens: torch.Tensor  # (B,) host: tokens of each row in the loss (0 for a masked row)
    rewards: torch.Tensor  # (B,) host
    prompt_keys: Optional[torch.Tensor] = None  # (B,) host: equal for rows of the same prompt (None: all differ)
    no_signal: Optional[torch.Tensor] = None  # (B,) host bool: every advantage exactly 0 (grpo, rloo; None: unknown)
    advantages: Optional[torch.Tensor] = None  # (B, T) per token, 0 off the mask
    old_logp: Optional[torch.Tensor] = None  # (B, T) the policy before this step's updates (None: = logp)
    ref_logp: Optional[torch.Tensor] = None  # (B, T) the frozen reference (KL term)
    extra: dict = field(default_factory=dict)  # an algorithm's own (B, T) tensors, e.g. a critic's values

    def __len__(self):
        return self.ids.shape[0]

    def positions(self):
        """(rows, cols) of the completion tokens, built from the host lengths (no wait for the device): the
        fused head scores only these."""
        n = self.lengths - self.prompt_lens  # (B,) completion tokens per row
        rows = torch.repeat_interleave(torch.arange(len(n)), n)
        first = torch.cumsum(n, 0) - n  # where each row starts in the flat list
        cols = (self.prompt_lens - 1).repeat_interleave(n) + torch.arange(int(n.sum())) - first.repeat_interleave(n)
        dev = self.ids.device
        return rows.to(dev, non_blocking=True), cols.to(dev, non_blocking=True)

    def shared_prefix(self):
        """The model's shared_prefix (lens, keys, ends): the rows of a prompt run its first prompt_len - 1
        tokens once (the last one predicts the first completion token, so it stays in each row's own part),
        and a row's padding (input columns from length - 1 on) is not run."""
        return None if self.prompt_keys is None else (self.prompt_lens - 1, self.prompt_keys, self.lengths - 1)

    def select(self, idx):
        """Rows `idx` (a host list) trimmed to their longest row: a mini- or micro-batch."""
        host = torch.tensor(idx, dtype=torch.long)
        dev = host.to(self.ids.device, non_blocking=True)  # a blocking copy would wait for the GPU's queue
        T = int(self.lengths[host].max()) - 1
        cut = lambda x: None if x is None else x[dev, :T]  # noqa: E731
        return replace(self, ids=cut(self.ids), targets=cut(self.targets), completion=cut(self.completion),
                       mask=cut(self.mask), sampler_logp=cut(self.sampler_logp), prompt_lens=self.prompt_lens[host],
                       lengths=self.lengths[host], loss_tokens=self.loss_tokens[host], rewards=self.rewards[host],
                       prompt_keys=None if self.prompt_keys is None else self.prompt_keys[host],
                       no_signal=None if self.no_signal is None else self.no_signal[host],
                       advantages=cut(self.advantages), old_logp=cut(self.old_logp), ref_logp=cut(self.ref_logp),
                       extra={k: cut(v) for k, v in self.extra.items()})


def pack(samples, device, mask_truncated=False) -> Batch:
    """Samples -> Batch. With mask_truncated (DAPO's overlong filter) a truncated completion gets no loss."""
    prompt_lens = torch.tensor([len(s.prompt) for s in samples])
    lengths = prompt_lens + torch.tensor([len(s.completion) for s in samples])
    weight = torch.tensor([0.0 if mask_truncated and s.truncated else 1.0 for s in samples])
    B, T = len(samples), int(lengths.max()) - 1 if samples else 0  # no sample: every group dropped this step
    ids = torch.zeros(B, T + 1, dtype=torch.long)
    completion, sampler = torch.zeros(B, T), torch.zeros(B, T)
    for i, s in enumerate(samples):
        p, c = len(s.prompt), len(s.completion)
        ids[i, :p + c] = torch.tensor(s.prompt + s.completion)
        completion[i, p - 1:p - 1 + c] = 1.0  # target t predicts token t + 1: completion tokens start at p - 1
        sampler[i, p - 1:p - 1 + c] = torch.tensor(s.sampler_logp)
    on = lambda x: x.to(device)  # noqa: E731
    seen = {}  # prompt -> key: a group's rows share one (and so would a prompt drawn twice)
    keys = torch.tensor([seen.setdefault(tuple(s.prompt), len(seen)) for s in samples])
    return Batch(ids=on(ids[:, :-1]), targets=on(ids[:, 1:]), completion=on(completion),
                 mask=on(completion * weight[:, None]), sampler_logp=on(sampler), prompt_lens=prompt_lens,
                 lengths=lengths, loss_tokens=(lengths - prompt_lens) * weight,
                 rewards=torch.tensor([s.reward for s in samples], dtype=torch.float32), prompt_keys=keys)


# ----------------------------------------------------------------------------- score

def score(run: Run, groups, policy, ref, critic=None, budget=None):
    """Advantages from the rewards, and the log-probs every later pass compares against, all taken before any
    update. Returns (batch, sums): sums holds what this pass measured (entropy and sampler mismatch when it
    ran the policy, the advantage statistics). `budget`: this step's completion budget (dr_grpo, overlong)."""
    cfg, sums = run.cfg, Sums()
    batch = pack([s for g in groups for s in g], run.d.device, cfg.mask_truncated)
    kl_in_reward = cfg.beta > 0 and (cfg.kl_in_reward or cfg.algo == "reinforce_pp")
    if not one_pass(cfg, len(batch), run.d.world_size) or kl_in_reward:
        batch.old_logp = logprobs(run, policy, batch, sums)
    if ref is not None:
        batch.ref_logp = logprobs(run, ref, batch)
    rewards = batch.rewards.clone()  # the task's rewards stay in batch.rewards (accuracy reads them)
    if cfg.overlong_buffer:  # DAPO's soft overlong punishment shapes the reward the advantage sees
        penalty = overlong_penalty(batch.lengths - batch.prompt_lens, budget or cfg.max_completion_len,
                                   cfg.overlong_buffer, cfg.overlong_penalty)
        rewards += penalty
        sums.add(overlong_penalty=-penalty.sum())
    kl = kl_tokens(batch, cfg.kl_estimator) if kl_in_reward else None
    if kl is not None:  # the KL the reward pays, per token of the sampling policy (the log's `kl`)
        sums.add(reward_kl=kl.sum(), reward_kl_tokens=batch.mask.sum())
    batch.advantages = advantages(run, batch, rewards.to(batch.mask.device), kl, critic, sums)
    if kl is None and cfg.algo in ("grpo", "rloo"):  # a group whose rewards all agree gets exactly 0 (grpo.py)
        flat = flat_groups(rewards.float().view(-1, cfg.group_size))  # the advantage functions' own test
        batch.no_signal = flat.repeat_interleave(cfg.group_size) | (batch.loss_tokens == 0)
    return batch, sums


def advantages(run: Run, batch: Batch, rewards, kl, critic, sums):
    """(B, T) per-token advantages of --algo (nanor1/grpo.py's table; ppo: nanor1/ppo.py)."""
    cfg, mask = run.cfg, batch.mask
    ranks = lambda t: distributed.all_reduce(t, run.d)  # noqa: E731  (statistics over every rank's batch)
    if cfg.algo == "ppo":
        return critic.advantages(run, batch, rewards, kl, sums)
    if cfg.algo == "reinforce_pp":
        return reinforce_pp_advantages(token_rewards(rewards, mask, kl, cfg.beta), mask, ranks)
    if kl is not None:  # grpo, rloo: a sequence's reward is the sum of its token rewards, as in veRL
        rewards = rewards - cfg.beta * kl.sum(1)
    if cfg.algo == "rloo":
        return rloo_advantages(rewards, cfg.group_size)[:, None] * mask
    adv = group_advantages(rewards, cfg.group_size, scale=cfg.scale_rewards, all_reduce=ranks)  # (B,) one each
    return adv[:, None] * mask  # (B, T) shared by its tokens


def kl_tokens(batch: Batch, estimator):
    """(B, T) per-token KL of the sampling policy from the reference, for a KL that goes into the reward."""
    d = torch.clamp(batch.ref_logp - batch.old_logp, -LOG_RATIO_BOUND, LOG_RATIO_BOUND) * batch.mask
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d * d
    k3 = torch.exp(d) - d - 1
    return k3.clamp(max=10.0) if estimator == "low_var_kl" else k3


def one_pass(cfg, n_rows, world_size):
    """One optimiser step on fresh samples: the old policy is the current one (ratio 1), so its log-probs are
    the update's own, detached, and no extra forward is needed."""
    return cfg.mu == 1 and n_mini(cfg, n_rows, world_size) == 1


@torch.no_grad()
def logprobs(run: Run, model, batch: Batch, sums=None):
    """(B, T) log-probs of the completion tokens under `model`, micro-batch by micro-batch. With `sums`, also
    the entropy and sampler mismatch of the model (the policy that sampled)."""
    out = torch.zeros_like(batch.mask)
    for idx in micro_batches(batch, range(len(batch)), run.cfg, run.d):
        mb = batch.select(idx)
        with run.prec.autocast():
            logp, entropy = model(mb.ids, targets=mb.targets, temperature=run.cfg.temperature,
                                  positions=mb.positions(), shared_prefix=mb.shared_prefix())
        if sums is not None:
            sums.add(**policy_stats(logp, entropy, mb))
        out[torch.tensor(idx).to(out.device, non_blocking=True), :logp.shape[1]] = logp  # no wait for the GPU
    return out


def policy_stats(logp, entropy, mb: Batch):
    """Sums over the completion tokens of the policy that sampled them: entropy, and |trainer - sampler| log-
    prob (logprob_mismatch: the same weights and head on both sides, so only rounding: ~4e-7 in fp32, ~1e-3
    nats in bf16, nanor1/rollout.py)."""
    c = mb.completion
    return dict(entropy=(entropy.detach() * c).sum(), mismatch=((logp.detach() - mb.sampler_logp).abs() * c).sum(),
                tokens_sampled=c.sum())


# ----------------------------------------------------------------------------- update

def n_mini(cfg, n_rows_rank, world_size):
    """Optimiser steps per pass: the batch actually kept (every rank holds the same count) split into mini-
    batches of --mini_batch_size sequences over all ranks, as veRL splits it; at least one, none empty."""
    if not cfg.mini_batch_size:
        return 1
    return max(1, min(n_rows_rank, math.ceil(n_rows_rank * world_size / cfg.mini_batch_size)))


def micro_batches(batch: Batch, rows, cfg, d=None):
    """Split `rows` into micro-batches of at most --micro_batch_size rows and, with --micro_batch_tokens, at
    most that many padded tokens (rows x the longest row). With a token budget, prompts are taken longest
    first (by their longest row) and each prompt's rows together, longest first: rows of a size share a
    micro-batch, so little is padding, and a prompt's rows share a micro-batch, where its tokens run once
    (model.SharedPrefix). The normalisers are step-wide, so the split never changes the update, only memory
    and speed. With `d` (several ranks), every rank gets as many micro-batches as the rank with the most
    (same_count)."""
    rows = list(rows)
    if cfg.micro_batch_tokens:
        length = batch.lengths.tolist()
        key = batch.prompt_keys.tolist() if batch.prompt_keys is not None else list(range(len(batch)))
        top = {}  # prompt key -> its longest row
        for r in rows:
            top[key[r]] = max(top.get(key[r], 0), length[r])
        rows.sort(key=lambda r: (-top[key[r]], key[r], -length[r]))
    out, cur, longest = [], [], 0
    for r in rows:
        n = int(batch.lengths[r]) - 1
        too_many = len(cur) == cfg.micro_batch_size
        too_long = cfg.micro_batch_tokens and (len(cur) + 1) * max(longest, n) > cfg.micro_batch_tokens
        if cur and (too_many or too_long):
            out.append(cur)
            cur, longest = [], 0
        cur.append(r)
        longest = max(longest, n)
    out += [cur] if cur else []
    return same_count(out, d) if d is not None and d.enabled else out


def same_count(mbs, d):
    """Under FSDP each forward gathers the weights in a collective, so every rank must run as many micro-batches
    as the others: a token budget over ragged rows gives one rank 3 and another 2, and the first would wait
    forever. A rank with fewer halves its micro-batch of most rows until the counts agree (every rank holds
    as many rows, so it always can); the rows, hence the update, are the same."""
    most = int(distributed.all_reduce(torch.tensor([len(mbs)]), d, "max").item())
    while len(mbs) < most:
        i = max(range(len(mbs)), key=lambda j: len(mbs[j]))
        if len(mbs[i]) < 2:
            raise RuntimeError(f"rank {d.rank}: {len(mbs)} micro-batches of one row cannot become {most}: the ranks "
                               "hold different numbers of rows")
        half = len(mbs[i]) // 2
        mbs[i:i + 1] = [mbs[i][:half], mbs[i][half:]]
    return mbs


class Sums:
    """Named statistics of this rank (floats or device tensors): running sums, and maxima. `reduce` combines
    every rank's by name in one collective (an all-gather of one vector), with one device-to-host copy:
    nothing inside the update waits for the GPU to report a number."""

    def __init__(self):
        self.sums, self.maxes = {}, {}

    def add(self, **named):
        for k, v in named.items():
            self.sums[k] = self.sums.get(k, 0.0) + (v.detach().double() if torch.is_tensor(v) else float(v))

    def max(self, **named):
        for k, v in named.items():
            v = v.detach().double() if torch.is_tensor(v) else float(v)
            self.maxes[k] = v if k not in self.maxes else torch.maximum(torch.as_tensor(self.maxes[k]),
                                                                       torch.as_tensor(v))

    def reduce(self, d) -> dict:
        keys = sorted(self.sums), sorted(self.maxes)  # every rank adds the same names, so the order agrees
        vals = [self.sums[k] for k in keys[0]] + [self.maxes[k] for k in keys[1]]
        if not vals:
            return {}
        dev = next((v.device for v in vals if torch.is_tensor(v)), torch.device("cpu"))
        flat = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=dev).reshape(()) for v in vals]).cpu()
        every = distributed.all_gather(flat, d)  # (W, K)
        n = len(keys[0])
        return {**dict(zip(keys[0], every[:, :n].sum(0).tolist())), **dict(zip(keys[1], every[:, n:].amax(0).tolist()))}


class PolicyLearner:
    """The policy: the clipped surrogate of nanor1/grpo.py (plus the KL and entropy terms) on its fused log-probs,
    AdamW on fp32 masters."""
    prefix = ""  # metric names: the policy's are plain (grad_norm), the critic's read critic_grad_norm
    counts_steps = True  # its optimiser steps are the run's opt_step (the lr schedule's clock)

    def __init__(self, model, opt, run: Run):
        self.model, self.opt, self.run = model, opt, run

    def loss(self, mb: Batch, norms, budget):
        cfg = self.run.cfg
        with self.run.prec.autocast():  # (b, T) each, 0 off the completion tokens; a prompt runs once for its rows
            logp, entropy = self.model(mb.ids, targets=mb.targets, temperature=cfg.temperature,
                                       positions=mb.positions(), shared_prefix=mb.shared_prefix())
        old = mb.old_logp if mb.old_logp is not None else logp.detach()
        sums = policy_stats(logp, entropy, mb) if mb.old_logp is None else {}  # this forward is the sampler's
        loss, st = policy_loss(
            logp, old, mb.advantages, mb.mask, cfg.loss_type, cfg.clip_low, cfg.clip_high, mb.ref_logp,
            cfg.beta if kl_in_loss(cfg) else 0.0, max_len=budget, normalizer=norms[cfg.loss_type == "dapo"],
            entropy=entropy if cfg.entropy_coef else None, entropy_coef=cfg.entropy_coef,
            clip_ratio_c=cfg.clip_ratio_c or None, ratio_level=cfg.ratio_level, kl_estimator=cfg.kl_estimator,
            sampler_logp=mb.sampler_logp if cfg.tis_cap else None, tis_cap=cfg.tis_cap or None)
        n = mb.mask.sum()
        sums.update(loss=loss.detach(), tokens=n, **{k: st[k] * n for k in TOKEN_STATS if k in st})
        return loss, sums, {"ratio_max": st["ratio_max"]}

    def step(self, lr):
        return optimiser_step(self.model, self.opt, lr, self.run.cfg.grad_clip)


def kl_in_loss(cfg):
    """Whether the policy loss carries beta x KL (else it is off, or in the reward / the advantages)."""
    return cfg.beta > 0 and not (cfg.kl_in_reward or cfg.algo == "reinforce_pp")


def zero_gradient_rows(run: Run, batch: Batch, learners):
    """The rows whose gradient is exactly zero: every advantage 0 (a GRPO group whose rewards all agree: a fifth
    of the demo's rows; `no_signal`, known on the host, so no wait for a GPU) and no other term in the loss (no
    KL in it, no entropy bonus). The update runs them forward only, for the statistics; their backward, two
    thirds of their cost, would add zeros. Not with LoRA dropout (it acts only when a gradient is computed, so
    the statistics would change), and in one process only: ranks must run the same collectives in the same
    order, forward and backward alike. One difference: a non-finite value in such a row's forward no longer
    makes the step's gradient NaN (which skips the step); it reaches only the statistics."""
    cfg = run.cfg
    if run.d.enabled or batch.no_signal is None or cfg.entropy_coef or kl_in_loss(cfg) or cfg.lora_dropout or \
            not all(isinstance(learner, PolicyLearner) for learner in learners):
        return set()
    return set(torch.nonzero(batch.no_signal).flatten().tolist())


# policy_loss statistics that are means over a micro-batch's loss tokens: summed token-weighted over the step
TOKEN_STATS = ("clip_frac_low", "clip_frac_high", "ratio_mean", "kl", "dual_clip_frac", "tis_weight_mean",
               "tis_capped_frac")


def optimiser_step(model, opt, lr, grad_clip):
    """Clip by the global norm (over all shards under FSDP) and step. A non-finite norm (an inf or NaN
    gradient) skips the step instead, as veRL does: the gradients are dropped and the weights stay. Returns
    (the norm, whether the step was taken)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float("inf"))
    if hasattr(norm, "full_tensor"):  # a DTensor under FSDP: the norm over all shards
        norm = norm.full_tensor()
    finite = bool(torch.isfinite(norm))  # the one host sync per optimiser step
    if finite:
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
    opt.zero_grad(set_to_none=True)
    return norm.detach(), finite


def update(run: Run, batch: Batch, learners, opt_step: int, lr_at, sums, budget=None):
    """mu passes over the batch, one optimiser step per mini-batch for every learner; statistics go into `sums`
    (this rank's). Returns the new optimiser step count. `lr_at(opt_step)` gives the policy's learning rate."""
    cfg, d = run.cfg, run.d
    if not len(batch):  # nothing kept on any rank (all ranks hold equal counts): no step at all
        return opt_step
    k = n_mini(cfg, len(batch), d.world_size)
    minis = [list(range(i, len(batch), k)) for i in range(k)]  # strided: each mini-batch takes whole groups' worth
    norms = normalisers(run, batch, minis)  # over every row: leaving zero-gradient rows out changes no share
    zero = zero_gradient_rows(run, batch, learners)
    for _ in range(cfg.mu):
        for mini, norm in zip(minis, norms):
            keep, skip = [r for r in mini if r not in zero], [r for r in mini if r in zero]
            if not keep:  # a mini-batch of zero gradients still steps (momentum moves the weights): all backward
                keep, skip = mini, []
            plan = [(idx, True) for idx in micro_batches(batch, keep, cfg, d)] + \
                [(idx, False) for idx in micro_batches(batch, skip, cfg)]
            for idx, backward in plan:
                mb = batch.select(idx)
                with torch.set_grad_enabled(backward):
                    for learner in learners:
                        loss, stats, maxes = learner.loss(mb, norm, budget or cfg.max_completion_len)
                        if backward:
                            (loss * d.world_size).backward()  # undoes FSDP's mean over ranks (module docstring)
                        sums.add(**stats)
                        sums.max(**maxes)
            for learner in learners:
                gnorm, ok = learner.step(lr_at(opt_step))
                p = learner.prefix
                sums.add(**{p + "grad_norm": gnorm if ok else 0.0, p + "skipped_steps": not ok, p + "opt_steps": 1.0})
            opt_step += any(learner.counts_steps for learner in learners)
    return opt_step


def normalisers(run: Run, batch: Batch, minis):
    """Each mini-batch's loss denominators over all ranks: (sequences, loss tokens). grpo and dr_grpo divide by
    the first, dapo and the critic's value loss by the second. One collective for all, from host-side counts."""
    local = [[float(len(m)), float(batch.loss_tokens[m].sum())] for m in minis]
    total = distributed.all_reduce(torch.tensor(local, dtype=torch.float64), run.d).clamp(min=1)
    return total.tolist()  # [(sequences, tokens)] per mini-batch
