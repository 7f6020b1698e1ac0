"""The training loop's pieces on tiny random models: it learns, micro-batching is exact, configs fail clearly."""
import copy
import json
import linecache
import math
import warnings

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


# ----------------------------------------------------------------------------- issue 17: real runs correct by default

class CountingLearner:
    """A stand-in for PolicyLearner that records what update() hands it: the rows of each micro-batch, and the
    optimiser steps with their learning rate."""
    prefix, counts_steps = "", True

    def __init__(self):
        self.p = torch.nn.Parameter(torch.zeros(()))
        self.micro, self.steps = [], []  # rows per micro-batch; (rows since the last step, lr) per optimiser step
        self.rows = 0

    def loss(self, mb, norms, budget):
        self.micro.append(len(mb))
        self.rows += len(mb)
        return self.p * len(mb), {"loss": 0.0}, {}

    def step(self, lr):
        self.steps.append((self.rows, lr))
        self.rows = 0
        return torch.tensor(0.0), True


def flat_groups(n, G=4, reward=lambda i, j: float(j % 2)):
    return [[rl.Sample(prompt=[1, 2, 3], completion=[4, 5, 6][:1 + j % 3], sampler_logp=[0.0] * (1 + j % 3),
                       truncated=False, reward=reward(i, j), text="") for j in range(G)] for i in range(n)]


@pytest.mark.parametrize("kept, want", [(8, [8, 8, 8, 8]), (5, [7, 7, 6]), (3, [6, 6]), (1, [4]), (0, [])])
def test_mini_batches_come_from_the_kept_batch(kept, want):
    """Nominal batch 8 groups x 4 = 32 rows, --mini_batch_size 8: 4 optimiser steps. With fewer groups kept the
    kept rows are split into ceil(rows / 8) mini-batches (never more than rows), none empty; the lr clock
    (opt_step: warm-up, decay) advances once per step actually taken, and not at all when nothing was kept."""
    cfg = TrainConfig(prompts_per_step=8, group_size=4, mini_batch_size=8, micro_batch_size=4, lr=1.0,
                      warmup_steps=100)
    run = make_run(cfg, rows(8))
    batch = rl.pack([s for g in flat_groups(kept) for s in g], torch.device("cpu"))
    learner, sums = CountingLearner(), rl.Sums()
    opt_step = rl.update(run, batch, [learner], 7, train.schedule_of(cfg, run.d), sums)
    assert [n for n, _ in learner.steps] == want and all(0 < n <= 4 for n in learner.micro)
    assert opt_step == 7 + len(want)
    assert [lr for _, lr in learner.steps] == [(7 + i + 1) / 100 for i in range(len(want))]  # warm-up from step 7
    assert sums.sums.get("opt_steps", 0) == len(want)


class StatsVerifier(InProcessVerifier):
    stats = {"timeouts": 0, "errors": 0, "last_error": None}


def test_dynamic_sampling_at_the_refill_cap_trains_on_what_it_kept(folder, capsys):
    """DAPO's dynamic sampling with every group flat: the cap is reached with nothing kept. The step takes no
    optimiser step, logs refill_cap_hit = 1 and warns; reward is over everything generated, reward_kept over
    the kept groups. Half the groups flat and no refill: half kept, the kept rewards by hand."""
    torch.manual_seed(0)
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for flat, refills in ((lambda i: True, 2), (lambda i: i % 2 == 0, 0)):
        cfg = TrainConfig(prompts_per_step=8, group_size=4, max_completion_len=6, dynamic_sampling=True,
                          max_refill_rounds=refills, log_samples_every=0)
        run = make_run(cfg, [dict(r, flat=flat(i)) for i, r in enumerate(rows(64))], HalfFlatTask())
        run.verifier = StatsVerifier(run.task)
        groups, generated, cursor = rl.collect(run, model, 1, 0)
        assert cursor == 8 * (refills + 1) and len(generated) == cursor * 4
        batch, sums = rl.score(run, groups, model, None)
        rl.update(run, batch, [rl.PolicyLearner(model, opt, run)], 0, lambda s: cfg.lr, sums)
        row = train.step_metrics(run, sums, groups, generated, {"timeouts": 0, "errors": 0}, 1)
        kept = [s.reward for g in groups for s in g]
        assert row["refill_cap_hit"] == 1 and row["groups"] == len(groups) < 8
        assert row["reward"] == pytest.approx(sum(s.reward for s in generated) / len(generated))
        assert row["reward_kept"] == pytest.approx(sum(kept) / max(len(kept), 1))
        assert ("opt_steps" in row) == bool(groups)
        # the signal statistics span every group generated, the dropped (flat) ones too, not only the kept
        by_group = [[s.reward for s in generated[i:i + 4]] for i in range(0, len(generated), 4)]
        flat_share = sum(len(set(g)) == 1 for g in by_group) / len(by_group)
        assert flat_share > 0 and row["zero_adv_frac"] == pytest.approx(flat_share)
        assert row["reward_std"] == pytest.approx(sum(torch.tensor(g).double().std().item() for g in by_group)
                                                  / len(by_group))
    assert groups  # the second case kept some groups


def test_refill_cap_and_skipped_steps_warn_on_the_console(tmp_path, capsys):
    cfg = TrainConfig(prompts_per_step=8, max_refill_rounds=2, log_samples_every=0)
    row = dict(step=3, reward=0.5, accuracy=0.0, response_length=4.0, groups=5, refill_cap_hit=1, lr=0.1,
               rollout_s=0.0, train_s=0.0, opt_steps=2, skipped_steps=1, clip_frac=0.0, grad_norm=float("inf"))
    train.Log(tmp_path, Dist()).step(row, [], cfg, 0.0)
    out = capsys.readouterr().out
    assert "warning: step 3: dynamic sampling kept 5 of 8 groups after --max_refill_rounds 2: training on those" in out
    assert "warning: step 3: 1 of 2 optimiser steps skipped: the gradient norm was not finite" in out
    logged = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert (logged["refill_cap_hit"], logged["skipped_steps"]) == (1, 1)
    assert logged["grad_norm"] is None  # strict JSON: no Infinity / NaN tokens in metrics.jsonl


def test_a_non_finite_gradient_skips_the_step_and_leaves_the_weights(folder):
    """An inf planted in one gradient: the optimiser step is skipped (weights and AdamW state untouched, the
    gradients dropped) and counted as skipped_steps; the next step trains normally."""
    torch.manual_seed(0)
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    cfg = TrainConfig(prompts_per_step=4, group_size=4, max_completion_len=6, lr=1e-2)
    run = make_run(cfg, rows(4))
    groups, *_ = rl.collect(run, model, 1, 0)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    before = [p.detach().clone() for p in model.parameters()]
    hook = model.model.layers[0].mlp.up_proj.weight.register_hook(lambda g: g.index_fill(0, torch.tensor([3]),
                                                                                          float("inf")))
    m = train_step(run, model, None, opt, groups)
    hook.remove()
    assert (m["skipped_steps"], m["opt_steps"]) == (1, 1) and m["grad_norm"] == 0  # a skipped step's norm: left out
    assert math.isnan(train.taken_mean(m, "grad_norm"))  # the step's logged grad_norm: null in metrics.jsonl
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and not opt.state
    assert all(p.grad is None for p in model.parameters())
    m = train_step(run, model, None, opt, groups)
    assert (m["skipped_steps"], m["opt_steps"]) == (0, 1) and math.isfinite(m["grad_norm"])
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_tis_weights_in_the_loop_by_hand(folder):
    """--tis_cap 2 through score + update: the sampler's log-probs planted at old - log 4 on even tokens (weight
    4, capped at 2) and old + log 2 on odd ones (weight 1/2), old being the policy's own log-probs here (one
    pass). tis_weight_mean and tis_capped_frac are those weights' token means."""
    torch.manual_seed(0)
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    cfg = TrainConfig(prompts_per_step=4, group_size=4, max_completion_len=6, tis_cap=2.0, lr=0.0)
    run = make_run(cfg, rows(4))
    groups, *_ = rl.collect(run, model, 1, 0)
    samples = [s for g in groups for s in g]
    batch = rl.pack(samples, torch.device("cpu"))
    old = rl.logprobs(run, model, batch)  # (B, T)
    n = capped = 0
    for b, s in enumerate(samples):
        start = len(s.prompt) - 1
        own = old[b, start:start + len(s.completion)].tolist()
        s.sampler_logp = [x - math.log(4) if t % 2 == 0 else x + math.log(2) for t, x in enumerate(own)]
        n, capped = n + len(own), capped + (len(own) + 1) // 2
    m = train_step(run, model, None, torch.optim.SGD(model.parameters(), lr=0.0), groups)
    assert m["tis_weight_mean"] / m["tokens"] == pytest.approx((2 * capped + 0.5 * (n - capped)) / n, rel=1e-5)
    assert m["tis_capped_frac"] / m["tokens"] == pytest.approx(capped / n, rel=1e-6)


@pytest.mark.skipif(not (train.Path(__file__).resolve().parents[1] / "data/tiny/model.safetensors").is_file(),
                    reason="data/tiny not built")
def test_dynamic_sampling_and_tis_reach_metrics_jsonl(tmp_path):
    """The options as a user turns them on: their metrics are in every step's row of metrics.jsonl."""
    out = tmp_path / "run"
    train.main(["--out", str(out), "--steps", "2", "--prompts_per_step", "4", "--group_size", "4", "--eval_size",
                "4", "--eval_every", "0", "--max_completion_len", "8", "--threads", "1", "--dynamic_sampling",
                "--max_refill_rounds", "1", "--tis_cap", "2"])
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if '"reward"' in x]
    keys = {"reward", "accuracy", "reward_kept", "accuracy_kept", "refill_cap_hit"}
    assert len(steps) == 2 and all(keys <= set(r) for r in steps), steps
    trained = [r for r in steps if "opt_steps" in r]
    assert all({"tis_weight_mean", "tis_capped_frac"} <= set(r) for r in trained)
    # On the CPU in fp32 the trainer scores exactly the sampler's distribution: weights 1, none capped.
    assert all(abs(r["tis_weight_mean"] - 1) < 1e-4 and r["tis_capped_frac"] == 0 for r in trained)


def test_completion_only_logprobs_equal_the_full_ones(folder):
    """The fused head on the completion positions only (Batch.positions) gives the full pass's log-probs and
    entropies there, 0 elsewhere, and the same gradients for a loss over the completion tokens."""
    torch.manual_seed(0)
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    g = torch.Generator().manual_seed(1)
    samples = [rl.Sample(prompt=torch.randint(0, 97, (p,), generator=g).tolist(),
                         completion=torch.randint(0, 97, (c,), generator=g).tolist(), sampler_logp=[0.0] * c,
                         truncated=False, reward=0.0, text="") for p, c in ((5, 3), (2, 7), (9, 1), (4, 4))]
    batch = rl.pack(samples, torch.device("cpu"))
    rows, cols = batch.positions()
    assert len(rows) == 15 and torch.equal(batch.completion.nonzero().T, torch.stack([rows, cols]))
    grads = []
    for positions in (None, (rows, cols)):
        model.zero_grad()
        logp, ent = model(batch.ids, targets=batch.targets, temperature=0.7, positions=positions)
        ((logp + 0.1 * ent) * batch.completion).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
        if positions is None:
            full = logp.detach() * batch.completion, ent.detach() * batch.completion
    torch.testing.assert_close(logp.detach(), full[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ent.detach(), full[1], rtol=1e-6, atol=1e-6)
    assert (logp.detach()[batch.completion == 0] == 0).all()
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: counts the host's waits for the GPU")
def test_update_waits_for_the_gpu_once_per_optimiser_step(folder):
    """torch's sync debug mode warns at every host sync (an .item(), a bool of a GPU tensor, a blocking copy).
    In update(), the host may wait only at the non-finite check of each optimiser step (4 here: mu 2 x 2
    mini-batches, over 16 micro-batches): not in the forward, the loss, the statistics, the clip or AdamW.
    Syncs inside backward() are torch's kernels (listed in the message, not counted)."""
    from tests.dist_worker import fixed_groups
    dev = torch.device("cuda")
    model = Transformer.from_pretrained(folder, dtype=torch.float32, device=dev)
    cfg = TrainConfig(prompts_per_step=4, group_size=4, max_completion_len=6, mu=2, mini_batch_size=8,
                      micro_batch_size=2, loss_type="dapo", lr=1e-3)
    run = make_run(cfg, rows(4), d=Dist(device=dev))
    run.prec = choose(dev, "auto")  # bf16 autocast, the GPU recipe
    batch, _ = rl.score(run, fixed_groups(), model, None)
    learners = [rl.PolicyLearner(model, torch.optim.AdamW(model.parameters(), lr=cfg.lr), run)]
    rl.update(run, batch, learners, 0, lambda s: cfg.lr, rl.Sums())  # warm-up: Triton compiles, AdamW state
    torch.cuda.synchronize()
    sums = rl.Sums()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            rl.update(run, batch, learners, 0, lambda s: cfg.lr, sums)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    # A warning names the innermost Python frame: a sync in our code names our line; one in a backward kernel
    # names torch's autograd entry (the engine replays its warnings there once backward() ends).
    syncs = [(w.filename, w.lineno) for w in caught if "synchroniz" in str(w.message)]
    backward = [s for s in syncs if "/torch/autograd/" in s[0] or s[0].endswith("torch/_tensor.py")]
    ours = [(f"{f.split('/')[-1]}:{n}", linecache.getline(f, n).strip()) for f, n in syncs if (f, n) not in backward]
    steps = int(sums.sums["opt_steps"])
    print(f"host syncs in update(): {len(ours)} outside backward() for {steps} optimiser steps, {len(backward)} "
          f"inside backward()")
    assert steps == 4 and len(ours) == steps, (ours, backward)


def two_updates(folder, skip, **kw):
    """Two updates from the same start: a batch where half the groups have equal rewards, then one
    where every group has (each mini-batch all zero-gradient rows). Returns the weights, both steps' statistics,
    and whether each micro-batch's forward recorded a graph."""
    torch.manual_seed(0)
    model = Transformer.from_pretrained(folder, dtype=torch.float32)
    cfg = TrainConfig(**{**dict(prompts_per_step=4, group_size=4, max_completion_len=8, mini_batch_size=8, lr=0.5,
                                grad_clip=0.0), **kw})
    run = make_run(cfg, rows(4))
    # SGD with momentum, not AdamW: Adam's m / sqrt(v) turns a gradient's last-bit noise into a full-size step on
    # a weight whose gradient is ~0, which would hide the comparison; the momentum still moves the weights on
    # a step of zero gradients, which is what the second update checks.
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    learner, graphs = rl.PolicyLearner(model, opt, run), []
    real = learner.loss
    learner.loss = lambda *a: graphs[-1].append(torch.is_grad_enabled()) or real(*a)
    stats, opt_step = [], 0
    for reward in (lambda i, j: float(j % 2) if i % 2 else 1.0, lambda i, j: float(i % 2)):
        graphs.append([])
        batch, sums = rl.score(run, flat_groups(4, reward=reward), model, None)
        opt_step = (rl.update if skip else update_backpropagating_all)(run, batch, [learner], opt_step,
                                                                         lambda s: cfg.lr, sums)
        stats.append(sums.reduce(run.d))
    return torch.cat([p.detach().flatten() for p in model.parameters()]), stats, graphs


def update_backpropagating_all(*a, **k):
    real = rl.zero_gradient_rows
    rl.zero_gradient_rows = lambda *_: set()
    try:
        return rl.update(*a, **k)
    finally:
        rl.zero_gradient_rows = real


@pytest.mark.parametrize("kw", [dict(), dict(loss_type="dapo"), dict(loss_type="dr_grpo", algo="rloo"),
                                dict(mu=2, tis_cap=2.0, clip_ratio_c=3.0)])
def test_zero_gradient_rows_run_forward_only_and_change_nothing(folder, kw):
    """Rows whose every advantage is 0 skip their backward (a fifth of the demo's rows): the weights and every
    statistic equal those of the update that backpropagates them, also when a whole mini-batch is such rows
    (an optimiser's momentum still moves the weights on zero gradients, so that mini-batch runs backward)."""
    base = torch.cat([p.detach().flatten() for p in Transformer.from_pretrained(folder, torch.float32).parameters()])
    skipped, s_stats, s_graphs = two_updates(folder, skip=True, **kw)
    full, f_stats, f_graphs = two_updates(folder, skip=False, **kw)
    # Two mini-batches a step. First step: each has rows with a gradient and rows without (run forward only);
    # second step: nothing but zero advantages, so each mini-batch runs backward whole.
    passes = kw.get("mu", 1)
    assert s_graphs == [[True, False] * 2 * passes, [True] * 2 * passes]
    assert f_graphs == [[True] * 2 * passes] * 2
    assert (full - base).abs().max() > 1e-3
    torch.testing.assert_close(skipped, full, rtol=1e-5, atol=1e-6)
    for a, b in zip(s_stats, f_stats):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
