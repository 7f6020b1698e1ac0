"""GRPO training, R1-Zero style: a base model learns from rule-based rewards alone.

    python train.py                                   the demo: the shipped tiny base on its task, CPU
    python train.py --model DIR --task gsm8k --steps 200 --lr 1e-6   one GPU (or CPU)
    torchrun --standalone --nproc_per_node=8 train.py --model DIR --task math
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 train.py ...
    python train.py --help                            every option with its one-line help

Each step:
  1. rollout: P prompts x G completions sampled by the policy itself (nanor1/rollout.py), each rank its
     own slice of whole groups; no collective inside the decode loop (weights gathered once).
  2. score with the task's rules (nanor1/tasks.py, verifiers under a hard timeout), advantages within
     each group (nanor1/grpo.py). Dynamic sampling optionally drops groups with no signal and refills.
  3. mu passes over the batch in mini-batches (one AdamW step each), each accumulated over micro-batches,
     with step-wide loss normalisers so micro-batches and ranks do not change the update.
Log-probs come from the fused kernel (never the (N, V) logits) at the rollout temperature, so the trainer
scores exactly the distribution the sampler drew from (`logprob_mismatch` in the metrics).
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

from nanor1 import distributed
from nanor1.checkpoint import list_checkpoints, load_checkpoint, resolve, save_checkpoint
from nanor1.config import parse_args, save as save_config
from nanor1.evaluate import encode_prompts, evaluate
from nanor1.grpo import group_advantages, policy_loss
from nanor1.model import Transformer
from nanor1.rollout import generate
from nanor1.tasks import get_task
from nanor1.tokenizer import Tokenizer
from nanor1.verifier import Verifier


def prompt_stream(n_rows, seed):
    """Global prompt order: a fresh permutation of the rows each epoch. Index i of the stream is a pure
    function of (seed, i), so a resumed run needs only its position."""
    cache = {}

    def at(i):
        epoch = i // n_rows
        if epoch not in cache:
            cache.clear()
            cache[epoch] = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        return int(cache[epoch][i % n_rows])
    return at


def rollout_round(cfg, model, tok, task, rows, prompts, verifier, seed, d):
    """Generate and score G completions for each of this rank's rows (prompts: their token ids). Every
    rank enters `gathered` (an all-gather), also one whose prompts were all skipped."""
    with distributed.gathered(model), autocast(d):
        if not prompts:
            return []
        res = generate(model, prompts, cfg.max_completion_len, temperature=cfg.temperature, top_k=cfg.top_k,
                       top_p=cfg.top_p, eos_token_id=sorted(tok.eos_token_ids), n=cfg.group_size,
                       stop_strings=task.stop, decode=tok.decode, seed=seed, details=True)
    texts = [tok.decode(c) for c in res.tokens]
    rewards = verifier.score(texts, [r for r in rows for _ in range(cfg.group_size)])
    G = cfg.group_size
    return [dict(prompt=prompts[i // G], completion=res.tokens[i], sampler_logp=res.logprobs[i],
                 truncated=res.truncated[i], reward=rewards[i], text=texts[i]) for i in range(len(texts))]


def collect(cfg, model, tok, task, train_rows, stream, cursor, verifier, step, d):
    """One step's rollout batch for this rank: a list of groups (each G dicts), plus metrics over every
    completion generated. With dynamic sampling, groups whose rewards are all equal are dropped and new
    prompts are drawn, up to max_refill_rounds; all ranks then keep the same number of groups."""
    P_rank = cfg.prompts_per_step // d.world_size
    G, kept, generated, skipped = cfg.group_size, [], [], 0
    for rnd in range(1 + (cfg.max_refill_rounds if cfg.dynamic_sampling else 0)):
        ids = [stream(cursor + i) for i in range(d.rank * P_rank, (d.rank + 1) * P_rank)]
        cursor += cfg.prompts_per_step  # every rank advances the same global cursor
        rows = [train_rows[i] for i in ids]
        prompts = encode_prompts(task, tok, rows)
        fits = [len(p) <= cfg.max_prompt_len for p in prompts]
        skipped += fits.count(False)
        rows = [r for r, ok in zip(rows, fits) if ok]
        prompts = [p for p, ok in zip(prompts, fits) if ok]
        seed = ((cfg.seed * 1_000_003 + step) * 131 + rnd) * 4099 + d.rank
        items = rollout_round(cfg, model, tok, task, rows, prompts, verifier, seed, d)
        generated += items
        groups = [items[i:i + G] for i in range(0, len(items), G)]
        if cfg.dynamic_sampling:
            groups = [g for g in groups if len({x["reward"] for x in g}) > 1]
        kept += groups
        enough = torch.tensor(float(len(kept) >= P_rank))
        if not cfg.dynamic_sampling or distributed.all_reduce(enough, d, "min").item() == 1:
            break
    # Every rank must run the same number of micro-batches (FSDP collectives). When the counts differ (dynamic
    # sampling, skipped long prompts), pool the groups and deal them out evenly, so a rank that kept few takes
    # some of the others'; the groups themselves travel only then.
    counts = {min(c, P_rank) for c in distributed.all_gather_objects(len(kept), d)}
    if len(counts) == 1:
        return kept[:counts.pop()], generated, cursor, skipped
    kept = deal(distributed.all_gather_objects(kept, d), d.rank, P_rank)
    return kept, generated, cursor, skipped


def deal(parts, rank, cap):
    """parts[r] = rank r's groups. Returns rank `rank`'s share of the pooled groups: every rank gets the same
    number, at most `cap`; at most world_size - 1 groups are left over."""
    pool = [g for part in parts for g in part]
    per = min(len(pool) // len(parts), cap)
    return pool[rank * per:(rank + 1) * per]


def autocast(d):
    """bf16 compute on one GPU (fp32 master weights); FSDP's MixedPrecisionPolicy does it under torchrun."""
    enabled = d.device.type == "cuda" and not d.enabled
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled)


def pack(seqs, device):
    """Right-pad prompt+completion rows. Returns input ids (B, T), targets (B, T) and the mask of
    completion tokens among the targets (B, T). Padding only follows real tokens, so causal attention
    keeps it away from them and no attention mask is needed."""
    full = [s["prompt"] + s["completion"] for s in seqs]
    T = max(len(f) for f in full) - 1
    ids = torch.zeros(len(seqs), T + 1, dtype=torch.long)
    mask = torch.zeros(len(seqs), T)
    sampler = torch.zeros(len(seqs), T)
    for i, (s, f) in enumerate(zip(seqs, full)):
        ids[i, :len(f)] = torch.tensor(f)
        p, c = len(s["prompt"]), len(s["completion"])
        mask[i, p - 1:p - 1 + c] = 1.0  # target t predicts token t + 1: completion tokens start at p - 1
        sampler[i, p - 1:p - 1 + c] = torch.tensor(s["sampler_logp"])
    return ids[:, :-1].to(device), ids[:, 1:].to(device), mask.to(device), sampler.to(device)


def token_logprobs(model, seqs, cfg, d):
    ids, tgt, mask, sampler = pack(seqs, d.device)
    with autocast(d):
        logp, entropy = model(ids, targets=tgt, temperature=cfg.temperature)  # (b, T) each
    return logp, entropy, mask, sampler


def train_step(cfg, model, ref, opt, groups, opt_step, d):
    """mu passes over the rollout batch, one optimiser step per mini-batch. Returns metrics (sums over this
    rank's tokens, reduced over ranks by the caller) and the new optimiser step count."""
    G = cfg.group_size
    seqs = [s for g in groups for s in g]
    adv = group_advantages(torch.tensor([s["reward"] for s in seqs]), G, scale=cfg.scale_rewards)
    for s, a in zip(seqs, adv.tolist()):
        s["adv"] = a
        s["weight"] = 0.0 if cfg.mask_truncated and s["truncated"] else 1.0  # DAPO's overlong filter
    n_mini = cfg.prompts_per_step * G // cfg.mini_batch_size if cfg.mini_batch_size else 1
    minis = [seqs[i::n_mini] for i in range(n_mini)] if seqs else []
    one_pass = cfg.mu == 1 and n_mini == 1  # old_logp = logp.detach(): no extra forward (ratio 1)
    m = {k: 0.0 for k in ("loss", "entropy", "mismatch", "clip_frac", "kl", "tokens", "tokens0", "grad_norm")}

    def policy_stats(logp, entropy, mask, sampler):
        """Entropy and sampler-vs-trainer mismatch, both of the policy that sampled (before any update)."""
        m["entropy"] += (entropy * mask).sum().item()
        m["mismatch"] += ((logp.detach() - sampler).abs() * mask).sum().item()
        m["tokens0"] += mask.sum().item()

    with torch.no_grad():  # before any update: old (if needed) and reference log-probs
        for mb in micro_batches(seqs, cfg.micro_batch_size):
            for key, net in (("old", None if one_pass else model), ("ref", ref)):
                if net is not None:
                    lp, entropy, mask, sampler = token_logprobs(net, mb, cfg, d)
                    if key == "old":
                        policy_stats(lp, entropy, mask, sampler)
                    for s, row in zip(mb, lp):  # each row trimmed to its own length (micro-batches regroup)
                        s[key] = row[:len(s["prompt"]) + len(s["completion"]) - 1]

    for epoch in range(cfg.mu):
        for mini in minis:
            # Step-wide normaliser over all micro-batches and ranks: sequences (grpo, dr_grpo) or tokens (dapo).
            if cfg.loss_type == "dapo":
                local = sum(len(s["completion"]) * s["weight"] for s in mini)
            else:
                local = float(len(mini))
            norm = distributed.all_reduce(torch.tensor(float(local)), d).clamp(min=1).item()
            for mb in micro_batches(mini, cfg.micro_batch_size):
                logp, entropy, mask, sampler = token_logprobs(model, mb, cfg, d)
                if one_pass:
                    policy_stats(logp, entropy, mask, sampler)
                mask = mask * torch.tensor([s["weight"] for s in mb], device=mask.device)[:, None]
                old = logp.detach() if one_pass else _stack(mb, "old", logp)
                ref_lp = _stack(mb, "ref", logp) if ref is not None else None
                A = torch.tensor([s["adv"] for s in mb], device=logp.device)
                loss, st = policy_loss(logp, old, A, mask, cfg.loss_type, cfg.clip_low, cfg.clip_high,
                                       ref_lp, cfg.beta, max_len=cfg.max_completion_len, normalizer=norm)
                # FSDP averages gradients over ranks; the normaliser already spans ranks, so undo the mean.
                (loss * d.world_size).backward()
                n_tok = mask.sum().item()
                m["loss"] += loss.item() / (len(minis) * cfg.mu)  # mean over optimiser steps
                m["clip_frac"] += (st["clip_frac_low"] + st["clip_frac_high"]).item() * n_tok
                m["kl"] += st.get("kl", torch.tensor(0.0)).item() * n_tok
                m["tokens"] += n_tok
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, opt_step)
            norm_total = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
            if hasattr(norm_total, "full_tensor"):  # a DTensor under FSDP: the norm over all shards
                norm_total = norm_total.full_tensor()
            m["grad_norm"] += norm_total.item() / (len(minis) * cfg.mu)
            opt.step()
            opt.zero_grad(set_to_none=True)
            opt_step += 1
    return m, opt_step


def micro_batches(batch, size):
    return [batch[i:i + size] for i in range(0, len(batch), size)]


def _stack(mb, key, like):
    T = like.shape[1]
    return torch.stack([torch.nn.functional.pad(s[key], (0, T - s[key].shape[0])) for s in mb])


def set_aside(out, step):
    """A resume from checkpoint `step` replays what the run wrote after it. Move that to out/abandoned/ instead
    of deleting it: log lines past the step (and a line torn by a crash) are appended to abandoned/<log>,
    newer checkpoints move there whole, so the next --resume latest cannot pick them and nothing is lost."""
    aside = out / "abandoned"
    for name in ("metrics.jsonl", "samples.jsonl"):
        if not (out / name).exists():
            continue
        keep, drop = [], []
        for line in (out / name).read_text().splitlines():
            try:
                kept = json.loads(line)["step"] <= step
            except (json.JSONDecodeError, KeyError, TypeError):
                kept = False
            (keep if kept else drop).append(line + "\n")
        if drop:
            aside.mkdir(exist_ok=True)
            with open(aside / name, "a") as f:
                f.writelines(drop)
        (out / name).write_text("".join(keep))
    for newer in list_checkpoints(out):
        if int(newer.name.split("-")[1]) > step:
            aside.mkdir(exist_ok=True)
            newer.rename(free_name(aside / newer.name))


def free_name(path):
    """`path`, or `path.2`, `path.3`, ... : the first that does not exist yet (an earlier resume may have
    set aside a file of the same name)."""
    n, target = 1, path
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{n}")
    return target


def lr_at(cfg, opt_step):
    """Linear warm-up to cfg.lr over warmup_steps optimiser steps, then constant."""
    return cfg.lr * min(1.0, (opt_step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr


# Settings a resume may change without changing what the run computes.
RESUME_FREE = {"out", "resume", "steps", "threads", "eval_every", "eval_size", "log_samples_every", "save_every",
               "keep_last", "micro_batch_size"}


def changed_settings(saved: dict, cfg) -> list:
    """'name old -> new' for each setting that differs from the checkpoint's and changes the trajectory."""
    now = vars(cfg)
    return [f"{k} {saved[k]!r} -> {now[k]!r}" for k in sorted(saved)
            if k in now and k not in RESUME_FREE and saved[k] != now[k]]


def main(argv=None):
    cfg = parse_args(argv)
    d = distributed.setup()
    if cfg.prompts_per_step % d.world_size:
        raise ValueError(f"--prompts_per_step {cfg.prompts_per_step} must be a multiple of the {d.world_size} ranks "
                         "(whole groups stay on one rank)")
    if cfg.mini_batch_size and cfg.mini_batch_size < d.world_size * cfg.group_size:
        raise ValueError(f"--mini_batch_size {cfg.mini_batch_size} leaves ranks with empty mini-batches: use at "
                         f"least {d.world_size * cfg.group_size} (ranks x group_size)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.resume and not cfg.out and cfg.resume == "latest":
        raise ValueError("--resume latest needs --out (the run folder to continue)")
    torch.manual_seed(cfg.seed)
    # Inputs first (a bad --model or --task fails before anything is written), then the run folder.
    model = Transformer.from_pretrained(cfg.model, dtype=torch.float32, device=d.device)  # fp32 master
    model.gradient_checkpointing = cfg.grad_checkpointing
    tok = Tokenizer.from_pretrained(cfg.model)
    tok.check_model(model.config.vocab_size)
    model.vocab_limit = tok.vocab_size  # sample and train on the tokenizer's ids only (nanor1/model.py)
    task = get_task(cfg.task, cfg.template or None)
    if cfg.max_prompt_len + cfg.max_completion_len > model.config.max_position_embeddings:
        raise ValueError(f"--max_prompt_len {cfg.max_prompt_len} + --max_completion_len {cfg.max_completion_len} "
                         f"exceeds the model's context of {model.config.max_position_embeddings} tokens")
    out = cfg.out or time.strftime("out/run-%Y%m%d-%H%M%S")
    out = Path(distributed.all_gather_objects(out, d)[0])  # rank 0's timestamp names the folder
    cfg.out, cfg.template = str(out), task.template  # config.json records what was resolved, not ""
    if not cfg.resume and (out / "metrics.jsonl").exists():
        raise ValueError(f"{out} already holds a run: continue it with --resume latest, or choose another --out")
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not cfg.resume:  # a resume writes it after comparing with the checkpoint's settings
            save_config(cfg, out / "config.json")
        print(json.dumps(vars(cfg)))
    ref = None
    if cfg.beta > 0:  # the frozen reference exists only when the KL term is on
        ref = Transformer.from_pretrained(cfg.model, dtype=torch.float32, device=d.device).requires_grad_(False)
        ref.vocab_limit = tok.vocab_size
        distributed.shard(ref, d)
        if d.enabled:  # no backward follows its forwards: let the root free its gathered weights too
            ref.set_reshard_after_forward(True)
    distributed.shard(model, d)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                            weight_decay=cfg.weight_decay, eps=1e-8)
    train_rows, eval_rows = list(task.train_rows()), list(task.eval_rows())[:cfg.eval_size]
    stream = prompt_stream(len(train_rows), cfg.seed)
    verifier = Verifier(task)

    step, cursor, opt_step = 0, 0, 0
    metrics_file = out / "metrics.jsonl"
    if cfg.resume:
        ck = resolve(cfg.resume, out)
        state = load_checkpoint(ck, model, opt, d)
        step, cursor, opt_step = state["step"], state["cursor"], state["opt_step"]
        if d.is_main:
            set_aside(out, step)
            print(f"resumed from {ck} at step {step}")
            changed = changed_settings(state.get("config", {}), cfg)
            if changed:
                print("warning: resumed with changed settings, so this is no longer one uninterrupted run: "
                      + ", ".join(changed))
                if (out / "config.json").exists():  # keep what the earlier steps ran with
                    (out / "config.json").rename(free_name(out / f"config-until-step-{step}.json"))
            save_config(cfg, out / "config.json")

    def log(row):
        if d.is_main:
            with open(metrics_file, "a") as f:
                f.write(json.dumps(row) + "\n")

    def run_eval():
        with autocast(d):  # the same numerics as the rollouts
            s, _ = evaluate(model, tok, task, eval_rows, verifier, cfg.max_completion_len, temperature=0.0, d=d)
        log({"step": step, "eval_accuracy": s["pass@1"]})
        if d.is_main:
            print(f"step {step:4d} | eval greedy pass@1 {s['pass@1']:.3f} on {s['problems']} held-out problems")

    if step == 0:
        run_eval()
    while step < cfg.steps:
        step += 1
        t0 = time.time()
        seen = (verifier.stats["timeouts"], verifier.stats["errors"])  # cumulative counters: take this step's
        groups, generated, cursor, skipped = collect(cfg, model, tok, task, train_rows, stream, cursor, verifier,
                                                     step, d)
        t1 = time.time()
        m, opt_step = train_step(cfg, model, ref, opt, groups, opt_step, d)
        t2 = time.time()
        # Metrics over every completion generated this step, summed over ranks.
        tot = torch.tensor([len(generated), sum(x["reward"] for x in generated),
                            sum(task.is_correct(x["reward"]) for x in generated),
                            sum(len(x["completion"]) for x in generated), m["tokens"], m["entropy"],
                            m["mismatch"], m["clip_frac"], m["kl"], m["loss"], skipped, len(groups), m["tokens0"],
                            verifier.stats["timeouts"] - seen[0], verifier.stats["errors"] - seen[1]],
                           dtype=torch.float64)
        distributed.all_reduce(tot, d)
        n, tokens, tokens0 = max(tot[0].item(), 1), max(tot[4].item(), 1), max(tot[12].item(), 1)
        row = {"step": step, "reward": tot[1].item() / n, "accuracy": tot[2].item() / n,
               "response_length": tot[3].item() / n, "entropy": tot[5].item() / tokens0,
               "clip_frac": tot[7].item() / tokens, "grad_norm": m["grad_norm"], "lr": lr_at(cfg, opt_step - 1),
               "loss": tot[9].item(), "logprob_mismatch": tot[6].item() / tokens0,
               "groups": int(tot[11].item()), "rollout_s": t1 - t0, "train_s": t2 - t1}
        if cfg.beta > 0:
            row["kl"] = tot[8].item() / tokens
        if tot[10].item():
            row["skipped_long_prompts"] = int(tot[10].item())
        if tot[13].item() or tot[14].item():  # rewards scored 0 because the check hung or raised
            row["verifier_timeouts"], row["verifier_errors"] = int(tot[13].item()), int(tot[14].item())
            if d.is_main:
                print(f"warning: step {step}: {row['verifier_timeouts']} reward checks timed out, "
                      f"{row['verifier_errors']} raised (last: {verifier.stats['last_error']})")
        log(row)
        if d.is_main:
            print(f"step {step:4d} | reward {row['reward']:.3f} | acc {row['accuracy']:.3f} | "
                  f"len {row['response_length']:5.1f} | " + (f"kl {row['kl']:.4f} | " if "kl" in row else "") +
                  f"ent {row['entropy']:.3f} | clip {row['clip_frac']:.3f} | gnorm {row['grad_norm']:.3f} | "
                  f"lr {row['lr']:.1e} | rollout {row['rollout_s']:.1f}s | train {row['train_s']:.1f}s | "
                  f"{tot[3].item() / max(t2 - t0, 1e-9):.0f} tok/s", flush=True)
            if cfg.log_samples_every and step % cfg.log_samples_every == 0 and generated:
                with open(out / "samples.jsonl", "a") as f:
                    for x in generated[:2]:
                        f.write(json.dumps({"step": step, "reward": x["reward"], "completion": x["text"]}) + "\n")
                        print(f"  [reward {x['reward']:.1f}] {x['text']!r}")
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
            run_eval()
        if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps:
            state = {"step": step, "cursor": cursor, "opt_step": opt_step, "config": vars(cfg)}
            path = save_checkpoint(out, step, model, opt, state, tok, d, keep_last=cfg.keep_last)
            if d.is_main:
                print(f"saved {path}")
    verifier.close()
    distributed.teardown(d)
    return out


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, KeyError, NotImplementedError) as e:  # bad input: one line, no traceback
        if os.environ.get("NANOR1_TRACEBACK") == "1":  # debugging: the whole traceback instead
            raise
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)  # (str(KeyError) adds quotes)
        sys.exit(2)
    distributed.exit_worker()  # under torchrun: see there why a worker leaves with os._exit
