"""The training loop's pieces on tiny random models: it learns, micro-batching is exact, configs fail clearly."""
import copy
import json

import pytest
import torch

import train
from nanor1 import step as rl
from nanor1.config import TrainConfig, parse_args
from nanor1.data import PromptStream, deal
from nanor1.distributed import Dist
from nanor1.model import Transformer
from nanor1.precision import choose
from nanor1.rollout import Stop
from tests.tiny import hf_tiny


class IntTokenizer:
    """Text is space-separated token ids: enough for the loop, which only encodes prompts and decodes."""
    eos_token_ids = {96}
    vocab_size = 97

    def encode(self, text):
        return [int(x) for x in text.split()]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids):
        return " ".join(map(str, ids))

    def decode_batch(self, seqs):
        return [self.decode(s) for s in seqs]


class DigitTask:
    """Reward: the share of completion tokens below 10 (about 0.1 for a random model)."""
    stop = []

    def prompt(self, row, tok):
        return row["text"]

    def reward(self, completion, row):
        ids = [int(x) for x in completion.split()]
        return sum(i < 10 for i in ids) / max(len(ids), 1)

    def is_correct(self, r):
        return r == 1.0


class InProcessVerifier:
    def __init__(self, task):
        self.task = task

    def score(self, texts, rows, budget_s=None):
        return [self.task.reward(t, r) for t, r in zip(texts, rows)]


def make_run(cfg, data, task=None, d=None):
    """The step's fixed inputs (nanor1.step.Run) for the toy task: prompts are the rows' ids."""
    task, tok, d = task or DigitTask(), IntTokenizer(), d or Dist()
    return rl.Run(cfg=cfg, d=d, prec=choose(d.device, "fp32"), tok=tok, task=task, rows=data,
                  prompts=[tok.encode(task.prompt(r, tok)) for r in data], stream=PromptStream(len(data), cfg.seed),
                  verifier=InProcessVerifier(task), stop=Stop(eos=tok.eos_token_ids))


def train_step(run, model, ref, opt, groups, opt_step=0):
    """score + update, as train.py's loop runs them; returns the reduced sums."""
    learners = [rl.PolicyLearner(model, opt, run)]
    batch, sums = rl.score(run, groups, model, ref)
    rl.update(run, batch, learners, opt_step, train.schedule_of(run.cfg, run.d), sums)
    return sums.reduce(run.d)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return hf_tiny(tmp_path_factory.mktemp("m"), kind="qwen2", tied=False)[0]


def rows(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"text": " ".join(str(int(x)) for x in torch.randint(10, 96, (5,), generator=g))} for _ in range(n)]


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
def test_grpo_sanity_run_learns_rewarded_tokens(folder, loss_type):
    torch.manual_seed(0)
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    cfg = TrainConfig(prompts_per_step=8, group_size=8, max_completion_len=6, lr=3e-3, micro_batch_size=64,
                      loss_type=loss_type, scale_rewards=loss_type == "grpo")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    run = make_run(cfg, rows(64))
    cursor, curve = 0, []
    for step in range(40):
        groups, gen, cursor = rl.collect(run, model, step, cursor)
        curve.append(sum(x.reward for x in gen) / len(gen))
        if curve[-1] > 0.8:
            break
        train_step(run, model, None, opt, groups, step)
    assert curve[0] < 0.2, curve
    assert curve[-1] > 0.8, [round(c, 2) for c in curve]


def one_step_params(folder, micro, mu=1, mini=0, beta=0.0):
    torch.manual_seed(0)
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    ref = Transformer.from_pretrained(folder, dtype=torch.float32) if beta else None
    cfg = TrainConfig(prompts_per_step=4, group_size=4, max_completion_len=8, micro_batch_size=micro, mu=mu,
                      mini_batch_size=mini, beta=beta, loss_type="dapo", grad_clip=0.0, lr=0.5)
    run = make_run(cfg, rows(4, seed=1))
    groups, *_ = rl.collect(run, model, 1, 0)
    # Perturb the policy so ratios differ from 1 and the clip and KL terms are live.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr)  # the trainer sets the lr each step
    m = train_step(run, model, ref, opt, copy.deepcopy(groups))
    return torch.cat([p.detach().flatten() for p in model.parameters()]), m


@pytest.mark.parametrize("kw", [dict(), dict(mu=2, mini=8, beta=0.1)])
def test_micro_batches_give_the_same_update(folder, kw):
    full, m1 = one_step_params(folder, micro=16, **kw)
    split, m4 = one_step_params(folder, micro=4, **kw)
    base = torch.cat([p.flatten() for p in Transformer.from_pretrained(folder, dtype=torch.float32).parameters()])
    assert (full - base).abs().max() > 1e-2  # the step moved the weights, so the comparison means something
    torch.testing.assert_close(split, full, rtol=1e-5, atol=1e-6)
    assert abs(m1["loss"] - m4["loss"]) < 1e-5


@pytest.mark.parametrize("argv,msg", [
    (["--group_size", "1"], "group_size must be >= 2"),
    (["--loss_type", "ppo"], "loss_type must be one of"),
    (["--lr", "abc"], "--lr expects float"),
    (["--nope", "1"], "unknown argument '--nope'"),
    (["--top_p", "1.5"], "top_p"),
    (["--prompts_per_step", "4", "--group_size", "4", "--mini_batch_size", "6"], "whole groups"),
    (["--steps"], "--steps needs a value"),
])
def test_bad_config_is_one_clear_error(argv, msg):
    with pytest.raises(ValueError, match=msg):
        parse_args(argv)


def test_config_parses_types_and_flags():
    cfg = parse_args(["--steps", "3", "--lr", "1e-5", "--dynamic_sampling", "--scale_rewards", "false",
                      "--resume"])
    assert (cfg.steps, cfg.lr, cfg.dynamic_sampling, cfg.scale_rewards, cfg.resume) == (3, 1e-5, True, "none",
                                                                                        "latest")


class HalfFlatTask(DigitTask):
    """Rows marked flat always score 0.5 (a group with no signal); the others score like DigitTask."""

    def reward(self, completion, row):
        return 0.5 if row.get("flat") else super().reward(completion, row)


def test_dynamic_sampling_keeps_only_groups_with_signal(folder):
    torch.manual_seed(0)
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    data = [dict(r, flat=i % 2 == 0) for i, r in enumerate(rows(64))]
    cfg = TrainConfig(prompts_per_step=8, group_size=4, max_completion_len=6, dynamic_sampling=True,
                      max_refill_rounds=3)
    groups, gen, cursor = rl.collect(make_run(cfg, data, HalfFlatTask()), model, 1, 0)
    assert len(groups) == 8 and all(len({s.reward for s in g}) > 1 for g in groups)
    assert cursor > 8 and len(gen) == cursor // 8 * 8 * 4  # refilled from new prompts, every round logged
    off = TrainConfig(prompts_per_step=8, group_size=4, max_completion_len=6)
    groups, _, cursor = rl.collect(make_run(off, data, HalfFlatTask()), model, 1, 0)
    assert cursor == 8 and sum(len({s.reward for s in g}) == 1 for g in groups) >= 3  # flat groups stay


def test_masked_truncated_completions_get_no_gradient(folder):
    torch.manual_seed(0)
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    cfg = TrainConfig(prompts_per_step=2, group_size=2, max_completion_len=6, mask_truncated=True, lr=0.1,
                      grad_clip=0.0)
    # Every completion truncated: with the mask on, the step must leave the weights exactly as they were.
    groups = [[rl.Sample(prompt=[1, 2, 3], completion=[4, 5, 6, 7, 8, 9], sampler_logp=[0.0] * 6, truncated=True,
                         reward=r, text="") for r in (0.0, 1.0)] for _ in range(2)]
    before = [p.detach().clone() for p in model.parameters()]
    run = make_run(cfg, rows(2))
    train_step(run, model, None, torch.optim.SGD(model.parameters(), lr=0.1), groups)
    assert all(torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
    cfg.mask_truncated = False  # the same batch unmasked does move them
    train_step(run, model, None, torch.optim.SGD(model.parameters(), lr=0.1), groups)
    assert not all(torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))


def test_deal_balances_groups_over_ranks():
    """Rank 0 kept 5 groups and rank 1 one: both train on 3, and no group is used twice."""
    parts = [[("r0", i) for i in range(5)], [("r1", 0)]]
    shares = [deal(parts, r, cap=4) for r in range(2)]
    assert [len(s) for s in shares] == [3, 3]
    assert len(set(shares[0]) | set(shares[1])) == 6
    assert [len(deal(parts, r, cap=2)) for r in range(2)] == [2, 2]  # never more than a rank's quota
    assert deal([[1, 2, 3]], 0, cap=2) == [1, 2]  # one process: the first `cap`
    assert deal([[], [1]], 1, cap=2) == []  # one group cannot be split over two ranks


@pytest.mark.skipif(not (train.Path(__file__).resolve().parents[1] / "data/tiny/model.safetensors").is_file(),
                    reason="data/tiny not built")
def test_verifier_timeouts_reach_the_log(tmp_path, monkeypatch, capsys):
    """Rewards zeroed because a check hung or raised are counted per step in metrics.jsonl and on the console."""
    class Flaky(InProcessVerifier):  # step 2's scoring "times out" twice and raises once
        def __init__(self, task):
            super().__init__(task)
            self.calls, self.stats = 0, {"timeouts": 0, "errors": 0, "last_error": None}

        def score(self, texts, rows, budget_s=None):
            self.calls += 1
            if self.calls == 3:  # call 1: the step-0 eval, call 2: step 1, call 3: step 2
                self.stats.update(timeouts=2, errors=1, last_error="ZeroDivisionError: boom")
            return super().score(texts, rows)

        def close(self):
            pass

    monkeypatch.setattr(train, "Verifier", Flaky)
    out = tmp_path / "run"
    train.main(["--out", str(out), "--steps", "3", "--prompts_per_step", "4", "--group_size", "2",
                "--eval_size", "4", "--eval_every", "0", "--max_completion_len", "8", "--threads", "1"])
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"reward"' in x]
    assert [(r.get("verifier_timeouts"), r.get("verifier_errors")) for r in rows] == [(None, None), (2, 1),
                                                                                       (None, None)]
    assert "2 reward checks timed out, 1 raised (last: ZeroDivisionError: boom)" in capsys.readouterr().out
