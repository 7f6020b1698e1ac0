"""Run under torchrun by tests/test_ppo_distributed.py (gloo on the CPU): the critic under FSDP2.
    torchrun --nproc_per_node=2 tests/ppo_dist_worker.py MODEL_DIR OUT_DIR
Writes OUT_DIR/critic.pt (rank 0): the critic's full weights after one SGD step on a fixed batch (each rank its
half of the rows), with and without gradient checkpointing, and the gradient norms; and, after an AdamW step,
a checkpoint with the critic, reloaded into fresh sharded models, must continue exactly."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from nanor1 import distributed  # noqa: E402
from nanor1.checkpoint import full_state_dict, load_checkpoint, save_checkpoint  # noqa: E402
from nanor1.model import Transformer  # noqa: E402
from nanor1.ppo import Critic, value_loss  # noqa: E402


def fixed_batch(B=8, T=7, V=97):
    """Token ids, old values, returns and a ragged completion mask (prompt zeros first, padding after)."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, V, (B, T), generator=g)
    mask = torch.zeros(B, T)
    for b in range(B):
        start = int(torch.randint(0, 3, (1,), generator=g))
        mask[b, start:start + int(torch.randint(1, T - start + 1, (1,), generator=g))] = 1
    old = 0.3 * torch.randn(B, T, generator=g)
    returns = torch.rand(B, T, generator=g)
    return ids, old, returns, mask


def new_critic(model_dir, d, checkpointing=False):
    critic = Critic.from_pretrained(model_dir)
    with torch.no_grad():  # a non-zero head, so the backbone gets gradients in the first step
        critic.score.weight.copy_(torch.linspace(-1, 1, critic.config.hidden_size)[None])
    critic.gradient_checkpointing = checkpointing
    return distributed.shard(critic, d)


def critic_step(critic, opt, d, clip=0.2):
    """One optimiser step of the value loss on this rank's rows; returns the global gradient norm."""
    ids, old, returns, mask = fixed_batch()
    rows = slice(d.rank * len(ids) // d.world_size, (d.rank + 1) * len(ids) // d.world_size)
    norm = mask.sum()  # the step-wide normaliser: every rank's valid tokens
    for mb in (slice(rows.start, rows.start + 2), slice(rows.start + 2, rows.stop)):  # two micro-batches
        loss, _ = value_loss(critic(ids[mb]), old[mb], returns[mb], mask[mb], clip, normalizer=norm)
        (loss * d.world_size).backward()  # FSDP averages gradients over ranks; the normaliser already spans them
    gn = torch.nn.utils.clip_grad_norm_(critic.parameters(), float("inf"))
    gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn
    opt.step()
    opt.zero_grad(set_to_none=True)
    return gn.item()


def main():
    model_dir, out = sys.argv[1:3]
    d = distributed.setup()
    torch.manual_seed(0)
    result = {}
    for name, ckpt in (("plain", False), ("checkpointed", True)):
        critic = new_critic(model_dir, d, ckpt)
        result[name + "_norm"] = critic_step(critic, torch.optim.SGD(critic.parameters(), lr=0.5), d)
        result[name] = {k: v.clone() for k, v in full_state_dict(critic, d).items()}

    class Tok:  # the checkpoint copies tokenizer files; this model folder has none
        def save_pretrained(self, path):
            pass

    # Resume: AdamW step, checkpoint (policy and critic), reload both into fresh sharded models, one more step
    # from the original and from the reloaded: the same weights.
    def models():
        policy = distributed.shard(Transformer.from_pretrained(model_dir, dtype=torch.float32), d)
        critic = new_critic(model_dir, d)
        return (policy, torch.optim.AdamW(policy.parameters(), lr=1e-2), critic,
                torch.optim.AdamW(critic.parameters(), lr=1e-2))
    policy, opt, critic, copt = models()
    critic_step(critic, copt, d)
    path = save_checkpoint(out, 1, policy, opt, {"step": 1}, Tok(), d, critic=critic, critic_optimizer=copt)
    result["saved"] = {k: v.clone() for k, v in full_state_dict(critic, d).items()}
    policy2, opt2, critic2, copt2 = models()
    load_checkpoint(path, policy2, opt2, d, critic=critic2, critic_optimizer=copt2)
    critic_step(critic, copt, d)
    critic_step(critic2, copt2, d)
    result["continued"] = {k: v.clone() for k, v in full_state_dict(critic, d).items()}
    result["resumed"] = {k: v.clone() for k, v in full_state_dict(critic2, d).items()}
    if d.is_main:
        torch.save(result, os.path.join(out, "critic.pt"))
    distributed.teardown(d)


if __name__ == "__main__":
    main()
    distributed.exit_worker()
