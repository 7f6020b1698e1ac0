r"""PPO with a learned critic: the algorithm of Open-Reasoner-Zero, SimpleRL-Zero and TinyZero (veRL), beside GRPO.

GRPO's baseline is the mean reward of the prompt's group; PPO learns one instead: a critic V, a copy of the
transformer whose LM head is replaced by a value head Linear(C, 1), predicts at every completion token the
reward still to come. One completion of L tokens is one episode; state t is the prompt plus tokens < t, and
V_t is read from the final hidden state at the position that predicts token t (where log pi(token t) is read).

Token rewards: the task's reward R on the last token, and with kl_in_reward a KL penalty on every token
(veRL's use_kl_in_reward; otherwise the KL stays in the policy loss, as in GRPO):

    r_t = R [t = L-1]  -  beta KL_t

GAE (Schulman et al. 2016, "High-dimensional continuous control using generalized advantage estimation"),
with V_L = 0 (nothing follows the last token):

    delta_t = r_t + gamma V_{t+1} - V_t
    A_t     = delta_t + gamma lam A_{t+1}  =  sum_k (gamma lam)^k delta_{t+k}
    R_t     = A_t + V_t                      (the returns: the critic's regression target, the lambda-return)

At gamma = lam = 1 the sum telescopes: A_t = sum_{s >= t} r_s - V_t, the reward to go minus the value (without
KL: the final reward minus the value). The advantages are then whitened over the step's valid tokens, on all
ranks (mean and unbiased variance, as veRL's masked_whiten; nanor1.grpo.whiten, which REINFORCE++ shares):

    A_t <- (A_t - mean(A)) / sqrt(var(A) + 1e-8)

and go into grpo.policy_loss as per-token advantages. Whitening removes any constant: a critic that predicts
the same value c everywhere (the fresh zero head, or one that has learnt only the mean reward) gives
A_t = R - c before whitening and exactly REINFORCE++'s whitened returns after it (without KL: the whitened final
reward). Only what the critic predicts *differently* for different prefixes changes the update; the explained
variance below measures that part. The critic regresses on R_t with a clipped loss (veRL
compute_value_loss, after TRL and OpenAI baselines' PPO2): the new value may not move further than value_clip
from the value that produced the returns without paying for it,

    V_clip = V_old + clip(V - V_old, -value_clip, value_clip)
    l_t    = 0.5 max((V - R_t)^2, (V_clip - R_t)^2)

averaged over the step's valid tokens (a token mean: every token's error weighs the same). How well the critic
predicts is the explained variance over the step, 1 - Var(R - V) / Var(R): 1 is perfect, 0 no better than a
constant, below 0 worse than one.

The defaults and where they come from (facts read from each project's files):

    | setting       | nanoR1 | veRL                          | Open-Reasoner-Zero            | TinyZero (veRL fork)  |
    |---------------|--------|-------------------------------|-------------------------------|-----------------------|
    | gamma, lam    | 1, 1   | algorithm.gamma 1.0, lam 1.0  | gamma 1, lambd 1              | gamma 1.0, lam 1.0    |
    | value_clip    | 0.5    | critic.cliprange_value 0.5    | value_clip 0.2                | cliprange_value 0.5   |
    | critic_lr     | 1e-5   | critic.optim.lr 1e-5          | critic_learning_rate 5e-6     | critic.optim.lr=1e-5  |
    | critic_warmup | 0      | trainer.critic_warmup 0       | freezing_actor_steps -1 (off) | critic_warmup 0       |
    | KL in reward  | off    | use_kl_in_reward False        | init_kl_coef 0 (no KL at all) | kl_coef=0.001, k1     |

veRL: verl/trainer/config/ppo_trainer.yaml, critic/critic.yaml. ORZ: config.py (CommonPPOConfig, used by its
playground scripts; orz/exps/examples/ppo/ppo_base_exp.py has critic_learning_rate 9e-6). TinyZero:
scripts/train_tiny_zero.sh (critic.optim.lr=1e-5, algorithm.kl_ctrl.kl_coef=0.001, the coefficient of its
in-reward KL, apply_kl_penalty with the k1 estimator) and verl/trainer/config/ppo_trainer.yaml.
On the CPU demo these defaults learn as fast as GRPO (0.185 -> 0.83 held-out at step 20); --critic_lr 1e-3 or a
10-step --critic_warmup raise the explained variance only to 0.04-0.10 and change nothing but the warm-up's delay
(BENCHMARKS.md, "GRPO vs PPO and the others on the demo").

The critic is saved in the Hugging Face layout of a token-classification model with one label (the backbone's
`model.*` weights plus the head as `score.weight`, `score.bias`), so `transformers`'
AutoModelForTokenClassification loads it as it is, as veRL's critic is built.

Shapes: (B, T) tensors are the trainer's packed rows; `mask` is 1 on completion tokens (any prompt positions
before them and padding after them are 0). B batch, T time, C model dim, V vocab.
"""
import json
from pathlib import Path

import torch
import torch.nn as nn

from nanor1.distributed import all_reduce
from nanor1.grpo import token_rewards, whiten
from nanor1.model import Transformer
from nanor1.step import micro_batches, optimiser_step
from nanor1.weights import assign_weights, check_names, load_config, weight_files


@torch.no_grad()
def gae(rewards, values, mask, gamma=1.0, lam=1.0):
    """rewards, values, mask: (B, T). Returns (advantages, returns), each (B, T), 0 outside the mask.

    One reverse pass over T, vectorised over B. A position outside the mask is skipped: it carries the next
    valid position's value and accumulated advantage through unchanged, so prompt positions before a
    completion and padding after it change nothing, and the value after a row's last token is 0."""
    if not (0 <= gamma <= 1 and 0 <= lam <= 1):
        raise ValueError(f"gae: gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}")
    mask = mask.float()
    rewards, values = rewards.float() * mask, values.float() * mask  # values outside the mask count as 0
    B, T = mask.shape
    next_value = torch.zeros(B, device=mask.device)  # V_{t+1}: 0 after the last token
    running = torch.zeros(B, device=mask.device)  # A_{t+1}
    adv = torch.zeros(B, T, device=mask.device)
    for t in reversed(range(T)):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = delta + gamma * lam * running
        adv[:, t] = a * m
        running = torch.where(m > 0, a, running)  # skipped positions leave the recursion as it was
        next_value = torch.where(m > 0, values[:, t], next_value)
    return adv, adv + values


def value_loss(values, old_values, returns, mask, clip, normalizer=None):
    """values (B, T): the critic's output now (with grad); old_values, returns, mask (B, T). Returns (loss, stats).

    normalizer: the step-wide number of valid tokens (all micro-batches, all ranks), as grpo.policy_loss takes
    its normaliser, so splitting a step into micro-batches or ranks does not change the update. None: this
    batch's own count. stats: value_clip_frac, values_mean, returns_mean over this batch's valid tokens."""
    if clip <= 0:
        raise ValueError(f"value_loss: value_clip must be > 0, got {clip}")
    mask = mask.to(values.dtype)
    clipped = old_values + torch.clamp(values - old_values, -clip, clip)  # (B, T)
    unclipped_sq = (values - returns) ** 2
    clipped_sq = (clipped - returns) ** 2
    per_token = 0.5 * torch.maximum(unclipped_sq, clipped_sq)  # (B, T)
    denom = normalizer if normalizer is not None else mask.sum().clamp(min=1)
    loss = (per_token * mask).sum() / denom
    with torch.no_grad():
        n = mask.sum().clamp(min=1)
        stats = {"value_clip_frac": ((clipped_sq > unclipped_sq).to(mask.dtype) * mask).sum() / n,
                 "values_mean": (values * mask).sum() / n,
                 "returns_mean": (returns * mask).sum() / n}
    return loss, stats


@torch.no_grad()
def explained_variance(values, returns, mask, all_reduce=None):
    """1 - Var(R - V) / Var(R) over the step's valid tokens on all ranks (veRL's vf_explained_var, with its 1e-5
    in the denominator). values: the ones the returns were computed with (the score phase's)."""
    mask = mask.double()
    v, r = values.double() * mask, returns.double() * mask
    e = r - v
    stats = torch.stack([mask.sum(), r.sum(), (r * r).sum(), e.sum(), (e * e).sum()])
    if all_reduce is not None:
        stats = all_reduce(stats)
    n, sr, srr, se, see = stats.tolist()
    if n < 2:
        return float("nan")
    var_r = (srr - sr * sr / n) / (n - 1)
    var_e = (see - se * se / n) / (n - 1)
    return 1.0 - var_e / (var_r + 1e-5)


class Critic(Transformer):
    """The value model: the policy's architecture, its LM head (V x C) replaced by `score`, a Linear(C, 1).

    A Transformer subclass so that everything that handles the policy handles the critic: the same blocks
    under `.model.layers` (nanor1/distributed.shard wraps each in FSDP2), `gradient_checkpointing`, the
    trunk of `forward` (return_hidden). The head starts at zero, so V = 0 everywhere before the first update:
    the first advantages are the (whitened) rewards to go, and the critic learns from there."""

    def __init__(self, cfg):
        super().__init__(cfg)
        del self.lm_head  # the critic never predicts tokens: no V x C matrix to store, train or shard
        self.score = nn.Linear(cfg.hidden_size, 1)  # HF's name for a token-classification head
        nn.init.zeros_(self.score.weight)
        nn.init.zeros_(self.score.bias)

    def forward(self, input_ids, attention_mask=None):
        """input_ids (B, T) -> values (B, T) float32: V at every position."""
        hidden = super().forward(input_ids, attention_mask=attention_mask, return_hidden=True)  # (B, T, C)
        # The head in fp32, also under autocast or FSDP's bf16 parameters: C multiply-adds per token, nothing
        # next to a block, and the values (and the value loss's V - R) keep no bf16 rounding, which is up to
        # 0.002 at V = 0.5. The result is a fresh tensor, not a view (FSDP2: see Transformer.forward).
        with torch.autocast(hidden.device.type, enabled=False):
            return hidden.float() @ self.score.weight.float()[0] + self.score.bias.float()  # (B, T)

    @classmethod
    def from_pretrained(cls, path, dtype=torch.float32, device="cpu"):
        """The backbone from a HF-layout folder: a policy checkpoint (its lm_head is not read; the head starts
        at zero) or a saved critic (its `score` is read too)."""
        path = Path(path)
        cfg = load_config(path)
        with torch.device("meta"):
            critic = cls(cfg)
        files = weight_files(path)
        names = set(files) - {"lm_head.weight"}
        expected = {k: v.shape for k, v in critic.state_dict().items() if k in names or not k.startswith("score.")}
        check_names(path, expected, names)
        assign_weights(critic, files, expected, dtype, device)
        for name, p in list(critic.score.named_parameters()):
            if p.is_meta:  # not in the file (a policy checkpoint): the head starts at zero
                setattr(critic.score, name, nn.Parameter(torch.zeros(p.shape, dtype=dtype, device=device)))
        return critic

    def save_pretrained(self, path, state_dict=None):
        """config.json + model.safetensors in the layout of a HF token-classification model with one label
        (Qwen2ForTokenClassification / Qwen3ForTokenClassification). Pass a gathered `state_dict` under FSDP."""
        super().save_pretrained(path, state_dict=state_dict)
        file = Path(path) / "config.json"
        raw = json.loads(file.read_text())
        raw["architectures"] = [("Qwen2" if self.config.model_type == "qwen2" else "Qwen3") + "ForTokenClassification"]
        raw["id2label"], raw["label2id"] = {"0": "LABEL_0"}, {"LABEL_0": 0}  # num_labels = 1: one value per token
        file.write_text(json.dumps(raw, indent=2) + "\n")


def load_critic(path, vocab_size, n_positions, dtype=torch.float32, device="cpu", policy_path=None):
    """The critic for a policy whose tokenizer has `vocab_size` ids and whose rows are up to `n_positions`
    tokens long (prompt + completion). It reads the policy's token ids, so what must agree is the tokenizer:
    its embedding needs a row for every id, its context must hold a row, and a tokenizer.json beside it must be
    the policy's. Width and depth may differ (a smaller critic is a choice, not an error)."""
    cfg = load_config(path)  # an unknown model_type or a missing folder: one clear error here
    if cfg.vocab_size < vocab_size:
        raise ValueError(f"--critic_model {path}: its embedding has {cfg.vocab_size} rows but the policy's tokenizer "
                         f"has {vocab_size} ids; the critic must read the policy's tokens")
    if cfg.max_position_embeddings < n_positions:
        raise ValueError(f"--critic_model {path}: context of {cfg.max_position_embeddings} tokens, but rows of "
                         f"prompt + completion reach {n_positions}")
    if policy_path is not None and not same_tokenizer(path, policy_path):
        raise ValueError(f"--critic_model {path}: its tokenizer.json differs from the policy's ({policy_path}); "
                         "the critic would read the policy's ids as other tokens")
    return Critic.from_pretrained(path, dtype=dtype, device=device)


def same_tokenizer(a, b):
    """False when both folders hold a tokenizer.json and their vocabularies or added tokens differ."""
    fa, fb = Path(a) / "tokenizer.json", Path(b) / "tokenizer.json"
    if not (fa.is_file() and fb.is_file()):
        return True  # nothing to compare (a bare weights folder): the vocabulary size check has to do
    ta, tb = json.loads(fa.read_text()), json.loads(fb.read_text())
    key = lambda t: (t.get("model", {}).get("vocab"), [(x["id"], x["content"]) for x in t.get("added_tokens", [])])
    return key(ta) == key(tb)


class CriticLearner:
    """The critic as nanor1/step.py's update runs it: beside the policy, on the same mini- and micro-batches, with
    its own AdamW at --critic_lr (constant, as veRL's). Its score-phase job is `advantages`: values, then GAE."""
    prefix = "critic_"  # its metrics: critic_grad_norm, ...
    counts_steps = False  # the run's opt_step (the policy's lr clock) does not move while only the critic trains

    def __init__(self, critic, opt, run):
        self.critic, self.opt, self.run = critic, opt, run

    @torch.no_grad()
    def advantages(self, run, batch, rewards, kl, sums):
        """Per-token advantages (B, T), whitened over the step's tokens on all ranks; the values they were
        computed with and the returns go into batch.extra for the value loss."""
        cfg, mask, W = run.cfg, batch.mask, run.d.world_size
        values = torch.zeros_like(mask)
        for idx in micro_batches(batch, range(len(batch)), run.cfg, run.d):
            mb = batch.select(idx)
            with run.prec.autocast():
                v = self.critic(mb.ids)  # (b, T)
            values[torch.tensor(idx).to(mask.device, non_blocking=True), :v.shape[1]] = v  # no wait for the GPU
        r = token_rewards(rewards, mask, kl, cfg.beta) if kl is not None else token_rewards(rewards, mask)
        adv, returns = gae(r, values, mask, cfg.gamma, cfg.lam)
        ranks = lambda t: all_reduce(t, run.d)  # noqa: E731
        batch.extra.update(values=values * mask, returns=returns)
        sums.add(explained_variance=explained_variance(values, returns, mask, ranks) / W,
                 values_sum=(values * mask).sum(), returns_sum=(returns * mask).sum(), value_tokens=mask.sum())
        return whiten(adv, mask, ranks)

    def loss(self, mb, norms, budget):
        with self.run.prec.autocast():
            v = self.critic(mb.ids)  # (b, T) fp32 head
        loss, st = value_loss(v, mb.extra["values"], mb.extra["returns"], mb.mask, self.run.cfg.value_clip,
                              normalizer=norms[1])  # a token mean over the mini-batch, all ranks
        n = mb.mask.sum()
        return loss, {"value_loss": loss.detach(), "value_clip_frac": st["value_clip_frac"] * n, "critic_tokens": n}, {}

    def step(self, lr):
        return optimiser_step(self.critic, self.opt, self.run.cfg.critic_lr, self.run.cfg.grad_clip)
