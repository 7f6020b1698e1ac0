"""nanoR1 against TRL's GRPOTrainer on the same work: seconds per step by phase, and the held-out gain.

    python bench/bench_vs_trl.py                      3 pairs of 30-step runs, one after the other, then the table
    python bench/bench_vs_trl.py --repeats 1 --steps 10 --out out/vs-trl
    python bench/bench_vs_trl.py --trl_micro 256      TRL with other micro-batches (its per_device_train_batch_size)

TRL is an optional peer (`pip install trl`), never a requirement of nanoR1; without it only nanoR1 runs.

The work, set up identically on both sides (TRL gets nanoR1's choices, not its own defaults):
  - the shipped tiny base (data/tiny, fp32) and the arithmetic task's train prompts in nanoR1's order
    (PromptStream, seed 0), 32 prompts x 8 completions per step, 48 new tokens, stopping at `</answer>`;
  - nanoR1's own reward (nanor1/tasks/arithmetic.py) for both;
  - loss `grpo` (token mean per sequence, then the batch mean), no KL, clip 0.2, group-std advantages,
    constant lr 3e-5, AdamW (0.9, 0.99, eps 1e-8, no weight decay), grad clip 1.0, no gradient
    checkpointing, one optimiser step per batch (TRL: gradient accumulation over the 256 completions and
    steps_per_generation = gradient_accumulation_steps, so it computes no separate old log-probs either);
  - one thread each (torch.set_num_threads(1), OMP_NUM_THREADS=1), each side in its own process, run one after
    the other.
Each side is timed inside its own loop: "rollout + reward" is nanoR1's collect (generate, decode, verifier) and
TRL's _generate_and_score_completions (generate, decode, reward, advantages); "update" is the rest of the step
(nanoR1: score + update; TRL: the forward/backward passes and the optimiser step). Wall seconds and this
process's CPU seconds both: on a shared machine wall time also counts waiting for a core. Per run, the
median over the steps after the first (the first pays one-off set-up).

One evaluator for both: `sample.py --eval` (greedy pass@1 on the first 200 held-out problems, 48 new tokens)
on the base and on each run's final weights; the gain is final - base.

Differences left, and why they do not favour nanoR1: TRL's completions that hit `</answer>` also carry the pad
token after it into the loss (TRL masks after the first EOS, and generate pads with EOS); TRL samples from all
320 embedding rows of the tiny base, nanoR1 from the tokenizer's 306 (the 14 padding rows are never drawn in
practice). nanoR1's rewards run in its verifier process (about 5 ms of CPU a step not counted in its CPU column).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STEPS, PROMPTS, G, NEW_TOKENS, LR, SEED = 30, 32, 8, 48, 3e-5, 0


def load():
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


# ----------------------------------------------------------------------------- nanoR1's side (its own process)

def run_nanor1(out: Path, steps: int, micro: int):
    """train.py's main loop, untouched; its phases are timed by wrapping the step functions it calls."""
    sys.path.insert(0, str(ROOT))
    import train
    times = []

    def timed(fn, phase):
        def wrapper(*a, **k):
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                if phase == "rollout":
                    times.append({"rollout_wall": 0.0, "rollout_cpu": 0.0, "update_wall": 0.0, "update_cpu": 0.0})
                times[-1][phase + "_wall"] += time.perf_counter() - w
                times[-1][phase + "_cpu"] += time.process_time() - c
        return wrapper
    train.collect, train.score, train.update = (timed(train.collect, "rollout"), timed(train.score, "update"),
                                                timed(train.update, "update"))
    args = ["--out", str(out), "--steps", str(steps), "--threads", "1", "--eval_every", "0", "--save_every", "0",
            "--log_samples_every", "0", "--prompts_per_step", str(PROMPTS), "--group_size", str(G),
            "--max_completion_len", str(NEW_TOKENS), "--lr", str(LR), "--lr_schedule", "constant", "--beta2", "0.99",
            "--loss_type", "grpo", "--precision", "fp32", "--seed", str(SEED)]
    if micro:
        args += ["--micro_batch_size", str(micro)]
    train.main(args)
    return times, str(out / f"ckpt-{steps}")


# ----------------------------------------------------------------------------- TRL's side (its own process)

def run_trl(out: Path, steps: int, micro: int):
    """TRL's GRPOTrainer on nanoR1's prompts, in nanoR1's order, with nanoR1's reward."""
    import functools

    import torch
    try:
        import datasets
        import transformers
        import trl
    except ImportError as e:
        raise SystemExit(f"TRL is not installed ({e}): pip install trl  (an optional peer of this benchmark)")
    sys.path.insert(0, str(ROOT))
    from nanor1.data import PromptStream
    from nanor1.tasks import get_task
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    task = get_task("arithmetic")
    rows = task.train_rows()
    stream = PromptStream(len(rows), SEED)  # nanoR1's order: step s takes positions [32 (s-1), 32 s)
    order = [stream[i] for i in range(steps * PROMPTS)]
    data = datasets.Dataset.from_list([{"prompt": task.prompt(rows[i], None), "row": i} for i in order])

    def reward(completions, row, **_):
        return [task.reward(c, rows[r]) for c, r in zip(completions, row)]

    micro = micro or 16
    cfg = trl.GRPOConfig(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=micro,
        gradient_accumulation_steps=PROMPTS * G // micro, num_generations=G, max_completion_length=NEW_TOKENS,
        generation_kwargs={"stop_strings": ["</answer>"]}, temperature=1.0, top_p=1.0, top_k=0,
        learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, adam_beta1=0.9, adam_beta2=0.99,
        adam_epsilon=1e-8, weight_decay=0.0, max_grad_norm=1.0, loss_type="grpo", beta=0.0, epsilon=0.2,
        num_iterations=1, scale_rewards="group", gradient_checkpointing=False, shuffle_dataset=False, seed=SEED,
        use_cpu=True, bf16=False, fp16=False, logging_steps=1, save_strategy="no", report_to="none",
        dataloader_num_workers=0, log_completions=False, disable_tqdm=True)
    tok = transformers.AutoTokenizer.from_pretrained(ROOT / "data" / "tiny")
    model = transformers.AutoModelForCausalLM.from_pretrained(ROOT / "data" / "tiny", dtype=torch.float32)
    trainer = trl.GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=data, processing_class=tok)
    # generate() matches stop strings only when it is handed the tokenizer, which GRPOTrainer does not pass.
    trainer.model.generate = functools.partial(trainer.model.generate, tokenizer=tok)
    times = []
    rollout = trainer._generate_and_score_completions

    def timed_rollout(*a, **k):
        w, c = time.perf_counter(), time.process_time()
        try:
            return rollout(*a, **k)
        finally:
            times[-1]["rollout_wall"] += time.perf_counter() - w
            times[-1]["rollout_cpu"] += time.process_time() - c
    trainer._generate_and_score_completions = timed_rollout

    class Clock(transformers.TrainerCallback):
        def on_step_begin(self, *_, **__):
            times.append({"rollout_wall": 0.0, "rollout_cpu": 0.0, "t0": time.perf_counter(), "c0": time.process_time()})

        def on_step_end(self, *_, **__):
            t = times[-1]
            t["update_wall"] = time.perf_counter() - t.pop("t0") - t["rollout_wall"]
            t["update_cpu"] = time.process_time() - t.pop("c0") - t["rollout_cpu"]
    trainer.add_callback(Clock())
    trainer.train()
    final = out / "final"
    trainer.save_model(str(final))
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the very files nanoR1's loader reads
        shutil.copy(ROOT / "data" / "tiny" / name, final / name)
    return times, str(final)


# ----------------------------------------------------------------------------- the orchestrator

def evaluate(model, out: Path):
    """Greedy pass@1 on the first 200 held-out problems, by sample.py --eval (one evaluator for both sides)."""
    p = subprocess.run([sys.executable, "sample.py", "--model", model, "--eval", "--limit", "200",
                        "--max_new_tokens", str(NEW_TOKENS), "--out", str(out)], cwd=ROOT, capture_output=True,
                       text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if p.returncode:
        raise SystemExit(f"sample.py --eval failed on {model}:\n{p.stderr[-2000:]}")
    return float(p.stdout.split("pass@1=")[1].split()[0])


def side(name, out: Path, args):
    """One run of one side in a fresh process; returns its record."""
    out.mkdir(parents=True, exist_ok=True)
    before = load()
    cmd = [sys.executable, __file__, "--_side", name, "--_out", str(out), "--steps", str(args.steps),
           "--nanor1_micro", str(args.nanor1_micro), "--trl_micro", str(args.trl_micro)]
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if p.returncode:
        raise SystemExit(f"the {name} run failed:\n{p.stderr[-3000:]}")
    rec = json.loads((out / "times.json").read_text())
    steps = rec["times"][1:]  # the first step pays one-off set-up
    med = lambda k: statistics.median(t[k] for t in steps)  # noqa: E731
    rec.update(name=name, load_before=before, load_after=load(), run_s=time.time() - t0,
               **{k: med(k) for k in ("rollout_wall", "rollout_cpu", "update_wall", "update_cpu")},
               step_wall=statistics.median(t["rollout_wall"] + t["update_wall"] for t in steps),
               step_cpu=statistics.median(t["rollout_cpu"] + t["update_cpu"] for t in steps))
    rec["accuracy"] = evaluate(rec["model"], out / "eval.jsonl")
    print(f"{name}: {rec['step_wall']:.2f} s/step wall ({rec['step_cpu']:.2f} CPU), rollout {rec['rollout_wall']:.2f} "
          f"update {rec['update_wall']:.2f}, eval {rec['accuracy']:.3f}, load {before} -> {rec['load_after']}",
          flush=True)
    return rec


def span(xs, fmt="{:.2f}"):
    lo, hi = min(xs), max(xs)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)} - {fmt.format(hi)}"


def report(records, base):
    sides = [s for s in ("nanor1", "trl") if any(r["name"] == s for r in records)]
    by = {s: [r for r in records if r["name"] == s] for s in sides}
    n = {s: len(by[s]) for s in sides}
    print(f"\n| | {' | '.join(f'{s} ({n[s]} runs)' for s in sides)} |")
    print("|---|" + "---|" * len(sides))
    rows = [("s/step, wall (median per run)", "step_wall"), ("  rollout + reward", "rollout_wall"),
            ("  update", "update_wall"), ("s/step, CPU of the process", "step_cpu"), ("  rollout + reward", "rollout_cpu"),
            ("  update", "update_cpu")]
    for label, k in rows:
        print(f"| {label} | " + " | ".join(span([r[k] for r in by[s]]) for s in sides) + " |")
    print(f"| held-out greedy pass@1 (base {base:.3f}) | " +
          " | ".join(span([r["accuracy"] for r in by[s]], "{:.3f}") for s in sides) + " |")
    print("| held-out gain | " + " | ".join(span([r["accuracy"] - base for r in by[s]], "{:+.3f}") for s in sides) + " |")
    print("| load average (1, 5, 15 min) before each run | " +
          " | ".join("; ".join(r["load_before"] for r in by[s]) for s in sides) + " |")
    if len(sides) == 2:
        pairs = list(zip(by["nanor1"], by["trl"]))
        for k, label in (("step_wall", "wall"), ("step_cpu", "CPU")):
            ratios = [a[k] / b[k] for a, b in pairs]
            print(f"nanoR1 / TRL, s/step {label}, per pair: " + ", ".join(f"{r:.2f}x" for r in ratios) +
                  f"; median {statistics.median(ratios):.2f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--repeats", type=int, default=3, help="pairs of runs (nanoR1 then TRL, alternating the order)")
    p.add_argument("--out", default="out/bench-vs-trl")
    p.add_argument("--only", choices=("nanor1", "trl"), default=None, help="run one side only")
    p.add_argument("--nanor1_micro", type=int, default=0, help="nanoR1's --micro_batch_size (0: its default)")
    p.add_argument("--trl_micro", type=int, default=16, help="TRL's per_device_train_batch_size")
    p.add_argument("--_side", help=argparse.SUPPRESS)
    p.add_argument("--_out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._side:  # a child: one run of one side
        out = Path(args._out)
        fn = run_nanor1 if args._side == "nanor1" else run_trl
        times, model = fn(out, args.steps, args.nanor1_micro if args._side == "nanor1" else args.trl_micro)
        (out / "times.json").write_text(json.dumps({"times": times, "model": model}))
        return
    root = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    print(f"# {root}: {args.steps} steps per run, load {load()}", flush=True)
    base = evaluate(str(ROOT / "data" / "tiny"), root / "base-eval.jsonl")
    print(f"base: held-out greedy pass@1 {base:.3f}", flush=True)
    records = []
    for r in range(args.repeats):
        order = ["nanor1", "trl"] if r % 2 == 0 else ["trl", "nanor1"]  # neither side always runs first
        for name in order:
            if args.only in (None, name):
                records.append(side(name, root / f"{name}-{r}", args))
    (root / "records.json").write_text(json.dumps(records, indent=1))
    report(records, base)


if __name__ == "__main__":
    main()
