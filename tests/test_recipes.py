"""The recipe files (recipes/*.toml): each parses with tomllib, uses only TrainConfig field names with values of
the field's type and one of its allowed choices, cites a source next to every key, and describes a batch that
nanoR1's mini-batching can split."""
import re
import tomllib
from pathlib import Path

import pytest

from nanor1.tasks import get_task

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
EXPECTED = {"tinyzero", "simplerl_zero", "deepscaler", "open_r1", "open_r1_sft", "mini_r1", "oat_zero", "orz",
            "unsloth"}

# TrainConfig's fields, existing and planned (the helper brief's list), with the TOML type each takes.
# lora_alpha is an int as in PEFT's LoraConfig. (The lead replaces this table with dataclasses.fields(TrainConfig)
# once every field has landed.)
STR, INT, FLOAT, BOOL = str, int, float, bool
FIELDS = {
    "algo": STR, "model": STR, "task": STR, "template": STR, "data": STR, "eval_data": STR, "answer_key": STR,
    "reward": STR, "reward_fn": STR, "grader": STR, "out": STR, "resume": STR, "steps": INT, "seed": INT,
    "threads": INT, "config": STR, "dry_run": BOOL,
    "prompts_per_step": INT, "group_size": INT, "max_prompt_len": INT, "max_completion_len": INT,
    "max_completion_len_schedule": STR, "drop_long": BOOL, "temperature": FLOAT, "top_p": FLOAT, "top_k": INT,
    "dynamic_sampling": BOOL, "max_refill_rounds": INT, "mask_truncated": BOOL, "overlong_buffer": INT,
    "overlong_penalty": FLOAT,
    "loss_type": STR, "scale_rewards": STR, "clip_low": FLOAT, "clip_high": FLOAT, "clip_ratio_c": FLOAT,
    "ratio_level": STR, "beta": FLOAT, "kl_estimator": STR, "kl_in_reward": BOOL, "entropy_coef": FLOAT,
    "tis_cap": FLOAT, "mu": INT,
    "critic_model": STR, "critic_lr": FLOAT, "critic_warmup": INT, "gamma": FLOAT, "lam": FLOAT, "value_clip": FLOAT,
    "lora_rank": INT, "lora_alpha": INT, "lora_dropout": FLOAT, "lora_targets": STR,
    "lr": FLOAT, "lr_schedule": STR, "warmup_steps": INT, "warmup_ratio": FLOAT, "min_lr_ratio": FLOAT,
    "beta1": FLOAT, "beta2": FLOAT, "weight_decay": FLOAT, "grad_clip": FLOAT, "mini_batch_size": INT,
    "micro_batch_size": INT, "micro_batch_tokens": INT, "grad_checkpointing": BOOL,
    "eval_every": INT, "eval_size": INT, "eval_samples": INT, "eval_temperature": FLOAT, "log_samples_every": INT,
    "save_every": INT, "keep_last": INT,
}
CHOICES = {"algo": {"grpo", "ppo", "rloo", "reinforce_pp", "sft"}, "loss_type": {"grpo", "dapo", "dr_grpo"},
           "scale_rewards": {"group", "batch", "none"}, "kl_estimator": {"k1", "k2", "k3", "low_var_kl"},
           "lr_schedule": {"constant", "linear", "cosine"}, "grader": {"builtin", "math_verify"},
           "ratio_level": {"token", "sequence"}, "reward": {"math", "number", "exact", "countdown"}}
LORA_MODULES = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def load(name):
    with open(RECIPES / f"{name}.toml", "rb") as f:
        return tomllib.load(f)


def test_one_recipe_per_system():
    assert {p.stem for p in RECIPES.glob("*.toml")} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_keys_are_fields_with_the_right_types_and_choices(name):
    cfg = load(name)
    unknown = sorted(set(cfg) - set(FIELDS))
    assert not unknown, f"{name}.toml: not TrainConfig fields: {unknown}"
    for key, value in cfg.items():
        want = FIELDS[key]
        # TOML writes 1.0 as a float and 1 as an int; a float field given an int is a slip worth catching
        assert type(value) is want, f"{name}.toml: {key} = {value!r} is {type(value).__name__}, want {want.__name__}"
        if key in CHOICES:
            assert value in CHOICES[key], f"{name}.toml: {key} = {value!r} not in {sorted(CHOICES[key])}"
    assert cfg["model"].startswith("models/"), "the model is a local folder the user downloads into"
    assert "algo" in cfg and "steps" in cfg and "lr" in cfg


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_key_cites_its_source_on_its_line(name):
    for n, line in enumerate((RECIPES / f"{name}.toml").read_text().splitlines(), 1):
        if re.match(r"[a-z_0-9]+\s*=", line):
            assert "#" in line.split("=", 1)[1], f"{name}.toml:{n}: no comment next to the value: {line}"


@pytest.mark.parametrize("name", sorted(EXPECTED - {"open_r1_sft"}))
def test_rl_recipes_name_a_task_template_and_a_splittable_batch(name):
    cfg = load(name)
    task = get_task(cfg["task"], template=cfg["template"])  # raises on an unknown task or template
    assert task.template == cfg["template"]
    batch = cfg["prompts_per_step"] * cfg["group_size"]
    mini = cfg.get("mini_batch_size", 0)
    if mini:  # whole groups per optimiser step, a whole number of optimiser steps per step
        assert batch % mini == 0 and mini % cfg["group_size"] == 0, (name, batch, mini)
    if cfg["algo"] == "grpo":
        assert cfg["group_size"] >= 2, "GRPO compares completions within a group"
    if cfg.get("lora_targets"):
        assert set(cfg["lora_targets"].split(",")) <= LORA_MODULES


def test_deepscaler_schedule_grows_the_budget_at_the_published_steps():
    cfg = load("deepscaler")
    stages = [tuple(map(int, pair.split(":"))) for pair in cfg["max_completion_len_schedule"].split(",")]
    assert stages == [(1040, 16384), (1520, 24576)]  # README: 8K, then 16K at step 1040 and 24K at step 1520
    assert cfg["max_completion_len"] == 8192


def test_sft_recipe_reads_a_jsonl_file():
    cfg = load("open_r1_sft")
    assert cfg["algo"] == "sft" and cfg["data"].endswith(".jsonl")
