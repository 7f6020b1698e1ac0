"""SFT (nanor1/sft.py, train.py --algo sft, sample.py --save): the loss against a hand-computed NLL, the chat
mask, micro-batching, memorising pairs, exact resume, and one clear error per bad row."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import sample
import train
from nanor1 import sft
from nanor1 import step as rl
from nanor1.config import TrainConfig, parse_args
from nanor1.distributed import Dist
from nanor1.model import Transformer, load_model_and_tokenizer
from nanor1.precision import choose
from nanor1.rollout import Stop, generate
from nanor1.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "data" / "tiny"
pytestmark = pytest.mark.skipif(not (TINY / "model.safetensors").is_file(), reason="data/tiny not built")

# The tiny tokenizer has ChatML's special tokens (data/build_tiny.py), so both formats run on the shipped model.
PROMPT = "User: What is {}? Think, then answer in <answer> </answer>.\nAssistant: <think>"
PAIRS = [(PROMPT.format("12+34"), " 9+9=1.</think> <answer>7</answer>"),  # wrong on purpose: not the base's
         (PROMPT.format("305+411"), " 5+1=6, 0+1=1, 3+4=7.</think> <answer>716</answer>"),
         (PROMPT.format("77+88"), " 7+8=15, 7+8+1=16.</think> <answer>165</answer>"),
         (PROMPT.format("20+20"), " banana.</think> <answer>0</answer>")]
CHAT = [{"role": "system", "content": "Add."}, {"role": "user", "content": "1+1"},
        {"role": "assistant", "content": "<answer>2</answer>"}, {"role": "user", "content": "and 2+2?"},
        {"role": "assistant", "content": "<answer>4</answer>"}, {"role": "user", "content": "thanks"}]


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_model_and_tokenizer(TINY, torch.float32)


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def sft_run(cfg, examples):
    d = Dist()
    return rl.Run(cfg=cfg, d=d, prec=choose(d.device, "fp32"), tok=None, task=None, rows=examples, prompts=[],
                  stream=None, verifier=None, stop=None)


def hand_nll(model, ids, targets):
    """Sum of -log p(ids[i] | ids[:i]) over the indices `targets`, from the full logits and log_softmax."""
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, :, :model.vocab_limit]  # (T, V'): the tokenizer's ids, no padding
        logp = F.log_softmax(logits.double(), -1)
    return -sum(logp[i - 1, ids[i]].item() for i in targets)


def test_loss_is_the_nll_of_the_target_tokens_for_both_formats(tiny, tmp_path):
    model, tok = tiny
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": p, "completion": c} for p, c in PAIRS[:2]]
                       + [{"messages": CHAT}])
    examples = sft.read_examples(str(data), tok, 256, drop_long=False)
    # By hand. Pairs: the prompt's tokens, then the completion's and EOS, which are the targets.
    expected, n_targets = 0.0, 0
    for p, c in PAIRS[:2]:
        ids = tok.encode(p) + tok.encode(c) + [tok.eos_token_id]
        targets = range(len(tok.encode(p)), len(ids))
        expected += hand_nll(model, ids, targets)
        n_targets += len(targets)
    # The chat, written out in ChatML: each reply (content + <|im_end|>) follows the generation prompt.
    pieces = [("<|im_start|>system\nAdd.<|im_end|>\n<|im_start|>user\n1+1<|im_end|>\n<|im_start|>assistant\n", 0),
              ("<answer>2</answer><|im_end|>", 1),
              ("\n<|im_start|>user\nand 2+2?<|im_end|>\n<|im_start|>assistant\n", 0),
              ("<answer>4</answer><|im_end|>", 1)]
    ids, targets = [], []
    for text, is_target in pieces:
        piece = tok.encode(text)
        targets += range(len(ids), len(ids) + len(piece)) if is_target else []
        ids += piece
    expected += hand_nll(model, ids, targets)
    n_targets += len(targets)
    assert [e.ids for e in examples][2] == ids
    batch = sft.pack(examples, "cpu")
    learner = sft.Learner(model, None, sft_run(TrainConfig(), examples))
    loss, sums, _ = learner.loss(batch, (3.0, float(batch.loss_tokens.sum())))
    assert int(sums["tokens"]) == n_targets == int(batch.loss_tokens.sum())
    torch.testing.assert_close(loss.double(), torch.tensor(expected / n_targets, dtype=torch.float64), rtol=1e-5, atol=0)


def test_chat_targets_are_exactly_the_assistant_turns(tiny):
    _, tok = tiny
    ids, target = sft.encode({"messages": CHAT}, tok, "x:1")
    on = tok.decode([i for i, t in zip(ids, target) if t])
    off = tok.decode([i for i, t in zip(ids, target) if not t])
    assert on == "<answer>2</answer><|im_end|><answer>4</answer><|im_end|>"
    # The rest is the template's context, and the row ends at the last assistant turn's end-of-turn token.
    full = tok.apply_chat_template(CHAT, add_generation_prompt=False)
    assert tok.decode(ids) == full[:full.rindex("<|im_end|>\n<|im_start|>user\nthanks")] + "<|im_end|>"
    assert "thanks" not in off and "<answer>" not in off and off.count("<|im_start|>assistant\n") == 2
    # A one-turn pair: the completion and the EOS appended after it are the targets, nothing else.
    ids, target = sft.encode({"prompt": "1+1=", "completion": "2"}, tok, "x:2")
    assert tok.decode([i for i, t in zip(ids, target) if t]) == "2<|endoftext|>" and ids[-1] == tok.eos_token_id
    ids2, _ = sft.encode({"prompt": "1+1=", "completion": "2<|endoftext|>"}, tok, "x:3")
    assert ids2 == ids  # a completion that already ends in EOS (a saved trace) gets no second one


def one_step(examples, **cfg):
    """One SGD step of the SFT learner through step.update; returns (new parameters, reduced sums, #micro)."""
    torch.manual_seed(0)
    model = Transformer.from_pretrained(TINY, dtype=torch.float32)
    cfg = TrainConfig(algo="sft", data="x", prompts_per_step=len(examples), grad_clip=0.0, **cfg)
    run = sft_run(cfg, examples)
    batch = sft.pack(examples, "cpu")
    learner = sft.Learner(model, torch.optim.SGD(model.parameters(), lr=1.0), run)
    sums = rl.Sums()
    rl.update(run, batch, [learner], 0, lambda _: 1.0, sums)
    n_micro = len(rl.micro_batches(batch, range(len(batch)), cfg))
    return torch.cat([p.detach().flatten() for p in model.parameters()]), sums.reduce(run.d), n_micro


def test_token_budget_micro_batches_give_the_same_gradient(tiny, tmp_path):
    _, tok = tiny
    rows = [{"prompt": p, "completion": c * (1 + i % 3)} for i, (p, c) in enumerate(PAIRS * 2)]  # ragged
    examples = sft.read_examples(str(write_jsonl(tmp_path / "d.jsonl", rows + [{"messages": CHAT}])), tok, 256,
                                 False)
    whole, m1, n1 = one_step(examples, micro_batch_size=64)
    split, m2, n2 = one_step(examples, micro_batch_size=64, micro_batch_tokens=120)
    base = torch.cat([p.flatten() for p in Transformer.from_pretrained(TINY, dtype=torch.float32).parameters()])
    assert n1 == 1 and n2 >= 4, (n1, n2)
    assert (whole - base).abs().max() > 1e-3  # the step moved the weights: the comparison means something
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-6)
    assert abs(m1["loss"] - m2["loss"]) < 1e-5 and m1["tokens"] == m2["tokens"]


def test_sft_memorises_pairs_and_greedy_decoding_reproduces_them(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": p, "completion": c} for p, c in PAIRS])
    out = train.main(["--algo", "sft", "--data", str(data), "--steps", "30", "--prompts_per_step", "4", "--lr",
                      "3e-3", "--eval_every", "0", "--save_every", "0", "--threads", "1", "--out", str(tmp_path / "r")])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 31)) and rows[0]["loss"] > 1.0
    assert rows[-1]["loss"] < 0.02, [round(r["loss"], 3) for r in rows[::10]]
    assert set(rows[-1]) >= {"step", "loss", "tokens", "lr", "grad_norm"}
    model, tok = load_model_and_tokenizer(out / "ckpt-30", torch.float32)
    res = generate(model, [tok.encode(p) for p, _ in PAIRS], 40, temperature=0, stop=Stop(eos=tok.eos_token_ids))
    assert tok.decode_batch(res.tokens) == [c + "<|endoftext|>" for _, c in PAIRS]


@pytest.mark.parametrize("extra", [[], ["--lora_rank", "8"]], ids=["full", "lora"])
def test_resume_is_exact(tmp_path, extra):
    """5 examples, 2 per step (steps straddle epochs), a cosine schedule with warm-up: stopped at step 2 and resumed,
    the run writes the same metrics and the same final weights as without the stop. With LoRA the same loop
    trains the adapters alone (the checkpoint holds them, not the base)."""
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": p, "completion": c} for p, c in PAIRS]
                       + [{"messages": CHAT}])
    out = tmp_path / "r"
    argv = ["--algo", "sft", "--data", str(data), "--eval_data", str(data), "--steps", "4", "--prompts_per_step", "2",
            "--lr", "1e-3", "--lr_schedule", "cosine", "--warmup_steps", "1", "--eval_every", "2", "--save_every", "2",
            "--keep_last", "3", "--threads", "1", "--out", str(out), *extra]
    train.main(argv)
    strip = lambda text: [{k: v for k, v in json.loads(x).items() if k != "train_s"} for x in text.splitlines()]  # noqa
    before = strip((out / "metrics.jsonl").read_text())
    train.main(argv + ["--resume", str(out / "ckpt-2")])  # sets step 3, 4 and ckpt-4 aside, then redoes them
    assert strip((out / "metrics.jsonl").read_text()) == before
    assert [r["step"] for r in before if "eval_loss" in r] == [0, 2, 4]
    weights = "adapter_model.safetensors" if extra else "model.safetensors"
    assert {p.name for p in (out / "ckpt-4").glob("*.safetensors")} == {weights}
    redone, first = (load_file(out / f / weights) for f in ("ckpt-4", "abandoned/ckpt-4"))
    start = load_file(out / "ckpt-2" / weights)
    assert all(torch.equal(redone[k], first[k]) for k in first) and any(not torch.equal(start[k], first[k])
                                                                        for k in first)


@pytest.mark.parametrize("line,msg", [
    ('{"prompt": "a", "completion": "b"', "not valid JSON"),
    ('{"prompt": "a"}', "missing field 'completion'"),
    ('{"text": "a"}', "missing field"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]}', "unknown role 'tool'"),
    ('{"prompt": "a", "completion": ""}', "empty completion"),
    ('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]}', "empty completion"),
    ('{"messages": [{"role": "user", "content": "a"}]}', "no assistant message"),
    ('{"messages": [{"role": "user"}, {"role": "assistant", "content": "b"}]}', "missing field"),
])
def test_bad_row_is_one_clear_error_with_its_line(tiny, tmp_path, line, msg):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "completion": "y"}, line])
    with pytest.raises(ValueError, match=msg) as e:
        sft.read_examples(str(path), tiny[1], 256, False)
    assert f"{path}:2:" in str(e.value)


def test_bad_data_fails_before_anything_is_written(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", ['{"prompt": "x", "completion": ""}'])
    with pytest.raises(ValueError, match=f"{path}:1: empty completion"):
        train.main(["--algo", "sft", "--data", str(path), "--out", str(tmp_path / "r"), "--threads", "1"])
    assert not (tmp_path / "r").exists()
    with pytest.raises(FileNotFoundError, match="--data .*nope.jsonl: file not found"):
        train.main(["--algo", "sft", "--data", str(tmp_path / "nope.jsonl"), "--threads", "1"])
    for argv, msg in ((["--algo", "sft"], "needs --data"), (["--algo", "sft", "--data", "x", "--mu", "2"], "RL options"),
                      (["--algo", "sft", "--data", "x", "--task", "jsonl"], "--task jsonl")):
        with pytest.raises(ValueError, match=msg):
            parse_args(argv)
    assert parse_args([]).task == "arithmetic" and parse_args(["--algo", "sft", "--data", "x"]).task == ""


def test_rows_longer_than_the_context_error_or_are_dropped(tiny, tmp_path, capsys):
    long = {"prompt": "1+1=", "completion": "2" * 300}  # one digit per token: 300 tokens > the context of 256
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "1+1=", "completion": "2"}, long, long])
    with pytest.raises(ValueError, match=f"{path}:2: 305 tokens, longer than the model's context of 256 .*"
                                         "2 of 3 rows.*--drop_long"):
        sft.read_examples(str(path), tiny[1], 256, False)
    assert len(sft.read_examples(str(path), tiny[1], 256, True)) == 1
    assert "dropped 2 of 3 rows longer than the context of 256 tokens" in capsys.readouterr().out


def test_sample_save_writes_sft_rows_of_correct_traces(tmp_path, capsys):
    path = tmp_path / "traces.jsonl"
    kept = sample.main(["--model", str(TINY), "--task", "arithmetic", "--limit", "8", "--num_samples", "4",
                        "--save", str(path), "--only_correct", "--batch_size", "8"])
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert rows == kept and 0 < len(rows) < 32  # the base is right on some of its 32 samples, not all
    task, train_rows = get_task("arithmetic"), get_task("arithmetic").train_rows()
    by_id = {r["id"]: r for r in train_rows[:8]}
    for r in rows:
        assert r["id"] in by_id and r["prompt"] == task.prompt(by_id[r["id"]], None)  # the train split's rows
        assert r["reward"] == 1.0 == task.reward(r["completion"], by_id[r["id"]])
    assert "wrote" in capsys.readouterr().out
    _, tok = load_model_and_tokenizer(TINY, torch.float32)
    assert len(sft.read_examples(str(path), tok, 256, False)) == len(rows)  # they are SFT data as they are
    with pytest.raises(ValueError, match="--only_correct"):
        sample.main(["--only_correct"])


@pytest.mark.slow
def test_torchrun_sft_runs_and_resumes(tmp_path):
    """train.py --algo sft under torchrun, 2 ranks, with --eval_data and --task; resumed at the same world size."""
    data = write_jsonl(tmp_path / "d.jsonl", [{"prompt": p, "completion": c} for p, c in PAIRS] * 2)
    out = tmp_path / "r"
    argv = ["train.py", "--algo", "sft", "--data", data, "--eval_data", data, "--task", "arithmetic",
            "--eval_size", "8", "--steps", "3", "--prompts_per_step", "4", "--micro_batch_tokens", "60",
            "--save_every", "2", "--threads", "1", "--out", out]
    env = dict(__import__("os").environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, argv)]
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert [r["step"] for r in rows if "eval_accuracy" in r and "eval_loss" in r] == [0, 3]


@pytest.mark.slow
def test_pipeline_in_miniature(tmp_path):
    """R1's pipeline, shortened (README: the full one): GRPO trains a teacher from the tiny base, its correct
    traces on train problems are rejection-sampled, and SFT of a fresh copy of the base on them carries the
    teacher's skill to held-out problems the student never saw."""
    common = ["--eval_size", "100", "--eval_every", "0", "--save_every", "0", "--threads", "1"]
    teacher = train.main(["--steps", "20", "--out", str(tmp_path / "rl"), *common])
    traces = tmp_path / "traces.jsonl"
    sample.main(["--model", str(teacher / "ckpt-20"), "--task", "arithmetic", "--limit", "300", "--save", str(traces),
                 "--only_correct"])
    student = train.main(["--algo", "sft", "--data", str(traces), "--task", "arithmetic", "--steps", "60", "--lr", "3e-4",
                          "--lr_schedule", "cosine", "--warmup_steps", "10", "--out", str(tmp_path / "sft"), *common])
    acc = lambda run: [json.loads(x)["eval_accuracy"] for x in (run / "metrics.jsonl").read_text().splitlines()  # noqa
                       if "eval_accuracy" in x]
    (base, teacher_acc), (base_again, student_acc) = acc(teacher), acc(student)
    print(f"held-out greedy pass@1: base {base:.2f}, teacher {teacher_acc:.2f}, student {student_acc:.2f}")
    assert base == base_again and base < 0.3  # the same 100 problems, the same base
    assert teacher_acc > base + 0.4 and student_acc > base + 0.5
