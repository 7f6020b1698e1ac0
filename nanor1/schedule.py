"""Schedules over training: the learning rate per optimiser step, and the completion budget per step.

Learning rate, with n = opt_step + 1 (the steps taken once this one is done), W warm-up steps, N the total:

    warm-up  (n <= W):  lr * n / W          linear from 0; the first step already moves (lr / W, not 0)
    decay    (after):   p = (opt_step - W) / (N - W), clamped to [0, 1]
        constant:       lr
        linear:         lr * (1 - (1 - m) p)
        cosine:         lr * (m + (1 - m) (1 + cos(pi p)) / 2)         m = min_lr_ratio

The decay follows veRL's get_cosine_schedule_with_warmup (verl/utils/torch_functional.py: progress
(step - W) / (N - W), floor min_lr_ratio) and HF's linear schedule: the first step after warm-up is at the
peak, the last one just above m * lr, none is wasted at lr 0. W = warmup_steps, or ceil(warmup_ratio * N) as
HF TrainingArguments.get_warmup_steps does (veRL floors). Defaults (constant, W = 0) give lr at every step.

Completion budget (DeepScaleR's context curriculum, 8k -> 16k -> 24k): "1040:16384,1520:24576" means 16384
tokens from step 1040 on and 24576 from step 1520 on; before the first pair, the base budget. A pure function
of the step, so a resumed run lands in the right stage.
"""
import math

LR_SCHEDULES = ("constant", "linear", "cosine")


def lr_at(opt_step: int, total_opt_steps: int, lr: float, schedule: str = "constant", warmup_steps: int = 0,
          warmup_ratio: float = 0.0, min_lr_ratio: float = 0.0) -> float:
    """The learning rate of optimiser step `opt_step` (0-based) of `total_opt_steps`."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"--lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")
    if warmup_steps < 0 or not 0 <= warmup_ratio < 1:
        raise ValueError(f"--warmup_steps must be >= 0 and --warmup_ratio in [0, 1), got {warmup_steps}, "
                         f"{warmup_ratio}")
    if warmup_steps and warmup_ratio:
        raise ValueError("set --warmup_steps or --warmup_ratio, not both")
    if not 0 <= min_lr_ratio <= 1:
        raise ValueError(f"--min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    W = warmup_steps or math.ceil(warmup_ratio * total_opt_steps)
    if opt_step + 1 <= W:
        return lr * ((opt_step + 1) / W)  # bracketed as before the schedules: the same float, bit for bit
    if schedule == "constant":
        return lr
    p = min(max((opt_step - W) / max(total_opt_steps - W, 1), 0.0), 1.0)  # past the end (more steps than
    # planned, e.g. a run extended on resume): stay at the floor
    if schedule == "linear":
        return lr * (1 - (1 - min_lr_ratio) * p)
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p)))


def parse_length_schedule(text: str) -> list:
    """'1040:16384,1520:24576' -> [(1040, 16384), (1520, 24576)]; '' -> []. Steps >= 1, strictly increasing;
    lengths >= 1. One ValueError naming --max_completion_len_schedule for anything else."""
    pairs = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            step, length = (int(x) for x in part.split(":"))
        except ValueError:
            raise ValueError(f"--max_completion_len_schedule: {part!r} is not step:length (two integers), "
                             f"in {text!r}") from None
        if step < 1 or length < 1:
            raise ValueError(f"--max_completion_len_schedule: step and length must be >= 1, got {part!r}")
        if pairs and step <= pairs[-1][0]:
            raise ValueError(f"--max_completion_len_schedule: steps must increase, got {pairs[-1][0]} then {step}")
        pairs.append((step, length))
    return pairs


def length_at(step: int, base_len: int, schedule: list) -> int:
    """The completion budget at training step `step`: the last pair whose step is <= `step`, else base_len."""
    length = base_len
    for start, budget in schedule:
        if step >= start:
            length = budget
    return length
