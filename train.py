"""GRPO training, R1-Zero style: a base model learns from rule-based rewards alone; and SFT, the R1 pipeline's
other half (cold start, distillation).

    python train.py                                   the demo: the shipped tiny base on its task, CPU
    python train.py --model DIR --task gsm8k --steps 200 --lr 1e-6   one GPU (or CPU)
    python train.py --algo sft --data traces.jsonl --task arithmetic  SFT (nanor1/sft.py), same machinery
    torchrun --standalone --nproc_per_node=8 train.py --model DIR --task math
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST:29500 train.py ...
    python train.py --help                            every option with its one-line help

Each step has three phases (nanor1/step.py):
  collect  P prompts x G completions sampled by the policy itself (nanor1/rollout.py), each rank its own slice
           of whole groups, scored by the task's rules (nanor1/tasks/, in a killable worker process).
  score    advantages within each group (nanor1/grpo.py); the old and reference log-probs when needed.
  update   mu passes over the batch in mini-batches (one AdamW step each), each accumulated over micro-batches.
--algo sft (train_sft) replaces collect and score by the next --prompts_per_step examples of --data; update
runs with nanor1/sft.py's learner.
"""
import json
import math
import sys
import time
from pathlib import Path

import torch

from nanor1 import distributed, lora, sft
from nanor1.checkpoint import make_run_folder, resume_run, save_checkpoint
from nanor1.config import parse_args, save as save_config
from nanor1.data import PromptStream, encode_prompts, fit_prompts, prompt_budget
from nanor1.evaluate import evaluate
from nanor1.grpo import flat_groups
from nanor1.model import load_model_and_tokenizer
from nanor1.ppo import CriticLearner, load_critic
from nanor1.precision import choose as choose_precision
from nanor1.reflection import REFLECTION_MARKERS, reflection_counts, reflection_rates
from nanor1.rollout import Stop, check_memory
from nanor1.schedule import length_at, lr_at, parse_length_schedule
from nanor1.step import PolicyLearner, Run, Sums, collect, score, update
from nanor1.tasks import get_task
from nanor1.verifier import Verifier
from nanor1.weights import load_config


def main(argv=None):
    # ----------------------------------------------------------------------------- set-up
    # Inputs first (a bad --model or --task fails before anything is written), then the run folder.
    cfg = parse_args(argv)
    if cfg.dry_run:
        return dry_run(cfg)
    if cfg.algo == "sft":  # supervised: the same machinery, another loop (below)
        return train_sft(cfg)
    d, prec, policy, tok = start(cfg)
    run = prepare(cfg, d, prec, policy, tok)
    critic = load_critic(cfg.critic_model or cfg.model, tok.vocab_size, policy.config.max_position_embeddings,
                         device=d.device, policy_path=cfg.model) if cfg.algo == "ppo" else None
    out = run_folder(cfg, d, run.task)
    learners, ref = build(cfg, d, prec, run, policy, critic)
    state = dict(step=0, cursor=0, opt_step=0)
    if cfg.resume:
        state = resume_run(cfg, out, policy, learners[0].opt, d, critic, critic and learners[1].opt)
    step, cursor, opt_step, failed = state["step"], state["cursor"], state["opt_step"], 0
    log, lr = Log(out, d), schedule_of(cfg, d)
    if step == 0:
        log.eval(step, run_eval(run, policy))

    # ----------------------------------------------------------------------------- the loop
    while step < cfg.steps:
        step += 1
        t0, seen = time.time(), dict(run.verifier.stats)  # cumulative counters: this step's are the difference
        budget = length_at(step, cfg.max_completion_len, run.length_schedule)  # DeepScaleR: 8k -> 16k -> 24k
        groups, generated, cursor = collect(run, policy, step, cursor, budget)
        t1 = time.time()
        batch, sums = score(run, groups, policy, ref, learners[1] if critic else None, budget)
        warming = critic is not None and step <= cfg.critic_warmup  # PPO's warm-up trains the critic alone
        active = learners[1:] if warming else learners
        opt_step = update(run, batch, active, opt_step, lr, sums, budget)
        t2 = time.time()
        row = step_metrics(run, sums, groups, generated, seen, step)
        row.update(lr=lr(max(opt_step - 1, 0)), max_completion_len=budget, rollout_s=t1 - t0, train_s=t2 - t1)
        log.step(row, generated, cfg, tokens_per_s=row["response_length"] * row["completions"] / max(t2 - t0, 1e-9))
        failed = count_failed(failed, row.get("skipped_steps", 0), row.get("opt_steps", 0), step)
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
            log.eval(step, run_eval(run, policy))
        if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps:
            trainer = {"step": step, "cursor": cursor, "opt_step": opt_step, "config": vars(cfg)}
            path = save_checkpoint(out, step, policy, learners[0].opt, trainer, tok, d, keep_last=cfg.keep_last,
                                   critic=critic, critic_optimizer=critic and learners[1].opt)
            log.say(f"saved {path}")

    # ----------------------------------------------------------------------------- the end
    run.verifier.close()
    distributed.teardown(d)
    return out


def count_failed(failed, skipped, opt_steps, step):
    """Steps in a row whose every optimiser step was skipped (a non-finite gradient norm): such a step changed
    nothing, and three in a row is a run that cannot train (an lr of inf, NaN weights): stop rather than save."""
    failed = failed + 1 if skipped and skipped == opt_steps else 0
    if failed == 3:
        raise ValueError(f"step {step}: the gradient norm was not finite in the last 3 steps (check --lr, the "
                         "model's weights, --grad_clip): stopping without saving")
    return failed


def train_sft(cfg):
    """--algo sft: supervised fine-tuning on --data (nanor1/sft.py). Sharding, checkpoints, resume, the lr schedule
    and the held-out accuracy (with --task) are RL's; a step is one optimiser step on --prompts_per_step examples."""
    # ----------------------------------------------------------------------------- set-up
    d, prec, policy, tok = start(cfg)
    context = policy.config.max_position_embeddings
    examples = sft.read_examples(cfg.data, tok, context, cfg.drop_long)
    held_out = sft.read_examples(cfg.eval_data, tok, context, cfg.drop_long, "--eval_data") if cfg.eval_data else []
    task = make_task(cfg) if cfg.task else None
    run = Run(cfg=cfg, d=d, prec=prec, tok=tok, task=task, rows=examples, prompts=[],
              stream=PromptStream(len(examples), cfg.seed), verifier=task and Verifier(task), stop=None,
              eval_rows=held_out_rows(cfg, task, tok, context - cfg.max_completion_len) if task else [])
    out = run_folder(cfg, d, task)
    learner = sft.Learner(distributed.shard(policy, d, prec), adamw(policy, cfg, cfg.lr), run)
    state = resume_run(cfg, out, policy, learner.opt, d) if cfg.resume else dict(step=0, cursor=0, opt_step=0)
    step, cursor, opt_step, failed = state["step"], state["cursor"], state["opt_step"], 0
    log, lr = Log(out, d), schedule_of(cfg, d)
    log.say(sft.describe(examples, held_out, cfg))
    if step == 0:
        log.eval(step, sft_eval(run, policy, held_out))

    # ----------------------------------------------------------------------------- the loop
    while step < cfg.steps:
        step += 1
        t0, sums = time.time(), Sums()
        batch, cursor = sft.next_batch(run, cursor)
        opt_step = update(run, batch, [learner], opt_step, lr, sums)
        t = sums.reduce(d)
        row = {"step": step, "loss": t["loss"], "tokens": int(t["tokens"]), "lr": lr(opt_step - 1),
               "grad_norm": taken_mean(t, "grad_norm"), "epoch": cursor / len(examples),
               "train_s": time.time() - t0}
        if t["skipped_steps"]:
            row["skipped_steps"] = int(t["skipped_steps"] / d.world_size)
        log.sft_step(row)
        failed = count_failed(failed, row.get("skipped_steps", 0), t["opt_steps"] / d.world_size, step)
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
            log.eval(step, sft_eval(run, policy, held_out))
        if (cfg.save_every and step % cfg.save_every == 0) or step == cfg.steps:
            trainer = {"step": step, "cursor": cursor, "opt_step": opt_step, "config": vars(cfg)}
            path = save_checkpoint(out, step, policy, learner.opt, trainer, tok, d, keep_last=cfg.keep_last)
            log.say(f"saved {path}")

    # ----------------------------------------------------------------------------- the end
    if task:
        run.verifier.close()
    distributed.teardown(d)
    return out


def sft_eval(run, policy, held_out):
    """SFT's evaluation row: the NLL per target token on --eval_data, and with --task the held-out accuracy."""
    row = {"eval_loss": sft.eval_loss(run, policy, held_out)} if held_out else {}
    return {**row, **(run_eval(run, policy) if run.task else {})}


def start(cfg):
    """This process: its rank, threads, seed and precision, and the policy (with its LoRA adapters)."""
    d = distributed.setup()
    check_world(cfg, d)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    prec = choose_precision(d.device, cfg.precision)
    # fp32 master weights; under LoRA the base is frozen in the compute dtype and only the adapters are fp32
    policy, tok = load_model_and_tokenizer(cfg.model, prec.compute if cfg.lora_rank else torch.float32, d.device)
    policy.gradient_checkpointing = cfg.grad_checkpointing
    if cfg.lora_rank:  # before sharding and the optimiser; the seed above gives every rank the same A
        lora.apply_lora(policy, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets, base=cfg.model)
    return d, prec, policy, tok


def build(cfg, d, prec, run, policy, critic):
    """The learners (the policy, and PPO's critic beside it) sharded with their optimisers, and the frozen KL
    reference, which exists only when a KL term is on."""
    learners = [PolicyLearner(distributed.shard(policy, d, prec), adamw(policy, cfg, cfg.lr), run)]  # (LoRA: adapters)
    if critic is not None:  # PPO: the critic trains beside the policy, on the same batches (nanor1/ppo.py)
        critic.gradient_checkpointing = cfg.grad_checkpointing
        learners.append(CriticLearner(distributed.shard(critic, d, prec), adamw(critic, cfg, cfg.critic_lr), run))
    if cfg.beta and cfg.lora_rank:  # the KL reference for free: the policy with its adapters disabled
        return learners, lora.BaseView(policy)
    ref = load_model_and_tokenizer(cfg.model, torch.float32, d.device)[0].requires_grad_(False) if cfg.beta else None
    return learners, distributed.shard(ref, d, prec, frozen=True)


def adamw(model, cfg, lr):
    return torch.optim.AdamW(lora.trainable(model), lr=lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay,
                             eps=1e-8)


def schedule_of(cfg, d):
    """lr(opt_step): --lr_schedule over the optimiser steps the run plans (steps x mu x mini-batches)."""
    minis = cfg.prompts_per_step * cfg.group_size // cfg.mini_batch_size if cfg.mini_batch_size else 1
    total = cfg.steps * cfg.mu * minis
    return lambda opt_step: lr_at(opt_step, total, cfg.lr, cfg.lr_schedule, cfg.warmup_steps, cfg.warmup_ratio,
                                  cfg.min_lr_ratio)


# The Hugging Face repositories of the recipes' models (recipes/README.md), for --dry_run's advice.
HUB_IDS = {"Qwen2.5-3B": "Qwen/Qwen2.5-3B", "Qwen2.5-3B-Instruct": "Qwen/Qwen2.5-3B-Instruct",
           "Qwen2.5-7B": "Qwen/Qwen2.5-7B", "Qwen2.5-Math-7B": "Qwen/Qwen2.5-Math-7B",
           "DeepSeek-R1-Distill-Qwen-1.5B": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
           "Qwen2.5-Math-7B-RoPE-300k": "open-r1/Qwen2.5-Math-7B-RoPE-300k"}


def dry_run(cfg):
    """--dry_run: the config checked whole, the model and data looked for (not loaded), the resolved config
    printed as one JSON object on stdout; what is missing is said on stderr, one line each. Nothing written."""
    missing = []
    for flag, folder in (("--model", cfg.model), ("--critic_model", cfg.critic_model if cfg.algo == "ppo" else "")):
        if folder and not (Path(folder) / "config.json").is_file():
            hub = HUB_IDS.get(Path(folder).name, Path(folder).name)
            missing.append(f"{flag}: model folder {folder} not found: download {hub} into it "
                           f"(huggingface-cli download {hub} --local-dir {folder})")
        elif folder:
            context = load_config(folder).max_position_embeddings  # a broken config.json is an error, not missing
            prompt_budget([], cfg.max_prompt_len, context, *completion_budget(cfg))  # the schedule fits the context
    for flag, file in (("--data", cfg.data), ("--eval_data", cfg.eval_data)):
        if file and not Path(file).is_file():
            missing.append(f"{flag}: data file {file} not found")
    if cfg.task and not (cfg.task == "jsonl" and missing):  # (sft without --task has none)
        task = make_task(cfg)  # the task exists, its data is there, --reward_fn loads
        task.eval_rows() if cfg.algo == "sft" else task.train_rows()
    print(json.dumps(vars(cfg)))
    for line in missing:
        print(f"missing: {line}", file=sys.stderr)
    return None


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
    if cfg.prompts_per_step // d.world_size * cfg.group_size > 10**7:  # before any list of that size is built
        raise ValueError(f"--prompts_per_step {cfg.prompts_per_step} x --group_size {cfg.group_size} completions per "
                         "step: more than 10 million sequences per rank cannot fit any machine")


def make_task(cfg):
    return get_task(cfg.task, cfg.template or None, grader=cfg.grader, reward_fn=cfg.reward_fn, data=cfg.data,
                    eval_data=cfg.eval_data, answer_key=cfg.answer_key, reward=cfg.reward)


def prepare(cfg, d, prec, policy, tok) -> Run:
    """The task's prompts, measured once: the budget fits the split (or says why not) and the loop never
    skips a prompt. The held-out rows likewise fit the context."""
    task = make_task(cfg)
    schedule = parse_length_schedule(cfg.max_completion_len_schedule)
    longest, what = completion_budget(cfg)
    context = policy.config.max_position_embeddings
    rows = task.train_rows()
    prompts = encode_prompts(task, tok, rows)
    budget = prompt_budget(prompts, cfg.max_prompt_len, context, longest, what)
    say = print if d.is_main else lambda *_: None
    rows, prompts = fit_prompts(rows, prompts, budget, cfg.drop_long, say=say)
    cfg.max_prompt_len = budget  # config.json records the budget used
    check_memory(policy.config, cfg.prompts_per_step // d.world_size * cfg.group_size, budget + longest, prec.compute,
                 d.device, "a step's rollout")
    return Run(cfg=cfg, d=d, prec=prec, tok=tok, task=task, rows=rows, prompts=prompts,
               stream=PromptStream(len(rows), cfg.seed), verifier=Verifier(task),
               stop=Stop(eos=tok.eos_token_ids, strings=task.stop, decode=tok.decode),
               eval_rows=held_out_rows(cfg, task, tok, context - longest, say), length_schedule=schedule)


def completion_budget(cfg):
    """The longest completion budget of the run (the schedule's last stage, DeepScaleR's 24k) and its option."""
    longest = max([cfg.max_completion_len] + [n for _, n in parse_length_schedule(cfg.max_completion_len_schedule)])
    what = "--max_completion_len" if longest == cfg.max_completion_len else "--max_completion_len_schedule's last stage"
    return longest, what


def held_out_rows(cfg, task, tok, budget, say=print):
    """The first --eval_size rows of the task's eval split whose prompts fit `budget` tokens (or one error)."""
    rows = task.eval_rows()[:cfg.eval_size]
    return fit_prompts(rows, encode_prompts(task, tok, rows), budget, cfg.drop_long, "held-out", say)[0]


def run_folder(cfg, d, task) -> Path:
    """OUT (rank 0's timestamp names a new one); config.json records what was resolved, not ""."""
    out = Path(distributed.all_gather_objects(cfg.out or time.strftime("out/run-%Y%m%d-%H%M%S"), d)[0])
    cfg.out, cfg.template = str(out), task.template if task else cfg.template
    if not cfg.resume and (out / "metrics.jsonl").exists():
        raise ValueError(f"{out} already holds a run: continue it with --resume latest, or choose another --out")
    make_run_folder(out)  # refuses a file, a model's folder, a place nothing can be written to
    if d.is_main:
        if not cfg.resume:  # a resume writes it after comparing with the checkpoint's settings
            save_config(cfg, out / "config.json")
        print(json.dumps(vars(cfg)))
    return out


def run_eval(run, policy):
    """Greedy pass@1 on the held-out rows, with the rollouts' precision and budget; with --eval_samples also
    pass@1 (the mean over samples) and pass@n at --eval_temperature, as R1-Zero papers report."""
    cfg = run.cfg
    greedy, _ = evaluate(policy, run.tok, run.task, run.eval_rows, run.verifier, run.prec, cfg.max_completion_len,
                         d=run.d)
    row = {"eval_accuracy": greedy["pass@1"], "problems": greedy["problems"]}
    if cfg.eval_samples:
        sampled, _ = evaluate(policy, run.tok, run.task, run.eval_rows, run.verifier, run.prec,
                              cfg.max_completion_len, num_samples=cfg.eval_samples, temperature=cfg.eval_temperature,
                              seed=cfg.seed, d=run.d)
        row.update({f"eval_pass@{k}": sampled[f"pass@{k}"] for k in (1, cfg.eval_samples)})
    return row


def taken_mean(t, key, prefix=""):
    """The mean of `key` over the optimiser steps actually taken; NaN (null in metrics.jsonl) when every one was
    skipped for a non-finite gradient norm (their norms are not averaged in: one inf would hide the rest)."""
    taken = t[prefix + "opt_steps"] - t.get(prefix + "skipped_steps", 0)
    return t[key] / taken if taken else float("nan")


def step_metrics(run, sums, groups, generated, seen, step):
    """One row of metrics.jsonl: every rank's statistics reduced by name in one collective, then divided out."""
    task, stats = run.task, run.verifier.stats
    correct = [task.is_correct(s.reward) for s in generated]
    sums.add(completions=len(generated), reward=sum(s.reward for s in generated), correct=sum(correct),
             completion_tokens=sum(len(s.completion) for s in generated), groups=len(groups),
             verifier_timeouts=stats["timeouts"] - seen["timeouts"], verifier_errors=stats["errors"] - seen["errors"],
             verifier_budget_skipped=stats.get("budget_skipped", 0) - seen.get("budget_skipped", 0))
    if run.cfg.group_size > 1:  # the task rewards of every group generated, dropped ones included (DAPO's view)
        r = torch.tensor([s.reward for s in generated], dtype=torch.float64).view(-1, run.cfg.group_size)  # (P, G)
        sums.add(generated_groups=len(r), reward_std=r.std(1).sum() if len(r) else 0.0,
                 zero_adv_groups=flat_groups(r).sum())
    # counts of reflecting completions (nanor1/reflection.py); counts add over ranks, the rates come after
    markers = getattr(task, "reflection_markers", REFLECTION_MARKERS)  # a duck-typed task need not name any
    sums.add(**reflection_counts([s.text for s in generated], correct, markers))
    if run.cfg.dynamic_sampling:  # the kept groups alone, beside everything generated
        kept = [s for g in groups for s in g]
        sums.add(kept=len(kept), reward_kept=sum(s.reward for s in kept),
                 correct_kept=sum(task.is_correct(s.reward) for s in kept))
    t = sums.reduce(run.d)
    n, W = max(t["completions"], 1), run.d.world_size
    row = {"step": step, "reward": t["reward"] / n, "accuracy": t["correct"] / n,
           "response_length": t["completion_tokens"] / n, "completions": int(t["completions"]),
           "groups": int(t["groups"])}
    row.update(reflection_rates(t, int(t["completions"])))  # None where no completion (or all) reflect
    per_token = lambda k, n_key="tokens": t[k] / max(t[n_key], 1)  # noqa: E731
    if "tokens_sampled" in t:
        row.update(entropy=per_token("entropy", "tokens_sampled"), logprob_mismatch=per_token("mismatch", "tokens_sampled"))
    if "opt_steps" in t:  # the policy took optimiser steps (not in PPO's critic warm-up, nor with no group kept)
        steps = t["opt_steps"] / W
        row.update(loss=t["loss"] / steps, grad_norm=taken_mean(t, "grad_norm"), opt_steps=int(steps),
                   skipped_steps=int(t["skipped_steps"] / W), ratio_max=t["ratio_max"],
                   clip_frac=per_token("clip_frac_low") + per_token("clip_frac_high"))
        row.update({k: per_token(k) for k in ("clip_frac_low", "clip_frac_high", "ratio_mean", "kl", "dual_clip_frac",
                                              "tis_weight_mean", "tis_capped_frac") if k in t})
    if "reward_kl_tokens" in t:  # --kl_in_reward (and reinforce_pp): the KL the rewards paid, per token
        row["kl"] = per_token("reward_kl", "reward_kl_tokens")
    if "critic_opt_steps" in t:  # PPO
        steps = t["critic_opt_steps"] / W
        row.update(value_loss=t["value_loss"] / steps, critic_grad_norm=taken_mean(t, "critic_grad_norm", "critic_"),
                   value_clip_frac=per_token("value_clip_frac", "critic_tokens"))
    if "value_tokens" in t:
        row.update(explained_variance=t["explained_variance"], values_mean=per_token("values_sum", "value_tokens"),
                   returns_mean=per_token("returns_sum", "value_tokens"))
    if "generated_groups" in t:  # mean within-group std, and the share of groups with no signal (all equal)
        row.update(reward_std=t["reward_std"] / max(t["generated_groups"], 1),
                   zero_adv_frac=t["zero_adv_groups"] / max(t["generated_groups"], 1))
    if "overlong_penalty" in t:
        row["overlong_penalty"] = t["overlong_penalty"] / n
    if "kept" in t:
        row.update(reward_kept=t["reward_kept"] / max(t["kept"], 1), accuracy_kept=t["correct_kept"] / max(t["kept"], 1))
        # collect() stops refilling once every rank holds its share, so fewer groups means the refill cap was hit
        row["refill_cap_hit"] = int(row["groups"] < run.cfg.prompts_per_step)
    if t["verifier_timeouts"] or t["verifier_errors"] or t["verifier_budget_skipped"]:  # rewards scored 0 because
        # the check hung, raised, or the round's budget ran out
        row.update(verifier_timeouts=int(t["verifier_timeouts"]), verifier_errors=int(t["verifier_errors"]),
                   verifier_budget_skipped=int(t["verifier_budget_skipped"]), verifier_last_error=stats["last_error"])
    return row


def strict(row):
    """A metrics row as strict JSON: a non-finite number (a skipped step's grad_norm) is written as null."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


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
                f.write(json.dumps(strict(row), allow_nan=False) + "\n")

    def eval(self, step, row):
        problems = row.pop("problems", None)
        if not row:  # sft with neither --eval_data nor --task: nothing to evaluate
            return
        self.write("metrics.jsonl", {"step": step, **row})
        sampled = " | ".join(f"{k[5:]} {v:.3f}" for k, v in row.items() if k.startswith("eval_pass@"))
        fields = [f"step {step:4d}"] + ([f"eval loss {row['eval_loss']:.4f}"] if "eval_loss" in row else [])
        if "eval_accuracy" in row:
            fields.append(f"eval greedy pass@1 {row['eval_accuracy']:.3f} on {problems} held-out problems")
        self.say(" | ".join(fields + ([f"sampled {sampled}"] if sampled else [])))

    def sft_step(self, row):
        self.write("metrics.jsonl", row)
        if row.get("skipped_steps"):
            self.say(f"warning: step {row['step']}: optimiser step skipped: the gradient norm was not finite")
        self.say(f"step {row['step']:4d} | loss {row['loss']:.4f} | tokens {row['tokens']} | gnorm "
                 f"{row['grad_norm']:.3f} | lr {row['lr']:.1e} | epoch {row['epoch']:.2f} | train {row['train_s']:.1f}s"
                 f" | {row['tokens'] / max(row['train_s'], 1e-9):.0f} tok/s")

    def step(self, row, generated, cfg, tokens_per_s):
        self.write("metrics.jsonl", row)
        if "verifier_timeouts" in row:
            self.say(f"warning: step {row['step']}: {row['verifier_timeouts']} reward checks timed out, "
                     f"{row['verifier_errors']} raised (last: {row['verifier_last_error']}), "
                     f"{row['verifier_budget_skipped']} not checked within --reward_budget_s")
        if row.get("refill_cap_hit"):
            self.say(f"warning: step {row['step']}: dynamic sampling kept {row['groups']} of {cfg.prompts_per_step} "
                     f"groups after --max_refill_rounds {cfg.max_refill_rounds}: training on those")
        if row.get("skipped_steps"):
            self.say(f"warning: step {row['step']}: {row['skipped_steps']} of {row['opt_steps']} optimiser steps "
                     "skipped: the gradient norm was not finite")
        fields = [f"step {row['step']:4d}", f"reward {row['reward']:.3f}", f"acc {row['accuracy']:.3f}",
                  f"len {row['response_length']:5.1f}"]
        if cfg.max_completion_len_schedule:  # DeepScaleR's stages: the budget this step sampled with
            fields.append(f"budget {row['max_completion_len']}")
        if row.get("reflection_rate") is not None:  # share of completions with a self-check marker
            fields.append(f"refl {row['reflection_rate']:.2f}")
        if "kl" in row:
            fields.append(f"kl {row['kl']:.4f}")
        if "entropy" in row:
            fields.append(f"ent {row['entropy']:.3f}")
        if "opt_steps" in row:
            fields += [f"clip {row['clip_frac']:.3f}", f"gnorm {row['grad_norm']:.3f}"]
        if "value_loss" in row:
            fields += [f"vloss {row['value_loss']:.4f}", f"ev {row['explained_variance']:.2f}"]
        fields += [f"lr {row['lr']:.1e}", f"rollout {row['rollout_s']:.1f}s", f"train {row['train_s']:.1f}s",
                   f"{tokens_per_s:.0f} tok/s"]
        self.say(" | ".join(fields))
        if cfg.log_samples_every and row["step"] % cfg.log_samples_every == 0 and generated:
            for s in generated[:2]:
                self.write("samples.jsonl", {"step": row["step"], "reward": s.reward, "completion": s.text})
                self.say(f"  [reward {s.reward:.1f}] {s.text!r}")


if __name__ == "__main__":
    distributed.run_main(main)  # bad input: one `error:` line, exit 2 (see there)
