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
import math
import sys
from dataclasses import dataclass, field, fields

from nanor1.grpo import KL_ESTIMATORS, LOSS_TYPES, RATIO_LEVELS, SCALES
from nanor1.lora import check_options as check_lora_options
from nanor1.schedule import LR_SCHEDULES, lr_at, parse_length_schedule


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
    algo: str = "grpo"  # grpo, ppo (a learned critic, GAE), rloo, reinforce_pp (REINFORCE++), sft (supervised, --data)
    model: str = "data/tiny"  # HF-layout model folder (config.json, model.safetensors, tokenizer files)
    task: str = ""  # task (nanor1/tasks/): arithmetic, countdown, gsm8k, math, ..., jsonl ("" = arithmetic; sft: none)
    template: str = ""  # prompt template of the task ("" = the task's default: base or instruct)
    data: str = ""  # a JSONL file: the rows of --task jsonl, or the examples of --algo sft
    eval_data: str = ""  # a JSONL file held out for evaluation (--task jsonl, --algo sft)
    answer_key: str = "answer"  # --task jsonl: the field of a row that holds its gold answer
    reward: str = "math"  # --task jsonl: math (the MATH verifier), number (GSM8K-style), exact, countdown
    reward_fn: str = ""  # your own reward, "path/to/file.py:function" taking (completion, row) -> float
    grader: str = "builtin"  # answer checking for gsm8k, math and jsonl: builtin, or math_verify (pip install)
    reward_budget_s: float = 120.0  # wall-clock cap on one round's reward checks; the rest score 0, counted (0 = off)
    out: str = ""  # output folder ("" = a new timestamped folder under out/)
    resume: str = ""  # "latest" = the newest checkpoint in --out, or a checkpoint folder; "" = start fresh
    config: str = ""  # a TOML file of these fields (recipes/); options on the command line override it
    dry_run: bool = False  # check the config, the model and the data, print the resolved config, write nothing
    steps: int = 100  # training steps: rollouts, scores, mu passes of updates (sft: one optimiser step each)
    seed: int = 0  # seeds data order, sampling and init of everything random
    threads: int = 2  # torch CPU threads (0 = torch's default); fixed so CPU runs are reproducible
    precision: str = "auto"  # compute dtype: auto (bf16 on CUDA, fp32 on the CPU), bf16, fp32 (nanor1/precision.py)
    # --- rollouts
    prompts_per_step: int = 32  # P: prompts per step, over all ranks (sft: examples per optimiser step)
    group_size: int = 8  # G: completions per prompt
    max_prompt_len: int = 0  # prompt budget in tokens (0 = the split's longest prompt); longer ones: see drop_long
    drop_long: bool = False  # leave out prompts (SFT: rows) that do not fit, with a count (else: one clear error)
    max_completion_len: int = 48  # generation budget per completion (also dr_grpo's max_len); ~1024 for real tasks
    max_completion_len_schedule: str = ""  # "step:len,...", e.g. "1040:16384,1520:24576": budget from that step on
    temperature: float = 1.0  # rollout temperature; the trainer's log-probs use the same
    top_p: float = 1.0  # rollout nucleus sampling (1 = off)
    top_k: int = 0  # rollout top-k (0 = off)
    dynamic_sampling: bool = False  # DAPO: drop groups whose rewards are all equal, generate more until the batch is full
    max_refill_rounds: int = 3  # dynamic-sampling refills per step; at the cap: train on what was kept (refill_cap_hit)
    mask_truncated: bool = False  # no loss on completions cut by max_completion_len (DAPO overlong filter)
    overlong_buffer: int = 0  # DAPO soft overlong punishment over the budget's last N tokens (0 = off)
    overlong_penalty: float = 1.0  # reward subtracted at the full budget, linear over the buffer (DAPO: 1.0)
    # --- the objective
    loss_type: str = "grpo"  # grpo (per-sequence mean), dapo (per-token), dr_grpo (sum / (B * max_len))
    scale_rewards: str = "group"  # advantage std: group, batch (the whole step), none (Dr. GRPO); true/false = group/none
    clip_low: float = 0.2  # ratio clip below: 1 - clip_low
    clip_high: float = 0.2  # ratio clip above: 1 + clip_high (DAPO clip-higher: 0.28)
    clip_ratio_c: float = 0.0  # dual-clip: for A < 0 the loss is bounded at -A * c (0 = off; veRL: 3.0)
    ratio_level: str = "token"  # token, or sequence (GSPO: exp(mean log-ratio) per sequence)
    beta: float = 0.0  # KL(pi || ref) weight; > 0 keeps a frozen reference model
    kl_estimator: str = "k3"  # k1, k2, k3, low_var_kl (k3 capped at 10, veRL's); log-ratio clamped to +-20
    kl_in_reward: bool = False  # put beta * KL per token into the reward instead of the loss (veRL use_kl_in_reward)
    entropy_coef: float = 0.0  # entropy bonus: loss -= coef * entropy, aggregated like the policy term (0 = off)
    tis_cap: float = 0.0  # truncated importance sampling: weight tokens by min(pi_old / pi_sampler, C) (0 = off)
    mu: int = 1  # passes over each rollout batch (PPO epochs)
    # --- ppo: the critic
    critic_model: str = ""  # the critic's HF folder ("" = a copy of --model; its LM head becomes a value head)
    critic_lr: float = 1e-5  # the critic's AdamW learning rate (veRL, TinyZero)
    critic_warmup: int = 0  # the first N steps train only the critic
    gamma: float = 1.0  # GAE discount (ORZ, TinyZero, veRL: 1)
    lam: float = 1.0  # GAE lambda (ORZ, TinyZero, veRL: 1)
    value_clip: float = 0.5  # range of the clipped value loss around the old value (veRL: 0.5)
    # --- lora: low-rank adapters on a frozen base (nanor1/lora.py)
    lora_rank: int = 0  # r (0 = off: full fine-tuning)
    lora_alpha: int = 0  # scaling alpha / r (0 = 2r)
    lora_dropout: float = 0.0  # dropout on the adapters' input
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # linear layers that get adapters
    # --- optimisation
    lr: float = 3e-5  # peak AdamW learning rate (the tiny demo's; about 1e-6 for 0.5B-7B Qwen models)
    lr_schedule: str = "constant"  # constant, linear, cosine: decay after warm-up to min_lr_ratio * lr
    warmup_steps: int = 0  # linear warm-up (in optimiser steps) from 0 to lr
    warmup_ratio: float = 0.0  # warm-up as a fraction of all optimiser steps (instead of warmup_steps)
    min_lr_ratio: float = 0.0  # floor of the linear and cosine decay, as a fraction of lr
    beta1: float = 0.9  # AdamW beta1
    beta2: float = 0.99  # AdamW beta2
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    grad_clip: float = 1.0  # max global grad norm (0 = off); a non-finite norm skips the optimiser step
    mini_batch_size: int = 0  # sequences per optimiser step, over all ranks (0 = the whole rollout batch)
    micro_batch_size: int = 256  # most sequences per forward/backward on each rank (memory knob, no effect on the math)
    micro_batch_tokens: int = 8192  # most padded tokens per forward/backward on each rank (0 = off; memory knob)
    grad_checkpointing: bool = False  # recompute each block in backward: activation memory / layers
    # --- evaluation, logging, checkpoints
    eval_every: int = 10  # greedy pass@1 on the held-out set every N steps (0 = only at start and end)
    eval_size: int = 200  # held-out problems evaluated (the first N of the task's fixed eval split)
    eval_samples: int = 0  # also n samples per problem at eval_temperature: eval_pass@1 (mean) and eval_pass@n
    eval_temperature: float = 0.6  # temperature of the sampled evaluation (R1-Zero papers: 0.6)
    log_samples_every: int = 10  # write a few decoded rollouts to samples.jsonl every N steps
    save_every: int = 50  # checkpoint every N steps (0 = only at the end)
    keep_last: int = 2  # checkpoints kept; older ones are pruned

    def validate(self):
        """One clear error per bad value."""
        if isinstance(self.scale_rewards, bool) or self.scale_rewards in ("true", "false", "True", "False"):
            self.scale_rewards = "group" if str(self.scale_rewards).lower() == "true" else "none"
        _finite(self)
        _at_least(self, 1, "steps", "prompts_per_step", "group_size", "max_completion_len", "mu", "micro_batch_size",
                  "eval_size", "keep_last")
        _at_least(self, 0, "reward_budget_s", "threads", "max_prompt_len", "warmup_steps", "eval_every", "save_every", "mini_batch_size",
                  "max_refill_rounds", "log_samples_every", "top_k", "overlong_buffer", "critic_warmup", "lora_rank",
                  "micro_batch_tokens", "eval_samples")
        _one_of(self, algo=ALGOS, loss_type=LOSS_TYPES, precision=PRECISIONS, scale_rewards=SCALES,
                ratio_level=RATIO_LEVELS, kl_estimator=KL_ESTIMATORS, lr_schedule=LR_SCHEDULES, reward=REWARDS,
                grader=GRADERS)
        if self.algo == "sft":
            _check_sft(self)
        elif not self.task:
            self.task = "arithmetic"  # the demo's task; sft without --task evaluates no task
        if self.group_size < 2 and self.algo in ("grpo", "rloo"):
            raise ValueError(f"--group_size must be >= 2 for --algo {self.algo}: its advantage compares the "
                             "completions of a group")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}")
        if not 1e-3 <= self.temperature <= 100:
            raise ValueError(f"--temperature must be in [0.001, 100] for RL rollouts, got {self.temperature}")
        if not (0 <= self.clip_low < 1 and self.clip_high >= 0):
            raise ValueError(f"--clip_low must be in [0, 1) and --clip_high >= 0, got {self.clip_low}, "
                             f"{self.clip_high}")
        if self.lr <= 0 or self.beta < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise ValueError("--lr must be > 0 and --beta, --weight_decay, --grad_clip >= 0")
        if self.clip_ratio_c and self.clip_ratio_c <= 1:
            raise ValueError(f"--clip_ratio_c must be 0 (off) or > 1, got {self.clip_ratio_c}")
        if min(self.tis_cap, self.entropy_coef, self.overlong_penalty, self.lora_dropout, self.lora_alpha) < 0:
            raise ValueError("--tis_cap, --entropy_coef, --overlong_penalty, --lora_dropout, --lora_alpha must be >= 0")
        if self.algo == "ppo" and (self.value_clip <= 0 or self.critic_lr <= 0):
            raise ValueError(f"--value_clip and --critic_lr must be > 0 for --algo ppo, got {self.value_clip}, "
                             f"{self.critic_lr}")
        if not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise ValueError(f"--gamma and --lam must be in [0, 1], got {self.gamma}, {self.lam}")
        if not 0 <= self.eval_temperature <= 100:
            raise ValueError(f"--eval_temperature must be in [0, 100], got {self.eval_temperature}")
        check_lora_options(self.lora_rank, self.lora_alpha, self.lora_dropout, self.lora_targets)
        parse_length_schedule(self.max_completion_len_schedule)  # fails here, not at step 1040
        lr_at(0, 1, self.lr, self.lr_schedule, self.warmup_steps, self.warmup_ratio, self.min_lr_ratio)
        batch = self.prompts_per_step * self.group_size
        if self.mini_batch_size and (batch % self.mini_batch_size or self.mini_batch_size % self.group_size):
            raise ValueError(f"--mini_batch_size {self.mini_batch_size} must divide the rollout batch "
                             f"({self.prompts_per_step} x {self.group_size} = {batch}) into whole groups")


ALGOS = ("grpo", "ppo", "rloo", "reinforce_pp", "sft")


def _check_sft(cfg):
    """--algo sft reads examples from --data and takes one optimiser step per --prompts_per_step of them."""
    if not cfg.data:
        raise ValueError("--algo sft needs --data FILE.jsonl (rows {\"prompt\", \"completion\"} or {\"messages\"})")
    if cfg.mu != 1 or cfg.mini_batch_size:
        raise ValueError("--mu and --mini_batch_size are RL options: --algo sft takes one optimiser step per "
                         "--prompts_per_step examples")
    if cfg.task == "jsonl":
        raise ValueError("--task jsonl reads its rows from --data, which --algo sft uses for its examples: give "
                         "the held-out accuracy a built-in task, or leave --task out")
REWARDS = ("math", "number", "exact", "countdown")
GRADERS = ("builtin", "math_verify")


@dataclass
class SampleConfig:
    model: str = ""  # HF-layout folder ("" = the newest out/*/ckpt-*, else data/tiny)
    prompt: str = ""  # prompt text ("" = a held-out problem of --task)
    chat: bool = False  # wrap --prompt in the ChatML template
    task: str = "arithmetic"  # task for --eval and for the default prompt
    template: str = ""  # the task's prompt template ("" = its default: base or instruct)
    split: str = ""  # split of --task: --eval's ("" = its first eval split), --save's ("" = train)
    grader: str = "builtin"  # answer checking for gsm8k and math: builtin, or math_verify (as train.py's --grader)
    eval: bool = False  # evaluate on --task instead of sampling one prompt
    save: str = ""  # write --num_samples completions per problem of --split to this JSONL as SFT rows
    only_correct: bool = False  # --save: keep only the completions the task's reward calls correct (rejection sampling)
    limit: int = 0  # --eval / --save: only the first N problems (0 = all)
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
        _finite(self)
        _at_least(self, 1, "num_samples", "batch_size")
        _at_least(self, 0, "limit", "max_new_tokens", "top_k")
        _one_of(self, precision=PRECISIONS, grader=GRADERS)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 0 and self.temperature != -1.0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        if self.save and (self.eval or self.prompt):
            raise ValueError("--save samples the problems of --task: it does not combine with --eval or --prompt")
        if self.only_correct and not self.save:
            raise ValueError("--only_correct filters what --save writes: give --save FILE.jsonl")


PRECISIONS = ("auto", "bf16", "fp32")


def _finite(cfg):
    """inf and nan are never a setting: `--lr inf` would train every weight to inf and save it."""
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"--{f.name} must be a finite number, got {v}")


def _at_least(cfg, low, *names):
    for name in names:
        if getattr(cfg, name) < low:
            raise ValueError(f"--{name} must be >= {low}, got {getattr(cfg, name)}")


def _one_of(cfg, **allowed):
    for name, choices in allowed.items():
        if getattr(cfg, name) not in choices:
            raise ValueError(f"--{name} must be one of {', '.join(choices)}, got {getattr(cfg, name)!r}")


def parse_args(argv=None, cls=TrainConfig):
    """The config of `cls` from `--config FILE` (TOML, when the class has that field), then the command line on
    top: `--key value` or `--key=value` for every field, a bare `--flag` for a bool (and `--resume` alone is
    `--resume latest`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        print(help_text(cls))
        sys.exit(0)
    types = {f.name: f.type for f in fields(cls)}
    given = _command_line(argv, types)
    values = read_toml(given["config"], cls) if given.get("config") else {}
    values.update(given)
    cfg = cls(**values)
    cfg.validate()
    return cfg


def _command_line(argv, types):
    values, i = {}, 0
    while i < len(argv):
        key, _, inline = argv[i].partition("=")
        name = key[2:].replace("-", "_")
        if not key.startswith("--") or name not in types:
            raise ValueError(f"unknown argument {argv[i]!r} (see --help)")
        typ = types[name]
        if inline or "=" in argv[i]:  # --key=value
            values[name] = _convert(name, typ, inline)
            i += 1
        elif i + 1 == len(argv) or argv[i + 1].startswith("--"):  # a bare flag
            if typ not in ("bool", bool) and name != "resume":
                raise ValueError(f"--{name} needs a value")
            values[name] = True if name != "resume" else "latest"
            i += 1
        else:
            values[name] = _convert(name, typ, argv[i + 1])
            i += 2
    return values


def read_toml(path, cls=TrainConfig):
    """The fields set in a TOML file (stdlib tomllib, so recipes carry comments): top-level keys only, each a
    field of `cls` with a value of its type."""
    import tomllib
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"--config {path}: not valid TOML ({e})") from None
    types = {f.name: f.type for f in fields(cls)}
    values = {}
    for key, v in raw.items():
        if key not in types:
            raise ValueError(f"--config {path}: unknown key {key!r} (see python train.py --help)")
        typ = {"int": int, "float": float, "str": str, "bool": bool}.get(types[key], types[key])
        if typ is float and type(v) is int:
            v = float(v)
        ok = type(v) is typ or (key == "scale_rewards" and type(v) is bool)  # true/false: group/none
        if not ok:
            raise ValueError(f"--config {path}: key {key!r} must be {typ.__name__}, got {type(v).__name__} {v!r}")
        values[key] = v
    return values


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
