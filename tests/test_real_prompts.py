"""The README's real-task commands with the real Qwen2.5 tokenizer (data/qwen2_tokenizer) and a tiny random Qwen2
of the real vocabulary size (151,936 rows, saved by transformers): every prompt of the split fits the budget the
run chose, so step 1 trains on every prompt it drew (issue 17: with a fixed 128-token budget, countdown's
prompts were all skipped and the run trained on nothing while looking healthy)."""
import json
import shutil
from pathlib import Path

import pytest
import torch
import transformers

import train
from nanor1.data import encode_prompts
from nanor1.tasks import get_task
from nanor1.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "data" / "qwen2_tokenizer"

# The README's commands (its "Training commands" and train.py's docstring), one per task, model folder left out;
# torchrun's --prompts_per_step 128 runs here in one process.
README = {
    "countdown": ["--task", "countdown", "--lr", "1e-6", "--steps", "200"],
    "gsm8k": ["--task", "gsm8k", "--steps", "200", "--lr", "1e-6"],
    "math": ["--task", "math", "--prompts_per_step", "128"],
}
# Small enough for a CPU test: later options override the README's.
SMALL = ["--steps", "1", "--prompts_per_step", "4", "--group_size", "2", "--max_completion_len", "8",
         "--eval_size", "2", "--threads", "1", "--log_samples_every", "0", "--save_every", "0"]


@pytest.fixture(scope="module")
def qwen_vocab_model(tmp_path_factory):
    """A 1-layer, 16-wide random Qwen2 with Qwen2.5's 151,936-row embedding and 32k context, beside the real
    tokenizer files (as a downloaded Qwen2.5 folder holds them)."""
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=151936, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=32768,
                                   tie_word_embeddings=True)
    folder = tmp_path_factory.mktemp("qwen") / "model"
    transformers.Qwen2ForCausalLM(cfg).save_pretrained(folder)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(TOKENIZER / f, folder / f)
    return folder


@pytest.fixture(autouse=True)
def encode_once(monkeypatch):
    """Each split is encoded once per session (about 2 s per split on an idle CPU core, 8 s on a busy one):
    the same tokenizer on the same rows gives the same ids, so the runs here share them."""
    def cached(task, tok, rows):
        key = (task.name, task.template, len(rows), json.dumps(rows[0], sort_keys=True) if rows else "")
        if key not in ENCODED:
            ENCODED[key] = encode_prompts(task, tok, rows)
        return ENCODED[key]
    monkeypatch.setattr(train, "encode_prompts", cached)


ENCODED = {}


def run(folder, out, *argv):
    train.main(["--model", str(folder), "--out", str(out), *argv])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return json.loads((out / "config.json").read_text()), [r for r in rows if "reward" in r]


# countdown is the headline (every base prompt over 128 tokens); gsm8k and math take a minute more.
@pytest.mark.parametrize("task", ["countdown", pytest.param("gsm8k", marks=pytest.mark.slow),
                                  pytest.param("math", marks=pytest.mark.slow)])
def test_readme_command_trains_on_every_prompt(qwen_vocab_model, tmp_path, task):
    cfg, steps = run(qwen_vocab_model, tmp_path / task, *README[task], *SMALL)
    P, G = 4, 2
    assert steps[0]["completions"] == P * G and steps[0]["groups"] == P, steps[0]
    assert steps[0]["opt_steps"] == 1 and "loss" in steps[0]
    # The budget is the split's longest prompt, more than the old default of 128 for every README task.
    longest = max(map(len, next(v for k, v in ENCODED.items() if k[0] == task)))
    assert cfg["max_prompt_len"] == longest > 128, (cfg["max_prompt_len"], longest)


def test_a_budget_too_small_is_one_error_or_an_announced_drop(qwen_vocab_model, tmp_path, capsys):
    """A budget under some prompts stops the run before it writes anything, naming the count and the longest;
    with --drop_long those prompts leave the split, and the console says how many."""
    task = get_task("countdown")
    rows = task.train_rows()
    tok = Tokenizer.from_pretrained(TOKENIZER)
    lengths = [len(p) for p in train.encode_prompts(task, tok, rows)]  # (shared with the run: encode_once)
    budget = sorted(lengths)[len(lengths) // 2]  # the median: about half the split is over it
    n_long = sum(n > budget for n in lengths)
    assert 0 < n_long < len(rows)
    argv = [*README["countdown"], *SMALL, "--max_prompt_len", str(budget)]
    with pytest.raises(ValueError, match=rf"{n_long} of {len(rows)} train prompts are longer than the prompt "
                                         rf"budget of {budget} tokens \(the longest has {max(lengths)}\)"):
        run(qwen_vocab_model, tmp_path / "error", *argv)
    assert not (tmp_path / "error").exists()
    capsys.readouterr()
    cfg, steps = run(qwen_vocab_model, tmp_path / "drop", *argv, "--drop_long")
    assert f"dropped {n_long} of {len(rows)} train prompts longer than {budget} tokens" in capsys.readouterr().out
    assert cfg["max_prompt_len"] == budget and steps[0]["groups"] == 4
