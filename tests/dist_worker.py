"""Run under torchrun by tests/test_distributed.py (gloo on the CPU). Usage:
    torchrun --nproc_per_node=2 tests/dist_worker.py MODE MODEL_DIR OUT_DIR
MODE: step (one SGD step on a fixed batch per STEP_VARIANTS entry; grpo_clip clips every optimiser step;
            grpo_ckpt is grpo with gradient checkpointing),
      rollout (ranks decode different numbers of steps),
      ckpt (a 2-rank checkpoint plus the logits of the sharded model),
      deal (dynamic sampling where only rank 0 finds informative groups: both ranks train on an equal share),
      lora (LoRA under FSDP2: two AdamW steps on the adapters, a rollout, a checkpoint and its reload),
      bf16 (log-probs and one step under --precision bf16: FSDP's bf16 policy with CPU autocast),
      sft (one SGD step of nanor1/sft.py's learner on ragged rows with a token budget),
      ppo (one PPO step: the policy and the critic, GAE advantages whitened over both ranks)."""
import os
import sys
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from nanor1 import distributed, lora, sft  # noqa: E402
from nanor1 import step as rl  # noqa: E402
from nanor1.checkpoint import full_state_dict, load_checkpoint, save_checkpoint  # noqa: E402
from nanor1.config import TrainConfig  # noqa: E402
from nanor1.model import Transformer  # noqa: E402
from nanor1.ppo import CriticLearner  # noqa: E402
from nanor1.precision import choose  # noqa: E402
from nanor1.rollout import generate  # noqa: E402
from tests.ppo_dist_worker import new_critic  # noqa: E402


def fixed_groups(P=4, G=4, V=97, seed=0):
    """A deterministic rollout batch: P groups of G (prompt, completion, reward) with ragged lengths."""
    g = torch.Generator().manual_seed(seed)
    groups = []
    for _ in range(P):
        prompt = torch.randint(0, V, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g).tolist()
        group = []
        for _ in range(G):
            c = int(torch.randint(1, 7, (1,), generator=g))
            group.append(rl.Sample(prompt=prompt, completion=torch.randint(0, V, (c,), generator=g).tolist(),
                                   sampler_logp=[0.0] * c, truncated=False,
                                   reward=float(torch.rand(1, generator=g) > 0.5), text=""))
        groups.append(group)
    return groups


# The step mode's variants: name -> (loss_type, grad_clip). With grad_clip 0.2 the pre-clip gradient norms of
# the 4 optimiser steps (mu=2 x 2 mini-batches) are 0.63 to 2.8 on this batch, so "grpo_clip" clips every step
# (test_distributed checks that from the recorded norms).
STEP_VARIANTS = {"grpo": ("grpo", 0.0), "dapo": ("dapo", 0.0), "grpo_clip": ("grpo", 0.2)}


def step_cfg(loss_type, grad_clip=0.0):
    return TrainConfig(prompts_per_step=4, group_size=4, micro_batch_size=3, grad_clip=grad_clip,
                       loss_type=loss_type, max_completion_len=6, mu=2, mini_batch_size=8, lr=0.5)


def train_step(cfg, model, opt, groups, d, rows=(), precision="fp32", critic=None, critic_opt=None):
    """score + update on fixed groups, as train.py's loop runs them (with a critic: PPO's two learners)."""
    run = rl.Run(cfg=cfg, d=d, prec=choose(d.device, precision), tok=None, task=None, rows=list(rows), prompts=[],
                 stream=None, verifier=None, stop=None)
    learners = [rl.PolicyLearner(model, opt, run)]
    if critic is not None:
        learners.append(CriticLearner(critic, critic_opt, run))
    batch, sums = rl.score(run, groups, model, None, learners[1] if critic is not None else None)
    rl.update(run, batch, learners, 0, lambda s: cfg.lr, sums)
    return sums.reduce(d)


def one_step(model, d, variant, precision="fp32"):
    """Each rank trains on its own whole groups; returns the full parameters after one SGD step per mini-batch.
    variant: a key of STEP_VARIANTS."""
    loss_type, grad_clip = STEP_VARIANTS[variant]
    groups = fixed_groups()
    per_rank = len(groups) // d.world_size
    mine = groups[d.rank * per_rank:(d.rank + 1) * per_rank]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    train_step(step_cfg(loss_type, grad_clip), model, opt, mine, d, precision=precision)
    return {k: v.clone() for k, v in full_state_dict(model, d).items()}


def ppo_step(model_dir, d):
    """One PPO step on fixed groups, each rank its whole groups: mu = 2 passes of 2 mini-batches (so the ratio
    and the value clip act), SGD for the policy and the critic. Returns both models' full parameters and the
    step's reduced statistics."""
    cfg = TrainConfig(algo="ppo", prompts_per_step=4, group_size=4, micro_batch_size=3, max_completion_len=6, mu=2,
                      mini_batch_size=8, lr=0.5, critic_lr=0.01, grad_clip=0.0, value_clip=0.05)
    groups = fixed_groups()
    per_rank = len(groups) // d.world_size
    mine = groups[d.rank * per_rank:(d.rank + 1) * per_rank]
    policy = distributed.shard(Transformer.from_pretrained(model_dir, dtype=torch.float32), d)
    critic = new_critic(model_dir, d)  # a non-zero value head: the backbone learns from the first step
    stats = train_step(cfg, policy, torch.optim.SGD(policy.parameters(), lr=cfg.lr), mine, d, critic=critic,
                       critic_opt=torch.optim.SGD(critic.parameters(), lr=cfg.critic_lr))
    return {"policy": {k: v.clone() for k, v in full_state_dict(policy, d).items()},
            "critic": {k: v.clone() for k, v in full_state_dict(critic, d).items()}, "stats": stats}


def sft_examples():
    """8 fixed SFT rows: the first four of 24 tokens, the last four of 6, targets with holes (as a chat's user
    turns). With --micro_batch_tokens 48 rank 0's four make 2 micro-batches and rank 1's one, so the ranks must
    even out their counts (step.same_count) or FSDP's all-gathers would hang."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(8):
        n = 24 if i < 4 else 6
        target = [0, 0, 1] + (torch.rand(n - 3, generator=g) > 0.3).long().tolist()
        out.append(sft.Example(ids=torch.randint(0, 97, (n,), generator=g).tolist(), target=target, line=i + 1))
    return out


def sft_step(model, d, examples):
    """One SGD step on this rank's half of `examples` (all of them in one process); returns (the full parameters,
    the reduced sums)."""
    cfg = TrainConfig(algo="sft", data="-", prompts_per_step=len(examples), micro_batch_tokens=48, grad_clip=0.0)
    run = rl.Run(cfg=cfg, d=d, prec=choose(d.device, "fp32"), tok=None, task=None, rows=examples, prompts=[],
                 stream=None, verifier=None, stop=None)
    per = len(examples) // d.world_size
    batch = sft.pack(examples[d.rank * per:(d.rank + 1) * per], d.device)
    sums = rl.Sums()
    rl.update(run, batch, [sft.Learner(model, torch.optim.SGD(model.parameters(), lr=0.5), run)], 0, lambda s: 0.5,
              sums)
    return {k: v.clone() for k, v in full_state_dict(model, d).items()}, sums.reduce(d)


def bf16_logprobs(model, d, part):
    """(B, T) log-probs of fixed_groups()'s share `part` (of 2) under --precision bf16 (CPU autocast)."""
    groups = fixed_groups()[part * 2:(part + 1) * 2]
    run = rl.Run(cfg=step_cfg("grpo"), d=d, prec=choose(d.device, "bf16"), tok=None, task=None, rows=[],
                 prompts=[], stream=None, verifier=None, stop=None)
    return rl.logprobs(run, model, rl.pack([s for g in groups for s in g], d.device))


@contextmanager
def recorded_grad_norms():
    """Record, for each clip_grad_norm_ call (one per optimiser step), (the norm it returns, the norm of this
    process's local gradients). Under FSDP the returned norm must be the global one over all shards; the local
    one (this rank's shards only) is what clipping per shard would wrongly use. In one process both are equal."""
    orig = torch.nn.utils.clip_grad_norm_
    log = []

    def recording(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        local = [p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad
                 for p in parameters if p.grad is not None]
        local = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in local]))
        total = orig(parameters, max_norm, *args, **kwargs)  # read `local` first: this clips in place
        full = total.full_tensor() if hasattr(total, "full_tensor") else total
        log.append((full.item(), local.item()))
        return total

    torch.nn.utils.clip_grad_norm_ = recording  # nanor1.step looks it up at call time
    try:
        yield log
    finally:
        torch.nn.utils.clip_grad_norm_ = orig


def lora_rows():
    """4 fixed rows of a training batch: inputs (4, 10), targets (4, 10), a mask of ragged lengths (4, 10)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 97, (4, 11), generator=g)
    mask = (torch.arange(10)[None] < torch.tensor([10, 6, 8, 3])[:, None]).float()
    return ids[:, :-1], ids[:, 1:], mask


def lora_steps(model, d, steps=2):
    """LoRA (rank 4, A drawn from seed 0 on every rank) on the whole model, then FSDP2; AdamW over the adapters;
    each rank trains on its share of lora_rows(), the loss normalised by the global token count. Returns the
    optimiser."""
    torch.manual_seed(0)
    lora.apply_lora(model, 4, base="tiny")
    distributed.shard(model, d)
    opt = torch.optim.AdamW(lora.trainable(model), lr=1e-2)
    ids, tgt, mask = lora_rows()
    mine = slice(d.rank * 4 // d.world_size, (d.rank + 1) * 4 // d.world_size)
    for _ in range(steps):
        logp, _ = model(ids[mine], targets=tgt[mine])
        # FSDP averages gradients over ranks; the normaliser already spans ranks, so undo the mean.
        (-(logp * mask[mine]).sum() / mask.sum() * d.world_size).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return opt


def lora_mode(model_dir, out, d):
    """Results (on rank 0, in OUT/lora.pt): the full state after the steps (base and adapters), logits and greedy
    rollout tokens of the sharded LoRA model, and the logits of a fresh model that loaded its checkpoint."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    class Tok:
        def save_pretrained(self, path):
            pass
    model = Transformer.from_pretrained(model_dir, dtype=torch.float32)
    opt = lora_steps(model, d)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        logits = model(ids)
    with distributed.gathered(model):  # rollouts on the live LoRA path, weights gathered once
        tokens = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=6, temperature=0.0).tokens
    path = save_checkpoint(out, 1, model, opt, {"step": 1}, Tok(), d)
    fresh = Transformer.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(7)  # another A: the checkpoint must overwrite it
    lora.apply_lora(fresh, 4, base="tiny")
    distributed.shard(fresh, d)
    load_checkpoint(path, fresh, torch.optim.AdamW(lora.trainable(fresh), lr=1e-2), d)
    with torch.no_grad():
        reloaded = fresh(ids)
    if d.is_main:
        torch.save({"state": state, "logits": logits, "tokens": tokens, "reloaded": reloaded},
                   os.path.join(out, "lora.pt"))


def main():
    mode, model_dir, out = sys.argv[1:4]
    d = distributed.setup()
    torch.manual_seed(0)

    def load(checkpointing=False, precision="fp32"):
        m = Transformer.from_pretrained(model_dir, dtype=torch.float32)
        m.gradient_checkpointing = checkpointing  # each block recomputed in backward, inside its FSDP unit
        return distributed.shard(m, d, choose(d.device, precision))
    model = load()
    if mode == "step":
        result = {"grpo": one_step(model, d, "grpo"), "dapo": one_step(load(), d, "dapo"),
                  "grpo_ckpt": one_step(load(checkpointing=True), d, "grpo")}
        with recorded_grad_norms() as norms:
            result["grpo_clip"] = one_step(load(), d, "grpo_clip")
        # Every rank's (global, local) norm per step: rows of zeros except this rank's, summed over ranks.
        per_rank = torch.zeros(d.world_size, len(norms), 2, dtype=torch.float64)
        per_rank[d.rank] = torch.tensor(norms, dtype=torch.float64)
        result["grpo_clip_norms"] = distributed.all_reduce(per_rank, d)
        if d.is_main:
            torch.save(result, os.path.join(out, "params.pt"))
    elif mode == "bf16":  # --precision bf16: FSDP's bf16 gathers + autocast, as one process's autocast
        logp = bf16_logprobs(load(precision="bf16"), d, d.rank)
        every = distributed.all_gather(torch.nn.functional.pad(logp, (0, 16 - logp.shape[1])), d)  # (W, B, 16)
        # A fresh model: after a forward FSDP2's root stays unsharded, and an optimiser built then would hold
        # the temporary unsharded tensors of the embedding and final norm (train.py builds it before any forward).
        params = one_step(load(precision="bf16"), d, "grpo", precision="bf16")
        if d.is_main:
            torch.save({"logp": every, "params": params}, os.path.join(out, "bf16.pt"))
    elif mode == "rollout":
        prompts = [[1, 2, 3], [4, 5]] if d.rank == 0 else [[7, 8, 9, 10]]
        with distributed.gathered(model):
            res = generate(model, prompts, max_new_tokens=3 if d.rank == 0 else 25, temperature=1.0, n=2,
                           seed=d.rank).tokens
        lengths = torch.tensor([float(sum(len(c) for c in res))])
        distributed.all_reduce(lengths, d)  # both ranks got here: no hang
        if d.is_main:
            with open(os.path.join(out, "rollout.txt"), "w") as f:
                f.write(f"{int(lengths.item())}\n")
        # The sharded model trains normally after the rollout phase (resharded, hooks restored).
        train_step(step_cfg("grpo"), model, torch.optim.SGD(model.parameters(), lr=0.1),
                   fixed_groups(P=2)[d.rank:d.rank + 1], d)
    elif mode == "deal":
        G = 4

        def fake_groups(run, policy, row_ids, seed, budget=None):  # rank 1's groups are all flat
            return [[rl.Sample(prompt=[1, 2, 3], completion=[d.rank, r], sampler_logp=[0.0, 0.0], truncated=False,
                               reward=float(d.rank == 0 and j % 2), text="") for j in range(G)] for r in row_ids]
        rl.rollout_groups = fake_groups
        cfg = TrainConfig(prompts_per_step=8, group_size=G, dynamic_sampling=True, max_refill_rounds=0)
        run = rl.Run(cfg=cfg, d=d, prec=None, tok=None, task=None, rows=list(range(100)), prompts=[], stream=range(100),
                     verifier=None, stop=None)
        kept, generated, cursor = rl.collect(run, model, 1, 0)
        with open(os.path.join(out, f"deal-{d.rank}.txt"), "w") as f:
            f.write(" ".join(f"{g[0].completion[0]}:{g[0].completion[1]}" for g in kept) +
                    f" | {len(generated)} {cursor}\n")
    elif mode == "ppo":
        result = ppo_step(model_dir, d)
        if d.is_main:
            torch.save(result, os.path.join(out, "ppo.pt"))
    elif mode == "lora":
        lora_mode(model_dir, out, d)
    elif mode == "sft":
        params, sums = sft_step(model, d, sft_examples())
        if d.is_main:
            torch.save({"params": params, "sums": sums}, os.path.join(out, "sft.pt"))
    elif mode == "ckpt":
        class Tok:  # the checkpoint copies tokenizer files; this model folder has none
            def save_pretrained(self, path):
                pass
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        train_step(step_cfg("dapo"), model, opt, fixed_groups()[d.rank * 2:(d.rank + 1) * 2], d)
        path = save_checkpoint(out, 1, model, opt, {"step": 1}, Tok(), d)
        ids = torch.tensor([[5, 6, 7, 8, 9]])
        with torch.no_grad():
            logits = model(ids)
        if d.is_main:
            torch.save(logits, os.path.join(out, "logits.pt"))
            print("saved", path)
    distributed.teardown(d)


if __name__ == "__main__":
    main()
    distributed.exit_worker()
