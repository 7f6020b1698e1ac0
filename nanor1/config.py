"""The training configuration: one typed dataclass, each field with its one-line help, and a tiny
`--key value` parser over its fields. The resolved config is printed and saved as OUT/config.json.

The defaults are the CPU demo (`python train.py`): the shipped tiny base on its arithmetic task. For a real
Qwen checkpoint set at least --model, --task, --lr (about 1e-6) and --max_completion_len (about 1024)."""
import dataclasses
import json
import sys
from dataclasses import dataclass, fields


@dataclass
class TrainConfig:
    # --- what to train, and where
    model: str = "data/tiny"  # HF-layout model folder (config.json, model.safetensors, tokenizer files)
    task: str = "arithmetic"  # task name from the registry (nanor1/tasks.py): arithmetic, countdown, gsm8k, math
    template: str = ""  # prompt template of the task ("" = the task's default: base or instruct)
    out: str = ""  # output folder ("" = a new timestamped folder under out/)
    resume: str = ""  # "latest" = the newest checkpoint in --out, or a checkpoint folder; "" = start fresh
    steps: int = 100  # training steps; each generates a rollout batch, scores it, then runs mu passes of updates
    seed: int = 0  # seeds data order, sampling and init of everything random
    threads: int = 2  # torch CPU threads (0 = torch's default); fixed so CPU runs are reproducible
    # --- rollouts
    prompts_per_step: int = 32  # P: prompts per step (over all ranks)
    group_size: int = 8  # G: completions per prompt
    max_prompt_len: int = 128  # longer prompts are skipped (counted in the log); prompt + completion <= context
    max_completion_len: int = 48  # generation budget per completion (also dr_grpo's max_len); ~1024 for real tasks
    temperature: float = 1.0  # rollout temperature; the trainer's log-probs use the same
    top_p: float = 1.0  # rollout nucleus sampling (1 = off)
    top_k: int = 0  # rollout top-k (0 = off)
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal, refill with new prompts
    max_refill_rounds: int = 3  # cap on dynamic-sampling refills per step
    mask_truncated: bool = False  # no loss on completions cut by max_completion_len (DAPO overlong filter)
    # --- the objective
    loss_type: str = "grpo"  # grpo (per-sequence mean), dapo (per-token), dr_grpo (sum / (B * max_len))
    scale_rewards: bool = True  # divide advantages by the group std (False = Dr. GRPO)
    clip_low: float = 0.2  # ratio clip below: 1 - clip_low
    clip_high: float = 0.2  # ratio clip above: 1 + clip_high (DAPO clip-higher: 0.28)
    beta: float = 0.0  # KL(pi || ref) weight, k3 estimator; > 0 keeps a frozen reference model
    mu: int = 1  # passes over each rollout batch (PPO epochs)
    # --- optimisation
    lr: float = 3e-5  # peak AdamW learning rate (the tiny demo's; about 1e-6 for 0.5B-7B Qwen models)
    warmup_steps: int = 0  # linear warm-up (in optimiser steps) from 0 to lr, then constant
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.99  # AdamW beta2
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    mini_batch_size: int = 0  # sequences per optimiser step, over all ranks (0 = the whole rollout batch)
    micro_batch_size: int = 16  # sequences per forward/backward on each rank (memory knob, no effect on the math)
    grad_checkpointing: bool = False  # recompute each block in backward: activation memory / layers
    # --- evaluation, logging, checkpoints
    eval_every: int = 10  # greedy pass@1 on the held-out set every N steps (0 = only at start and end)
    eval_size: int = 200  # held-out problems evaluated (the first N of the task's fixed eval split)
    log_samples_every: int = 10  # write a few decoded rollouts to samples.jsonl every N steps
    save_every: int = 50  # checkpoint every N steps (0 = only at the end)
    keep_last: int = 2  # checkpoints kept; older ones are pruned


CHOICES = {"loss_type": ("grpo", "dapo", "dr_grpo")}


def validate(cfg: TrainConfig):
    """One clear error per bad value."""
    positive = ["steps", "prompts_per_step", "group_size", "max_prompt_len", "max_completion_len", "mu",
                "micro_batch_size", "eval_size"]
    for name in positive:
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(cfg, name)}")
    for name in ["threads", "warmup_steps", "eval_every", "save_every", "mini_batch_size", "max_refill_rounds",
                 "log_samples_every", "top_k"]:
        if getattr(cfg, name) < 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(cfg, name)}")
    for name, allowed in CHOICES.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    if cfg.group_size < 2:
        raise ValueError("--group_size must be >= 2: GRPO's advantage compares completions within a group")
    if not 0 < cfg.top_p <= 1:
        raise ValueError(f"--top_p must be in (0, 1], got {cfg.top_p}")
    if cfg.temperature <= 0:
        raise ValueError(f"--temperature must be > 0 for RL rollouts, got {cfg.temperature}")
    if not (0 <= cfg.clip_low < 1 and cfg.clip_high >= 0):
        raise ValueError(f"--clip_low must be in [0, 1) and --clip_high >= 0, got {cfg.clip_low}, {cfg.clip_high}")
    if cfg.lr <= 0 or cfg.beta < 0 or cfg.weight_decay < 0 or cfg.grad_clip < 0:
        raise ValueError("--lr must be > 0 and --beta, --weight_decay, --grad_clip >= 0")
    if cfg.keep_last < 1:
        raise ValueError(f"--keep_last must be >= 1, got {cfg.keep_last}")
    batch = cfg.prompts_per_step * cfg.group_size
    if cfg.mini_batch_size and (batch % cfg.mini_batch_size or cfg.mini_batch_size % cfg.group_size):
        raise ValueError(f"--mini_batch_size {cfg.mini_batch_size} must divide the rollout batch "
                         f"({cfg.prompts_per_step} x {cfg.group_size} = {batch}) into whole groups")


def parse_args(argv=None, cls=TrainConfig):
    """`--key value` for every field; a bare `--flag` sets a bool to true (and `--resume` to 'latest')."""
    argv = sys.argv[1:] if argv is None else list(argv)
    types = {f.name: f.type for f in fields(cls)}
    if argv and argv[0] in ("-h", "--help"):
        print(help_text(cls))
        sys.exit(0)
    values, i = {}, 0
    while i < len(argv):
        key = argv[i]
        if not key.startswith("--") or key[2:].replace("-", "_") not in types:
            raise ValueError(f"unknown argument {key!r} (see --help)")
        name = key[2:].replace("-", "_")
        typ = types[name]
        has_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
        if not has_value:
            if typ not in ("bool", bool) and name != "resume":
                raise ValueError(f"--{name} needs a value")
            values[name] = True if name != "resume" else "latest"
            i += 1
            continue
        raw = argv[i + 1]
        try:
            if typ in ("bool", bool):
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                values[name] = raw.lower() in ("true", "1")
            else:
                values[name] = {"int": int, "float": float, "str": str}.get(typ, typ)(raw)
        except ValueError:
            raise ValueError(f"--{name} expects {getattr(typ, '__name__', typ)}, got {raw!r}") from None
        i += 2
    cfg = cls(**values)
    validate(cfg)
    return cfg


def help_text(cls=TrainConfig):
    """The fields with their comments, read from this file (one source of truth for the help)."""
    import inspect
    src = inspect.getsource(cls)
    lines = ["usage: train.py [--key value ...]"]
    for line in src.splitlines():
        s = line.strip()
        if s.startswith("# ---"):
            lines.append("\n" + s[2:])
        elif ":" in s and "#" in s and not s.startswith(("#", "class", '"""')):
            decl, comment = s.split("#", 1)
            lines.append(f"  --{decl.split(':')[0].strip():22s} {decl.split('=')[-1].strip():>12s}  {comment.strip()}")
    return "\n".join(lines)


def save(cfg, path):
    with open(path, "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2)
