"""Every configuration is a typed dataclass whose fields carry a one-line comment:

    ModelConfig    read from a checkpoint's config.json (nanor1/weights.py), no field derived silently
    TrainConfig    train.py's options; the comments are its --help, the resolved values OUT/config.json
    SampleConfig   sample.py's options

`parse_args(argv, cls)` is the one command-line parser for both entry scripts: `--key value` for every field,
a bare `--flag` for a bool.

TrainConfig's defaults are the CPU demo (`python train.py`): the shipped tiny base on its arithmetic task. For a
real Qwen checkpoint set at least --model, --task, --lr (about 1e-6) and --max_completion_len (about 1024)."""
import dataclasses
import inspect
import json
import sys
from dataclasses import dataclass, field, fields

from nanor1.grpo import LOSS_TYPES


@dataclass
class ModelConfig:
    """The architecture, built from a checkpoint's config.json by nanor1.weights.load_config."""
    model_type: str  # "qwen2" (QKV bias) or "qwen3" (QK-norm)
    vocab_size: int  # V: rows of the embedding (151936 for Qwen2.5; the tokenizer uses fewer)
    hidden_size: int  # C
    intermediate_size: int  # MLP width
    num_hidden_layers: int  # L
    num_attention_heads: int  # H
    num_key_value_heads: int  # K (H % K == 0)
    head_dim: int  # D: explicit in Qwen3, where it need not equal C / H
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int  # the context length the model was trained for
    tie_word_embeddings: bool  # lm_head shares the embedding matrix
    attention_bias: bool  # bias on q/k/v projections (Qwen2: True, Qwen3: False)
    qk_norm: bool  # RMSNorm over each head of q and k before rope (Qwen3)
    raw: dict = field(default_factory=dict, repr=False)  # the config.json as read, written back on save


@dataclass
class TrainConfig:
    # --- what to train, and where
    model: str = "data/tiny"  # HF-layout model folder (config.json, model.safetensors, tokenizer files)
    task: str = "arithmetic"  # task name (nanor1/tasks/__init__.py): arithmetic, countdown, gsm8k, math, ...
    template: str = ""  # prompt template of the task ("" = the task's default: base or instruct)
    out: str = ""  # output folder ("" = a new timestamped folder under out/)
    resume: str = ""  # "latest" = the newest checkpoint in --out, or a checkpoint folder; "" = start fresh
    steps: int = 100  # training steps; each generates a rollout batch, scores it, then runs mu passes of updates
    seed: int = 0  # seeds data order, sampling and init of everything random
    threads: int = 2  # torch CPU threads (0 = torch's default); fixed so CPU runs are reproducible
    precision: str = "auto"  # compute dtype: auto (bf16 on CUDA, fp32 on the CPU), bf16, fp32 (nanor1/precision.py)
    # --- rollouts
    prompts_per_step: int = 32  # P: prompts per step (over all ranks)
    group_size: int = 8  # G: completions per prompt
    max_prompt_len: int = 0  # prompt budget in tokens (0 = the split's longest prompt); longer ones: see drop_long
    drop_long: bool = False  # drop prompts longer than max_prompt_len from the split at start-up (else: an error)
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
    grad_clip: float = 1.0  # max global grad norm (0 = off); a non-finite norm skips the optimiser step
    mini_batch_size: int = 0  # sequences per optimiser step, over all ranks (0 = the whole rollout batch)
    micro_batch_size: int = 16  # sequences per forward/backward on each rank (memory knob, no effect on the math)
    grad_checkpointing: bool = False  # recompute each block in backward: activation memory / layers
    # --- evaluation, logging, checkpoints
    eval_every: int = 10  # greedy pass@1 on the held-out set every N steps (0 = only at start and end)
    eval_size: int = 200  # held-out problems evaluated (the first N of the task's fixed eval split)
    log_samples_every: int = 10  # write a few decoded rollouts to samples.jsonl every N steps
    save_every: int = 50  # checkpoint every N steps (0 = only at the end)
    keep_last: int = 2  # checkpoints kept; older ones are pruned

    def validate(self):
        """One clear error per bad value."""
        _at_least(self, 1, "steps", "prompts_per_step", "group_size", "max_completion_len", "mu", "micro_batch_size",
                  "eval_size", "keep_last")
        _at_least(self, 0, "threads", "max_prompt_len", "warmup_steps", "eval_every", "save_every", "mini_batch_size",
                  "max_refill_rounds", "log_samples_every", "top_k")
        _one_of(self, loss_type=LOSS_TYPES, precision=PRECISIONS)
        if self.group_size < 2:
            raise ValueError("--group_size must be >= 2: GRPO's advantage compares completions within a group")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}")
        if self.temperature <= 0:
            raise ValueError(f"--temperature must be > 0 for RL rollouts, got {self.temperature}")
        if not (0 <= self.clip_low < 1 and self.clip_high >= 0):
            raise ValueError(f"--clip_low must be in [0, 1) and --clip_high >= 0, got {self.clip_low}, "
                             f"{self.clip_high}")
        if self.lr <= 0 or self.beta < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("--lr must be > 0 and --beta, --weight_decay, --grad_clip >= 0")
        batch = self.prompts_per_step * self.group_size
        if self.mini_batch_size and (batch % self.mini_batch_size or self.mini_batch_size % self.group_size):
            raise ValueError(f"--mini_batch_size {self.mini_batch_size} must divide the rollout batch "
                             f"({self.prompts_per_step} x {self.group_size} = {batch}) into whole groups")


@dataclass
class SampleConfig:
    model: str = ""  # HF-layout folder ("" = the newest out/*/ckpt-*, else data/tiny)
    prompt: str = ""  # prompt text ("" = a held-out problem of --task)
    chat: bool = False  # wrap --prompt in the ChatML template
    task: str = "arithmetic"  # task for --eval and for the default prompt
    template: str = ""  # the task's prompt template ("" = its default: base or instruct)
    split: str = ""  # evaluation split of --task ("" = its first)
    eval: bool = False  # evaluate on --task instead of sampling one prompt
    limit: int = 0  # evaluate only the first N problems (0 = all)
    out: str = ""  # per-problem JSON lines of --eval ("" = out/eval-TASK-TIME.jsonl)
    max_new_tokens: int = 0  # generation budget (0 = the task's: 64 on arithmetic, 1024 on the real tasks)
    temperature: float = -1.0  # 0 = greedy (-1 = the default: 1.0 when sampling, 0 for --eval)
    top_k: int = 0  # top-k sampling (0 = off)
    top_p: float = 1.0  # nucleus sampling (1 = off)
    num_samples: int = 1  # completions per prompt / problem
    batch_size: int = 64  # problems per generate call in --eval
    seed: int = 0  # seeds the sampler
    device: str = ""  # cpu, cuda, cuda:1 ("" = cuda when available)
    precision: str = "auto"  # compute dtype: auto (bf16 on CUDA, fp32 on the CPU), bf16, fp32

    def validate(self):
        _at_least(self, 1, "num_samples", "batch_size")
        _at_least(self, 0, "limit", "max_new_tokens", "top_k")
        _one_of(self, precision=PRECISIONS)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 0 and self.temperature != -1.0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")


PRECISIONS = ("auto", "bf16", "fp32")


def _at_least(cfg, low, *names):
    for name in names:
        if getattr(cfg, name) < low:
            raise ValueError(f"--{name} must be >= {low}, got {getattr(cfg, name)}")


def _one_of(cfg, **allowed):
    for name, choices in allowed.items():
        if getattr(cfg, name) not in choices:
            raise ValueError(f"--{name} must be one of {', '.join(choices)}, got {getattr(cfg, name)!r}")


def parse_args(argv=None, cls=TrainConfig):
    """`--key value` for every field of `cls`; a bare `--flag` sets a bool to true (and `--resume` to 'latest')."""
    argv = sys.argv[1:] if argv is None else list(argv)
    types = {f.name: f.type for f in fields(cls)}
    if argv and argv[0] in ("-h", "--help"):
        print(help_text(cls))
        sys.exit(0)
    values, i = {}, 0
    while i < len(argv):
        key = argv[i]
        name = key[2:].replace("-", "_")
        if not key.startswith("--") or name not in types:
            raise ValueError(f"unknown argument {key!r} (see --help)")
        typ = types[name]
        if i + 1 == len(argv) or argv[i + 1].startswith("--"):  # a bare flag
            if typ not in ("bool", bool) and name != "resume":
                raise ValueError(f"--{name} needs a value")
            values[name] = True if name != "resume" else "latest"
            i += 1
            continue
        values[name] = _convert(name, typ, argv[i + 1])
        i += 2
    cfg = cls(**values)
    cfg.validate()
    return cfg


def _convert(name, typ, raw):
    try:
        if typ in ("bool", bool):
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return raw.lower() in ("true", "1")
        return {"int": int, "float": float, "str": str}.get(typ, typ)(raw)
    except ValueError:
        raise ValueError(f"--{name} expects {getattr(typ, '__name__', typ)}, got {raw!r}") from None


def help_text(cls=TrainConfig):
    """The fields with their comments, read from this file (one source of truth for the help)."""
    lines = [f"usage: {'sample.py' if cls is SampleConfig else 'train.py'} [--key value ...]"]
    for line in inspect.getsource(cls).splitlines():
        s = line.strip()
        if s.startswith("def "):
            break
        if s.startswith("# ---"):
            lines.append("\n" + s[2:])
        elif ":" in s and "#" in s and not s.startswith(("#", "class", '"""')):
            decl, comment = s.split("#", 1)
            lines.append(f"  --{decl.split(':')[0].strip():22s} {decl.split('=')[-1].strip():>12s}  {comment.strip()}")
    return "\n".join(lines)


def save(cfg, path):
    with open(path, "w") as f:
        json.dump(dataclasses.asdict(cfg), f, indent=2)
