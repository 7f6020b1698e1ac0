"""One RL step, in three phases that train.py calls in order:

    groups, seen, cursor = collect(run, policy, step, c)   rollouts: P prompts x G completions, with rewards
    batch, sums = score(run, samples, policy, ref)        advantages, and old / reference log-probs
    opt_step = update(run, batch, learners, ...)          mu passes, one optimiser step per mini-batch

A rollout is a list of `Sample`s (one per completion); `pack` turns them into a `Batch` of padded (B, T)
tensors, which the later phases read and never mutate in place. Advantages are per token, so GRPO (one value
per completion, broadcast over its tokens) and a critic's GAE (one per token) feed the same policy loss.

The update runs over "learners": objects with `.loss(batch, norm) -> (loss, stats)` and `.step(...)`. The
policy is one (`PolicyLearner` below); a critic would be another, with its own optimiser, trained on the same
mini- and micro-batches: a new algorithm is a module plus a line in train.py, not a branch in every phase.

Normalisers: a loss averaged per micro-batch would change the update whenever a step is split differently.
Each mini-batch's denominator (its sequences, or its tokens for `dapo`) is counted over the whole mini-batch
and all ranks before any forward; every micro-batch then contributes its share and gradients simply add.
FSDP averages gradients over ranks, but that denominator already spans them, so each rank's loss is
multiplied by the world size W first:

    grad = sum_r grad(W * loss_r) / W = grad(sum_r loss_r)     loss_r = rank r's sum / global normaliser
"""
import math
from dataclasses import dataclass, field, replace
from typing import Optional

import torch

from nanor1 import distributed
from nanor1.data import deal, mix_seed
from nanor1.grpo import group_advantages, policy_loss
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


# ----------------------------------------------------------------------------- collect

def collect(run: Run, policy, step: int, cursor: int):
    """This rank's rollout batch: a list of groups (each G samples), the samples of every group generated (for
    the metrics), and the new cursor. With dynamic sampling (DAPO), groups whose rewards are all equal carry
    no signal and are dropped; new prompts are drawn until every rank holds P / ranks groups or the
    refill cap is reached (then the step goes on with what it has: the log says so in `refill_cap_hit`)."""
    cfg, d = run.cfg, run.d
    P_rank = cfg.prompts_per_step // d.world_size
    kept, generated = [], []
    for rnd in range(1 + (cfg.max_refill_rounds if cfg.dynamic_sampling else 0)):
        ids = [run.stream[cursor + i] for i in range(d.rank * P_rank, (d.rank + 1) * P_rank)]
        cursor += cfg.prompts_per_step  # every rank advances the same global cursor
        groups = rollout_groups(run, policy, ids, seed=mix_seed(cfg.seed, step, rnd, d.rank))
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


def rollout_groups(run: Run, policy, row_ids, seed):
    """G completions for each of the rows, scored by the task's reward in the verifier process."""
    cfg, G = run.cfg, run.cfg.group_size
    with distributed.gathered(policy), run.prec.autocast():
        res = generate(policy, [run.prompts[i] for i in row_ids], cfg.max_completion_len, cfg.temperature,
                       cfg.top_k, cfg.top_p, n=G, seed=seed, stop=run.stop)
    texts = run.tok.decode_batch(res.tokens)
    rewards = run.verifier.score(texts, [run.rows[i] for i in row_ids for _ in range(G)])
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

    def select(self, idx):
        """Rows `idx` (a host list) trimmed to their longest row: a mini- or micro-batch."""
        host = torch.tensor(idx, dtype=torch.long)
        dev = host.to(self.ids.device)
        T = int(self.lengths[host].max()) - 1
        cut = lambda x: None if x is None else x[dev, :T]  # noqa: E731
        return replace(self, ids=cut(self.ids), targets=cut(self.targets), completion=cut(self.completion),
                       mask=cut(self.mask), sampler_logp=cut(self.sampler_logp), prompt_lens=self.prompt_lens[host],
                       lengths=self.lengths[host], loss_tokens=self.loss_tokens[host], rewards=self.rewards[host],
                       advantages=cut(self.advantages), old_logp=cut(self.old_logp), ref_logp=cut(self.ref_logp),
                       extra={k: cut(v) for k, v in self.extra.items()})


def pack(samples, device, mask_truncated=False) -> Batch:
    """Samples -> Batch. With mask_truncated (DAPO's overlong filter) a truncated completion gets no loss."""
    prompt_lens = torch.tensor([len(s.prompt) for s in samples])
    lengths = prompt_lens + torch.tensor([len(s.completion) for s in samples])
    weight = torch.tensor([0.0 if mask_truncated and s.truncated else 1.0 for s in samples])
    B, T = len(samples), int(lengths.max()) - 1
    ids = torch.zeros(B, T + 1, dtype=torch.long)
    completion, sampler = torch.zeros(B, T), torch.zeros(B, T)
    for i, s in enumerate(samples):
        p, c = len(s.prompt), len(s.completion)
        ids[i, :p + c] = torch.tensor(s.prompt + s.completion)
        completion[i, p - 1:p - 1 + c] = 1.0  # target t predicts token t + 1: completion tokens start at p - 1
        sampler[i, p - 1:p - 1 + c] = torch.tensor(s.sampler_logp)
    on = lambda x: x.to(device)  # noqa: E731
    return Batch(ids=on(ids[:, :-1]), targets=on(ids[:, 1:]), completion=on(completion),
                 mask=on(completion * weight[:, None]), sampler_logp=on(sampler), prompt_lens=prompt_lens,
                 lengths=lengths, loss_tokens=(lengths - prompt_lens) * weight,
                 rewards=torch.tensor([s.reward for s in samples]))


# ----------------------------------------------------------------------------- score

def score(run: Run, groups, policy, ref):
    """Advantages from the rewards, and the log-probs every later pass compares against, taken before any
    update. Returns (batch, sums): the policy's entropy and sampler mismatch when this pass measured them."""
    cfg, sums = run.cfg, Sums()
    batch = pack([s for g in groups for s in g], run.d.device, cfg.mask_truncated)
    if not len(batch.rewards):
        return batch, sums
    adv = group_advantages(batch.rewards, cfg.group_size, scale=cfg.scale_rewards)  # (B,) one per completion
    batch.advantages = adv.to(batch.mask.device)[:, None] * batch.mask  # (B, T) shared by its tokens
    if not one_pass(cfg, len(batch), run.d.world_size):
        batch.old_logp = logprobs(run, policy, batch, sums)
    if ref is not None:
        batch.ref_logp = logprobs(run, ref, batch)
    return batch, sums


def one_pass(cfg, n_rows, world_size):
    """One optimiser step on fresh samples: the old policy is the current one (ratio 1), so its log-probs are
    the update's own, detached, and no extra forward is needed."""
    return cfg.mu == 1 and n_mini(cfg, n_rows, world_size) == 1


@torch.no_grad()
def logprobs(run: Run, model, batch: Batch, sums=None):
    """(B, T) log-probs of the completion tokens under `model`, micro-batch by micro-batch. With `sums`, also
    the entropy and sampler mismatch of the model (the policy that sampled)."""
    out = torch.zeros_like(batch.mask)
    for idx in micro_batches(range(len(batch)), run.cfg.micro_batch_size):
        mb = batch.select(idx)
        with run.prec.autocast():
            logp, entropy = model(mb.ids, targets=mb.targets, temperature=run.cfg.temperature,
                                  positions=mb.positions())
        if sums is not None:
            sums.add(**policy_stats(logp, entropy, mb))
        out[torch.tensor(idx, device=out.device), :logp.shape[1]] = logp
    return out


def policy_stats(logp, entropy, mb: Batch):
    """Sums over the completion tokens of the policy that sampled them: entropy, and |trainer - sampler| log-
    prob (logprob_mismatch: ~0 when the trainer scores the distribution the sampler drew from)."""
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


def micro_batches(rows, size):
    rows = list(rows)
    return [rows[i:i + size] for i in range(0, len(rows), size)]


class Sums:
    """Named running sums (floats or device tensors), reduced over ranks by name in one collective, with one
    device-to-host copy: nothing inside the update waits for the GPU to report a number."""

    def __init__(self):
        self.values = {}

    def add(self, **named):
        for k, v in named.items():
            self.values[k] = self.values.get(k, 0.0) + (v.detach().double() if torch.is_tensor(v) else float(v))

    def reduce(self, d) -> dict:
        keys = sorted(self.values)  # every rank adds the same names, so the order agrees
        if not keys:
            return {}
        vals = [self.values[k] for k in keys]
        dev = next((v.device for v in vals if torch.is_tensor(v)), torch.device("cpu"))
        flat = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=dev).reshape(()) for v in vals]).cpu()
        return dict(zip(keys, distributed.all_reduce(flat, d).tolist()))


class PolicyLearner:
    """The policy: the clipped surrogate of nanor1/grpo.py (plus KL) on its fused log-probs, AdamW on fp32 masters."""

    def __init__(self, model, opt, run: Run):
        self.model, self.opt, self.run = model, opt, run

    prefix = ""  # metric names: the policy's are plain (grad_norm), a critic's would read critic_grad_norm

    def loss(self, mb: Batch, norm):
        cfg = self.run.cfg
        with self.run.prec.autocast():
            logp, entropy = self.model(mb.ids, targets=mb.targets, temperature=cfg.temperature,
                                       positions=mb.positions())  # (b, T) each, 0 off the completion tokens
        old = mb.old_logp if mb.old_logp is not None else logp.detach()
        sums = policy_stats(logp, entropy, mb) if mb.old_logp is None else {}  # this forward is the sampler's
        loss, st = policy_loss(logp, old, mb.advantages, mb.mask, cfg.loss_type, cfg.clip_low, cfg.clip_high,
                               mb.ref_logp, cfg.beta, max_len=cfg.max_completion_len, normalizer=norm)
        n = mb.mask.sum()
        sums.update(loss=loss.detach(), tokens=n, clip_frac=(st["clip_frac_low"] + st["clip_frac_high"]) * n)
        if cfg.beta > 0:
            sums["kl"] = st["kl"] * n
        return loss, sums

    def step(self, lr):
        return optimiser_step(self.model, self.opt, lr, self.run.cfg.grad_clip)


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


def update(run: Run, batch: Batch, learners, opt_step: int, lr_at, sums):
    """mu passes over the batch, one optimiser step per mini-batch for every learner; statistics go into `sums`
    (this rank's). Returns the new optimiser step count. `lr_at(opt_step)` gives the learning rate."""
    cfg, d = run.cfg, run.d
    if not len(batch):  # nothing kept on any rank (all ranks hold equal counts): no step at all
        return opt_step
    k = n_mini(cfg, len(batch), d.world_size)
    minis = [list(range(i, len(batch), k)) for i in range(k)]  # strided: each mini-batch takes whole groups' worth
    norms = normalisers(run, batch, minis)
    for _ in range(cfg.mu):
        for mini, norm in zip(minis, norms):
            for idx in micro_batches(mini, cfg.micro_batch_size):
                mb = batch.select(idx)
                for learner in learners:
                    loss, stats = learner.loss(mb, norm)
                    (loss * d.world_size).backward()  # undoes FSDP's mean over ranks (module docstring)
                    sums.add(**stats)
            for learner in learners:
                gnorm, ok = learner.step(lr_at(opt_step))
                p = learner.prefix
                sums.add(**{p + "grad_norm": gnorm, p + "skipped_steps": not ok, p + "opt_steps": 1.0})
            opt_step += 1
    return opt_step


def normalisers(run: Run, batch: Batch, minis):
    """Each mini-batch's loss denominator over all ranks: sequences (grpo, dr_grpo) or loss tokens (dapo).
    One collective for all of them, from host-side counts."""
    if run.cfg.loss_type == "dapo":
        local = [float(batch.loss_tokens[m].sum()) for m in minis]
    else:
        local = [float(len(m)) for m in minis]
    return distributed.all_reduce(torch.tensor(local, dtype=torch.float64), run.d).clamp(min=1).tolist()
