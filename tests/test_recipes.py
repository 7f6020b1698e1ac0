"""The recipe files (recipes/*.toml): each parses with tomllib, uses only TrainConfig field names with values of
the field's type and one of its allowed choices, cites a source next to every key, and describes a batch that
nanoR1's mini-batching can split."""
import json
import math
import re
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

import train
from nanor1.config import ALGOS, GRADERS, REWARDS, TrainConfig, parse_args
from nanor1.grpo import KL_ESTIMATORS, LOSS_TYPES, RATIO_LEVELS, SCALES
from nanor1.schedule import LR_SCHEDULES
from nanor1.tasks import get_task

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
EXPECTED = {"tinyzero", "simplerl_zero", "deepscaler", "open_r1", "open_r1_sft", "mini_r1", "oat_zero", "orz",
            "unsloth"}

# TrainConfig's fields with the TOML type each takes, and the choices of the fields that have them.
FIELDS = {f.name: {"int": int, "float": float, "str": str, "bool": bool}.get(f.type, f.type) for f in fields(TrainConfig)}
CHOICES = {"algo": ALGOS, "loss_type": LOSS_TYPES, "scale_rewards": SCALES, "kl_estimator": KL_ESTIMATORS,
           "lr_schedule": LR_SCHEDULES, "grader": GRADERS, "ratio_level": RATIO_LEVELS, "reward": REWARDS}
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


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_recipe_passes_dry_run(name):
    """--dry_run validates the whole config, prints it as one JSON object and writes nothing; the model folders
    are not here, so it says what to download."""
    p = subprocess.run([sys.executable, "train.py", "--config", f"recipes/{name}.toml", "--dry_run"],
                       cwd=RECIPES.parent, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    resolved = json.loads(p.stdout)
    assert resolved == {**vars(TrainConfig()), **load(name), "config": f"recipes/{name}.toml", "dry_run": True,
                        "scale_rewards": resolved["scale_rewards"]}
    assert f"model folder {load(name)['model']} not found: download" in p.stderr


def test_dry_run_checks_the_schedule_against_the_context():
    """DeepScaleR's last stage on a model whose context is shorter: --dry_run says so, as the run would."""
    p = subprocess.run([sys.executable, "train.py", "--model", "data/tiny", "--dry_run",
                        "--max_completion_len_schedule", "2:64,4:1000"],
                       cwd=RECIPES.parent, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stdout == "", p.stdout
    assert "--max_completion_len_schedule's last stage 1000 leaves no room for a prompt in the model's context of " \
        "256 tokens" in p.stderr, p.stderr


# What a recipe's one step on the tiny base overrides: the model, the task and the sizes, nothing of the method.
TINY_STEP = ["--model", "data/tiny", "--task", "arithmetic", "--template", "base", "--grader", "builtin", "--steps", "1",
             "--prompts_per_step", "2", "--max_prompt_len", "0", "--max_completion_len", "8",
             "--max_completion_len_schedule", "", "--mini_batch_size", "0", "--eval_size", "2", "--eval_samples", "0",
             "--threads", "1", "--log_samples_every", "0", "--micro_batch_tokens", "0", "--micro_batch_size", "16"]


@pytest.mark.parametrize("name", sorted(EXPECTED - {"open_r1_sft"}))
def test_every_rl_recipe_runs_one_step_on_the_tiny_base(name, tmp_path):
    group = ["--group_size", "2"] if load(name).get("group_size", 8) > 1 else []
    out = train.main(["--config", str(RECIPES / f"{name}.toml"), "--out", str(tmp_path / name), *TINY_STEP, *group,
                      *(["--data", "", "--eval_data", ""] if load(name).get("task") == "jsonl" else [])])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    step = [r for r in rows if "reward" in r]
    assert len(step) == 1 and step[0]["completions"] > 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["algo"] == load(name)["algo"] and saved["lr"] == load(name)["lr"]  # the recipe's method ran


def test_sft_recipe_runs_one_step_on_the_tiny_base(tmp_path):
    data = tmp_path / "traces.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i}+{i}?", "completion": f" {2 * i}</answer>"}) + "\n"
                            for i in range(8)))
    out = train.main(["--config", str(RECIPES / "open_r1_sft.toml"), "--out", str(tmp_path / "sft"), *TINY_STEP,
                      "--data", str(data), "--grad_checkpointing"])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    step = [r for r in rows if "loss" in r]
    assert len(step) == 1 and step[0]["tokens"] > 0 and math.isfinite(step[0]["loss"])
    saved = json.loads((out / "config.json").read_text())
    assert saved["algo"] == "sft" and saved["lr"] == load("open_r1_sft")["lr"]


def test_command_line_beats_the_file(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text('lr = 1e-6  # the file\nsteps = 7\nalgo = "rloo"\n')
    cfg = parse_args(["--config", str(f), "--lr=2e-6", "--algo", "grpo"])
    assert (cfg.lr, cfg.steps, cfg.algo) == (2e-6, 7, "grpo")


@pytest.mark.parametrize("text, message", [
    ("lr = ", "not valid TOML"),
    ("learning_rate = 1e-6", "unknown key 'learning_rate'"),
    ("steps = 1.5", "key 'steps' must be int, got float"),
    ("lr = \"fast\"", "key 'lr' must be float, got str"),
    ("dynamic_sampling = 1", "key 'dynamic_sampling' must be bool, got int"),
    ("[section]\nlr = 1e-6", "unknown key 'section'"),
])
def test_bad_config_files_are_one_clear_error(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_args(["--config", str(f)])
    with pytest.raises(FileNotFoundError, match="not found"):
        parse_args(["--config", str(tmp_path / "none.toml")])
