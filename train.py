"""GRPO training, R1-Zero style: a base model learns from rule-based rewards alone.

    python train.py                                   the demo: the shipped tiny base on its task, CPU
    python train.py --model DIR --task gsm8k --steps 200 --lr 1e-6   one GPU (or CPU)
    torchrun --standalone --nproc_per_node=8 train.py --model DIR --task math
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 train.py ...
    python train.py --help                            every option with its one-line help

Each step has three phases (nanor1/step.py):
  collect  P prompts x G completions sampled by the policy itself (nanor1/rollout.py), each rank its own slice
           of whole groups, scored by the task's rules (nanor1/tasks/, in a killable worker process).
  score    advantages within each group (nanor1/grpo.py); the old and reference log-probs when needed.
  update   mu passes over the batch in mini-batches (one AdamW step each), each accumulated over micro-batches.
"""
import json
import os
import sys
import time
from pathlib import Path

import torch

from nanor1 import distributed
from nanor1.checkpoint import resume_run, save_checkpoint
from nanor1.config import parse_args, save as save_config
from nanor1.data import PromptStream, encode_prompts, fit_prompts, prompt_budget
from nanor1.evaluate import evaluate
from nanor1.model import load_model_and_tokenizer
from nanor1.precision import choose as choose_precision
from nanor1.rollout import Stop
from nanor1.step import PolicyLearner, Run, Sums, collect, score, update
from nanor1.tasks import get_task
from nanor1.verifier import Verifier


def main(argv=None):
    # ----------------------------------------------------------------------------- set-up
    # Inputs first (a bad --model or --task fails before anything is written), then the run folder.
    cfg = parse_args(argv)
    d = distributed.setup()
    check_world(cfg, d)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    prec = choose_precision(d.device, cfg.precision)
    policy, tok = load_model_and_tokenizer(cfg.model, torch.float32, d.device)  # fp32 master weights
    policy.gradient_checkpointing = cfg.grad_checkpointing
    run = prepare(cfg, d, prec, policy, tok)
    out = run_folder(cfg, d, run.task)
    # The frozen reference exists only when the KL term is on.
    ref = load_model_and_tokenizer(cfg.model, torch.float32, d.device)[0].requires_grad_(False) if cfg.beta else None
    distributed.shard(policy, d, prec, frozen=False)
    distributed.shard(ref, d, prec, frozen=True)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                            weight_decay=cfg.weight_decay, eps=1e-8)
    learners = [PolicyLearner(policy, opt, run)]
    state = resume_run(cfg, out, policy, opt, d) if cfg.resume else dict(step=0, cursor=0, opt_step=0)
    step, cursor, opt_step, failed = state["step"], state["cursor"], state["opt_step"], 0
    log = Log(out, d)
    eval_rows = run.task.eval_rows()[:cfg.eval_size]
    if step == 0:
        log.eval(step, run_eval(run, policy, eval_rows))

    # ----------------------------------------------------------------------------- the loop
    while step < cfg.steps:
        step += 1
        t0 = time.time()
        seen = dict(run.verifier.stats)  # cumulative counters: this step's are the difference
        groups, generated, cursor = collect(run, policy, step, cursor)
        t1 = time.time()
        batch, sums = score(run, groups, policy, ref)
        opt_step = update(run, batch, learners, opt_step, lambda s: lr_at(cfg, s), sums)
        t2 = time.time()
        row = step_metrics(run, sums, groups, generated, seen, step)
        row.update(lr=lr_at(cfg, max(opt_step - 1, 0)), rollout_s=t1 - t0, train_s=t2 - t1)
        log.step(row, generated, cfg, tokens_per_s=row["response_length"] * row["completions"] / max(t2 - t0, 1e-9))
        # A step whose every optimiser step had a non-finite gradient changed nothing; three in a row is a run
        # that cannot train (an lr of inf, NaN weights): stop rather than save garbage.
        failed = failed + 1 if row.get("skipped_steps", 0) and row["skipped_steps"] == row["opt_steps"] else 0
        if failed == 3:
            raise ValueError(f"step {step}: the gradient norm was not finite in the last 3 steps (check --lr, the "
                             "model's weights, --grad_clip): stopping without saving")
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
            log.eval(step, run_eval(run, policy, eval_rows))
        if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps:
            trainer = {"step": step, "cursor": cursor, "opt_step": opt_step, "config": vars(cfg)}
            path = save_checkpoint(out, step, policy, opt, trainer, tok, d, keep_last=cfg.keep_last)
            log.say(f"saved {path}")

    # ----------------------------------------------------------------------------- the end
    run.verifier.close()
    distributed.teardown(d)
    return out


def check_world(cfg, d):
    """Settings that depend on the number of ranks: whole groups stay on one rank, every rank gets some."""
    if cfg.prompts_per_step % d.world_size:
        raise ValueError(f"--prompts_per_step {cfg.prompts_per_step} must be a multiple of the {d.world_size} ranks "
                         "(whole groups stay on one rank)")
    if cfg.mini_batch_size and cfg.mini_batch_size < d.world_size * cfg.group_size:
        raise ValueError(f"--mini_batch_size {cfg.mini_batch_size} leaves ranks with empty mini-batches: use at "
                         f"least {d.world_size * cfg.group_size} (ranks x group_size)")
    if cfg.resume == "latest" and not cfg.out:
        raise ValueError("--resume latest needs --out (the run folder to continue)")


def prepare(cfg, d, prec, policy, tok) -> Run:
    """The task's prompts, measured once: the budget fits the split (or says why not) and the loop never
    skips a prompt."""
    task = get_task(cfg.task, cfg.template or None)
    rows = task.train_rows()
    prompts = encode_prompts(task, tok, rows)
    budget = prompt_budget(prompts, cfg.max_prompt_len, policy.config.max_position_embeddings,
                           cfg.max_completion_len)
    rows, prompts = fit_prompts(rows, prompts, budget, cfg.drop_long)
    cfg.max_prompt_len = budget  # config.json records the budget used
    return Run(cfg=cfg, d=d, prec=prec, tok=tok, task=task, rows=rows, prompts=prompts,
               stream=PromptStream(len(rows), cfg.seed), verifier=Verifier(task),
               stop=Stop(eos=tok.eos_token_ids, strings=task.stop, decode=tok.decode))


def run_folder(cfg, d, task) -> Path:
    """OUT (rank 0's timestamp names a new one); config.json records what was resolved, not ""."""
    out = Path(distributed.all_gather_objects(cfg.out or time.strftime("out/run-%Y%m%d-%H%M%S"), d)[0])
    cfg.out, cfg.template = str(out), task.template
    if not cfg.resume and (out / "metrics.jsonl").exists():
        raise ValueError(f"{out} already holds a run: continue it with --resume latest, or choose another --out")
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not cfg.resume:  # a resume writes it after comparing with the checkpoint's settings
            save_config(cfg, out / "config.json")
        print(json.dumps(vars(cfg)))
    return out


def run_eval(run, policy, rows):
    """Greedy pass@1 on the held-out rows, with the rollouts' precision and budget."""
    summary, _ = evaluate(policy, run.tok, run.task, rows, run.verifier, run.prec, run.cfg.max_completion_len, d=run.d)
    return summary


def lr_at(cfg, opt_step):
    """Linear warm-up to cfg.lr over warmup_steps optimiser steps, then constant."""
    return cfg.lr * min(1.0, (opt_step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr


def step_metrics(run, sums, groups, generated, seen, step):
    """One row of metrics.jsonl: every rank's sums reduced by name in one collective, then divided out."""
    task, stats = run.task, run.verifier.stats
    sums.add(completions=len(generated), reward=sum(s.reward for s in generated),
             correct=sum(task.is_correct(s.reward) for s in generated),
             completion_tokens=sum(len(s.completion) for s in generated), groups=len(groups),
             verifier_timeouts=stats["timeouts"] - seen["timeouts"], verifier_errors=stats["errors"] - seen["errors"])
    if run.cfg.dynamic_sampling:  # the kept groups alone, beside everything generated
        kept = [s for g in groups for s in g]
        sums.add(kept=len(kept), reward_kept=sum(s.reward for s in kept),
                 correct_kept=sum(task.is_correct(s.reward) for s in kept))
    t = sums.reduce(run.d)
    n, W = max(t["completions"], 1), run.d.world_size
    row = {"step": step, "reward": t["reward"] / n, "accuracy": t["correct"] / n,
           "response_length": t["completion_tokens"] / n, "completions": int(t["completions"]),
           "groups": int(t["groups"])}
    if "opt_steps" in t:  # an update ran (it does unless no rank kept a group)
        steps = t["opt_steps"] / W
        row.update(entropy=t["entropy"] / max(t["tokens_sampled"], 1),
                   logprob_mismatch=t["mismatch"] / max(t["tokens_sampled"], 1),
                   clip_frac=t["clip_frac"] / max(t["tokens"], 1), loss=t["loss"] / steps,
                   grad_norm=t["grad_norm"] / t["opt_steps"], opt_steps=int(steps),
                   skipped_steps=int(t["skipped_steps"] / W))
        if "kl" in t:
            row["kl"] = t["kl"] / max(t["tokens"], 1)
    if "kept" in t:
        row.update(reward_kept=t["reward_kept"] / max(t["kept"], 1), accuracy_kept=t["correct_kept"] / max(t["kept"], 1))
    if t["verifier_timeouts"] or t["verifier_errors"]:  # rewards scored 0 because the check hung or raised
        row.update(verifier_timeouts=int(t["verifier_timeouts"]), verifier_errors=int(t["verifier_errors"]),
                   verifier_last_error=stats["last_error"])
    return row


class Log:
    """metrics.jsonl, samples.jsonl and the console, written by rank 0 only."""

    def __init__(self, out, d):
        self.out, self.main = out, d.is_main

    def say(self, text):
        if self.main:
            print(text, flush=True)

    def write(self, name, row):
        if self.main:
            with open(self.out / name, "a") as f:
                f.write(json.dumps(row) + "\n")

    def eval(self, step, summary):
        self.write("metrics.jsonl", {"step": step, "eval_accuracy": summary["pass@1"]})
        self.say(f"step {step:4d} | eval greedy pass@1 {summary['pass@1']:.3f} on {summary['problems']} held-out problems")

    def step(self, row, generated, cfg, tokens_per_s):
        self.write("metrics.jsonl", row)
        if "verifier_timeouts" in row:
            self.say(f"warning: step {row['step']}: {row['verifier_timeouts']} reward checks timed out, "
                     f"{row['verifier_errors']} raised (last: {row['verifier_last_error']})")
        if row.get("skipped_steps"):
            self.say(f"warning: step {row['step']}: {row['skipped_steps']} of {row['opt_steps']} optimiser steps "
                     "skipped: the gradient norm was not finite")
        fields = [f"step {row['step']:4d}", f"reward {row['reward']:.3f}", f"acc {row['accuracy']:.3f}",
                  f"len {row['response_length']:5.1f}"]
        if "opt_steps" in row:
            fields += ([f"kl {row['kl']:.4f}"] if "kl" in row else []) + [
                f"ent {row['entropy']:.3f}", f"clip {row['clip_frac']:.3f}", f"gnorm {row['grad_norm']:.3f}"]
        fields += [f"lr {row['lr']:.1e}", f"rollout {row['rollout_s']:.1f}s", f"train {row['train_s']:.1f}s",
                   f"{tokens_per_s:.0f} tok/s"]
        self.say(" | ".join(fields))
        if cfg.log_samples_every and row["step"] % cfg.log_samples_every == 0 and generated:
            for s in generated[:2]:
                self.write("samples.jsonl", {"step": row["step"], "reward": s.reward, "completion": s.text})
                self.say(f"  [reward {s.reward:.1f}] {s.text!r}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, KeyError, NotImplementedError) as e:  # bad input: one line, no traceback
        if os.environ.get("NANOR1_TRACEBACK") == "1":  # debugging: the whole traceback instead
            raise
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)  # (str(KeyError) adds quotes)
        sys.exit(2)
    distributed.exit_worker()  # under torchrun: see there why a worker leaves with os._exit
