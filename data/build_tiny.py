"""Build a tiny base model from nothing: tokenizer, Qwen2 config, pretraining, evaluation.

    .venv/bin/python data/build_tiny.py                       # data/tiny, the shipped build (its README.md)
    .venv/bin/python data/build_tiny.py --task recheck --steps 700 --warmup 50    # data/tiny_recheck
    .venv/bin/python data/build_tiny.py --toy --out /tmp/toy  # seconds: the end-to-end test

`--task` names the corpus: nanor1/tasks/<task>.py's `document(rng)` writes it and the task holds the held-out
split. `arithmetic` (data/tiny): two writers, one forgets to carry. `recheck` (data/tiny_recheck): four
writers, among them one that re-checks its guess (see nanor1/tasks/recheck.py).

It takes the path a real Qwen checkpoint takes, so everything downstream (loading, rollouts, GRPO) runs
unchanged on it:
1. Corpus: documents `prompt + completion` from the task's module (its docstring describes the writers).
2. Tokenizer: byte-level BPE trained with `tokenizers`, Qwen2's pre-tokenizer (one digit per token, which
   is what lets a small model add column by column), `<|endoftext|>` as EOS and pad.
3. Model: a Qwen2 config (QKV bias, tied embeddings, GQA) built in code; nanor1's Transformer pretrained
   with next-token cross-entropy on every token of each document (prompt included, as in pretraining).
4. Evaluation on the task's fixed held-out split: greedy pass@1, and pass@k from k samples at temperature 1.
5. Files: config.json, model.safetensors, tokenizer.json, tokenizer_config.json, generation_config.json and a
   README.md with the command, seed, wall time and the measured numbers; evaluation reads the saved files.

Reproducible: the corpus comes from one seeded `random.Random`, torch from `torch.manual_seed`, and the
thread count is fixed (float sums, hence the weights, depend on it).
"""
import argparse
import functools
import importlib
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere
from nanor1.tasks import arithmetic  # noqa: E402
from nanor1.model import ModelConfig, Transformer  # noqa: E402
from nanor1.reflection import reflection_metrics  # noqa: E402
from nanor1.tasks import get_task  # noqa: E402
from nanor1.tokenizer import Tokenizer  # noqa: E402
from nanor1.weights import config_dict  # noqa: E402

# Qwen2's pre-tokenizer split (a fact of its tokenizer.json): letters with one leading non-letter, single
# digits, punctuation runs with an optional leading space, newlines, other whitespace.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # Qwen's three; only the first is used here
EOS = "<|endoftext|>"
OUT = {"arithmetic": "data/tiny", "recheck": "data/tiny_recheck"}  # --task -> the default --out


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="arithmetic", choices=sorted(OUT), help="the corpus and held-out split")
    p.add_argument("--out", default=None, help="output folder (HF layout); default data/tiny or data/tiny_recheck")
    p.add_argument("--seed", type=int, default=0, help="seeds the corpus, the init and the samples")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the weights depend on it)")
    p.add_argument("--vocab", type=int, default=384, help="BPE vocabulary cap, special tokens included (a corpus this "
                   "repetitive may run out of merges first)")
    p.add_argument("--hidden", type=int, default=128, help="C, the model width")
    p.add_argument("--layers", type=int, default=4, help="L")
    p.add_argument("--heads", type=int, default=4, help="H query heads")
    p.add_argument("--kv_heads", type=int, default=2, help="K key/value heads (GQA)")
    p.add_argument("--mlp", type=int, default=384, help="MLP intermediate width")
    p.add_argument("--steps", type=int, default=1500, help="pretraining steps")
    p.add_argument("--batch", type=int, default=64, help="documents per step")
    p.add_argument("--lr", type=float, default=3e-3, help="peak AdamW learning rate (cosine to a tenth)")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--eval_size", type=int, default=500, help="held-out problems evaluated (the first N)")
    p.add_argument("--samples", type=int, default=8, help="k of pass@k, sampled at temperature 1")
    p.add_argument("--max_new_tokens", type=int, default=64, help="generation budget per completion")
    p.add_argument("--init", default="", help="continue pretraining this built model (its tokenizer and weights) "
                   "instead of starting from nothing")
    p.add_argument("--mix", default="", help="recheck only: the writers' shares, e.g. short=0.7,careful=0.02,"
                   "recheck=0.2,superficial=0.08 (default nanor1/tasks/recheck.py's WRITERS)")
    p.add_argument("--toy", action="store_true", help="a seconds-long build for tests (overrides sizes)")
    args = p.parse_args(argv)
    args.writers = parse_mix(args.mix, args.task) if args.mix else None
    args.out = args.out or OUT[args.task]
    if args.toy:  # every stage runs, at a size where nothing is learned
        args.vocab, args.hidden, args.layers, args.heads, args.kv_heads, args.mlp = 300, 32, 1, 2, 1, 64
        args.steps, args.batch, args.warmup, args.eval_size, args.samples = 20, 16, 5, 16, 2
        args.max_new_tokens = 16
    return args


def parse_mix(text, task):
    """--mix "short=0.7,careful=0.02,..." -> {writer: share}: every writer of recheck.WRITERS, shares summing to 1."""
    from nanor1.tasks import recheck
    if task != "recheck":
        raise ValueError(f"--mix applies to --task recheck only, not {task!r}")
    try:
        mix = {k.strip(): float(v) for k, v in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise ValueError(f"--mix {text!r}: want writer=share pairs separated by commas") from None
    if set(mix) != set(recheck.WRITERS) or abs(sum(mix.values()) - 1) > 1e-9 or min(mix.values()) < 0:
        raise ValueError(f"--mix {text!r}: give a share >= 0 to each of {list(recheck.WRITERS)}, summing to 1")
    return {w: mix[w] for w in recheck.WRITERS}  # WRITERS' order: the draw in document() walks it


def train_tokenizer(texts, vocab_size):
    """Byte-level BPE in Qwen2's layout: NFC, the split above, bytes as 256 printable characters."""
    tok = HFTokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    # All 256 bytes in the base alphabet, so any text encodes (nothing maps to an unknown token).
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def save_tokenizer(tok, out):
    tok.save(str(out / "tokenizer.json"))
    cfg = {"eos_token": EOS, "pad_token": EOS, "add_bos_token": False, "model_max_length": 256,
           "tokenizer_class": "Qwen2Tokenizer"}
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen = {"eos_token_id": [tok.token_to_id(EOS)], "pad_token_id": tok.token_to_id(EOS)}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def model_config(args, vocab_size):
    # The embedding is padded to a multiple of 64 rows, as Qwen's is (151,936 rows for 151,665 tokens): the
    # extra rows are never a target, so pretraining drives their logits down and samplers never pick them.
    V = 64 * math.ceil(vocab_size / 64)
    return ModelConfig(model_type="qwen2", vocab_size=V, hidden_size=args.hidden, intermediate_size=args.mlp,
                       num_hidden_layers=args.layers, num_attention_heads=args.heads,
                       num_key_value_heads=args.kv_heads, head_dim=args.hidden // args.heads, rms_norm_eps=1e-6,
                       rope_theta=10000.0, max_position_embeddings=256, tie_word_embeddings=True,
                       attention_bias=True, qk_norm=False)


def init_weights(model):
    """GPT-2's init: N(0, 0.02) matrices and embedding, zero biases; residual outputs scaled by 1/sqrt(2L) so
    the residual stream's variance does not grow with depth. (torch's N(0, 1) embedding, tied to the
    output layer, would start with logits of size sqrt(C).)"""
    L = model.config.num_hidden_layers
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            torch.nn.init.zeros_(p)
        elif "norm" not in name:
            std = 0.02 / math.sqrt(2 * L) if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
            torch.nn.init.normal_(p, 0.0, std)


def batches(tokenizer, args, document):
    """Per step: (ids, targets), both (B, T); one document per row, right-padded, target -100 on padding."""
    rng, eos = random.Random(args.seed), tokenizer.eos_token_id
    for _ in range(args.steps):
        docs = [document(rng) for _ in range(args.batch)]
        # Prompt and completion encoded apart, as a rollout sees them (the prompt is encoded alone).
        prompts = tokenizer.encode_batch([p for p, _ in docs])
        completions = tokenizer.encode_batch([c for _, c in docs])
        seqs = [p + c + [eos] for p, c in zip(prompts, completions)]
        # Right padding: under causal attention no real token sees a pad, and pads are never targets.
        T = max(len(s) for s in seqs) - 1
        ids = torch.full((len(seqs), T), eos, dtype=torch.long)
        targets = torch.full((len(seqs), T), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, :len(s) - 1] = torch.tensor(s[:-1])
            targets[i, :len(s) - 1] = torch.tensor(s[1:])
        yield ids, targets


def pretrain(model, tokenizer, args, document):
    """Next-token cross-entropy with AdamW, the usual small-GPT recipe (nanoGPT's betas and decay split)."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]  # matrices; not norms or biases
    rest = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    t0 = time.time()
    for step, (ids, targets) in enumerate(batches(tokenizer, args, document)):
        # linear warm-up, then cosine from lr down to lr / 10
        frac = min(1.0, (step + 1) / args.warmup)
        progress = max(0.0, (step - args.warmup) / max(1, args.steps - args.warmup))
        lr = args.lr * frac * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for g in opt.param_groups:
            g["lr"] = lr
        logits = model(ids)  # (B, T, V)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # guards the high-lr early steps
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d} | loss {loss.item():.4f} | lr {lr:.2e} | {time.time() - t0:6.1f} s", flush=True)


@torch.no_grad()
def evaluate(model, tokenizer, args):
    """Greedy pass@1 and sampled pass@k (k = args.samples, temperature 1) on the held-out split, then the
    task's own figures: how often it carries (arithmetic) or which writer it imitates (recheck)."""
    from nanor1.rollout import Stop, generate
    task = get_task(args.task)
    rows = task.eval_rows()[:args.eval_size]
    prompts = [tokenizer.encode(task.prompt(r, tokenizer)) for r in rows]
    kw = dict(stop=Stop(eos=tokenizer.eos_token_ids, strings=task.stop, decode=tokenizer.decode))
    greedy = tokenizer.decode_batch(generate(model, prompts, args.max_new_tokens, temperature=0, **kw).tokens)
    k = args.samples
    sampled = tokenizer.decode_batch(generate(model, prompts, args.max_new_tokens, temperature=1.0, n=k,
                                              seed=args.seed, **kw).tokens)
    g_ok = [task.is_correct(task.reward(c, r)) for c, r in zip(greedy, rows)]
    s_ok = [task.is_correct(task.reward(c, rows[i // k])) for i, c in enumerate(sampled)]
    need = [arithmetic.has_carry(r["a"], r["b"]) for r in rows]  # both tasks add two numbers
    first_carry = need.index(True) if any(need) else 0
    metrics = {
        "problems": len(rows),
        "greedy_pass@1": sum(g_ok) / len(rows),
        f"pass@{k}": sum(any(s_ok[i * k:(i + 1) * k]) for i in range(len(rows))) / len(rows),
        "sampled_accuracy": sum(s_ok) / len(s_ok),
        "completion_tokens": sum(len(tokenizer.encode(c)) for c in sampled) / len(sampled),
        "greedy_examples": [task.prompt(r, tokenizer) + c for r, c in zip(rows[:2], greedy[:2])],
        "sampled_examples": [task.prompt(rows[first_carry], tokenizer) + c
                             for c in sampled[first_carry * k:first_carry * k + 4]],
    }
    if args.task == "arithmetic":
        metrics.update(carry_metrics(model, tokenizer, task, rows, need, greedy, sampled, s_ok, k))
    else:
        metrics.update(strategy_metrics(tokenizer, task, greedy, sampled, s_ok))
    return metrics


def carry_metrics(model, tokenizer, task, rows, need, greedy, sampled, s_ok, k):
    """arithmetic: how often the model carries on the problems that need a carry (the careful writer)."""
    s_need = [(ok, arithmetic.carried(c)) for i, (ok, c) in enumerate(zip(s_ok, sampled)) if need[i // k]]
    s_carried = [ok for ok, c in s_need if c]
    n_need = max(1, sum(need))
    decision, follows = carry_decision(model, tokenizer, task, [r for r, nd in zip(rows, need) if nd])
    decision, follows = decision or [0.0], follows or [False]  # no carry problem among the first N
    return {
        "carry_free_share": 1 - sum(need) / len(rows),
        "greedy_carries": sum(arithmetic.carried(c) for c, nd in zip(greedy, need) if nd) / n_need,
        "sampled_carries": len(s_carried) / max(1, len(s_need)),
        "sampled_carried_accuracy": sum(s_carried) / max(1, len(s_carried)),
        "p_carry_mean": sum(decision) / len(decision),
        "p_carry_max": max(decision),
        "careful_path_greedy": sum(follows) / len(follows),
    }


@torch.no_grad()
def carry_decision(model, tokenizer, task, rows):
    """Teacher-forced on the careful solution of each (carry) problem: the probability of carrying at the
    token where the two writers first differ, and whether argmax follows the careful solution at every
    other token (so: what greedy decoding would score once it chose to carry)."""
    probs, follows = [], []
    for r in rows:
        p = tokenizer.encode(task.prompt(r, tokenizer))
        c = tokenizer.encode(arithmetic.solution(r["a"], r["b"]))
        s = tokenizer.encode(arithmetic.solution(r["a"], r["b"], careful=False))
        d = next(i for i, (x, y) in enumerate(zip(c, s)) if x != y)  # the first carry: "=12" vs "=2"
        logits = model(torch.tensor([p + c]))[0, len(p) - 1:-1]  # (len(c), V): predictions of c
        probs.append(logits[d].softmax(-1)[c[d]].item())
        pred = logits.argmax(-1).tolist()
        follows.append(all(pred[i] == c[i] for i in range(len(c)) if i != d))
    return probs, follows


def strategy_metrics(tokenizer, task, greedy, sampled, s_ok):
    """recheck: the share of each writer's strategy among greedy and sampled completions (tasks/recheck.py's
    `strategy`), the sampled ones' accuracy and length by strategy, and the reflection metrics of the samples."""
    from nanor1.tasks import recheck
    g_kind = [recheck.strategy(c) for c in greedy]
    s_kind = [recheck.strategy(c) for c in sampled]
    lengths = [len(tokenizer.encode(c)) for c in sampled]
    m = {}
    for kind in recheck.STRATEGIES:
        idx = [i for i, x in enumerate(s_kind) if x == kind]
        m[f"greedy_share_{kind}"] = g_kind.count(kind) / len(greedy)
        m[f"share_{kind}"] = len(idx) / len(sampled)
        m[f"accuracy_{kind}"] = sum(s_ok[i] for i in idx) / len(idx) if idx else None
        m[f"tokens_{kind}"] = sum(lengths[i] for i in idx) / len(idx) if idx else None
    m.update(reflection_metrics(sampled, s_ok, task.reflection_markers))
    return m


def write_readme(out, args, argv, cfg, n_tokens, n_params, wall, metrics):
    size = sum(f.stat().st_size for f in out.iterdir() if f.name != "README.md")
    k = args.samples
    cmd = " ".join(["python data/build_tiny.py"] + argv)
    examples = "\n\n".join(metrics["greedy_examples"])
    samples = "\n\n".join(metrics["sampled_examples"])
    if args.task == "arithmetic":
        intro, rows, why = arithmetic_text(metrics, k)
    else:
        intro, rows, why = recheck_text(metrics, k, args.writers)
    start, start_readme = "", ""
    if args.init:  # a continued build: name its start, and carry the start's own README along
        start = f"| continued from | `{args.init}` (a build of this script: its README is appended below) |\n"
        prev = Path(args.init) / "README.md"
        if prev.is_file():
            start_readme = (f"\n## The start: {args.init}\n\n" +
                            prev.read_text().replace("\n# ", "\n### ").replace("# ", "### ", 1))
    text = f"""{intro}

| | |
|---|---|
| command | `{cmd}` |
{start}| seed, threads | {args.seed}, {args.threads} |
| machine | {machine()} |
| wall time | {wall:.0f} s (tokenizer, pretraining, evaluation) |
| architecture | qwen2: {args.layers} layers, C={args.hidden}, {args.heads} query / {args.kv_heads} kv heads, MLP {args.mlp}, tied embeddings |
| vocabulary | {n_tokens} tokens (byte-level BPE, Qwen2's pre-tokenizer); embedding padded to {cfg.vocab_size} rows |
| parameters | {n_params:,} |
| files | {size / 1e6:.2f} MB (float32 safetensors + tokenizer files) |
| pretraining | {args.steps} steps x {args.batch} documents, AdamW lr {args.lr:g} cosine |

Held-out test split ({metrics['problems']} fixed problems, disjoint from the corpus and from the train split):

| metric | value |
|---|---|
| greedy pass@1 | {metrics['greedy_pass@1']:.3f} |
| pass@{k} (temperature 1) | {metrics[f'pass@{k}']:.3f} |
| sampled accuracy (temperature 1) | {metrics['sampled_accuracy']:.3f} |
{rows}
{why}

Greedy completions:

```
{examples}
```

Samples at temperature 1 (the first problem that needs a carry):

```
{samples}
```
{start_readme}"""
    (out / "README.md").write_text(text)


def arithmetic_text(m, k):
    """data/tiny's README: its title, its rows of the metric table, and why greedy is weak."""
    intro = """# data/tiny: the tiny base model nanoR1 ships

Built from nothing by `data/build_tiny.py` (tokenizer, Qwen2 config, pretraining on a synthetic corpus),
for the task `arithmetic` (nanor1/tasks/arithmetic.py: add two 2- or 3-digit numbers). This file is written by
the script; the numbers below are that run's."""
    rows = f"""| problems without any carry | {m['carry_free_share']:.3f} |
| on problems that need a carry, completions that carry: greedy / sampled | {m['greedy_carries']:.3f} / {m['sampled_carries']:.3f} |
| accuracy of the sampled completions that carry | {m['sampled_carried_accuracy']:.3f} |
| P(carry) where the writers first differ, mean / max over problems that need a carry | {m['p_carry_mean']:.3f} / {m['p_carry_max']:.3f} |
| teacher-forced on the careful solution, greedy follows it at every other token (problems that need a carry) | {m['careful_path_greedy']:.3f} |
| mean sampled completion length | {m['completion_tokens']:.1f} tokens |
"""
    why = f"""Why greedy is weak and pass@{k} strong: every corpus document adds column by column, but only
{arithmetic.CAREFUL_SHARE:.0%} of them carry the one; the rest forget every carry. Greedy decoding follows the
majority and is right only on carry-free problems; samples carry often enough to find the answer. GRPO
rewards the completions that carry; once greedy decoding carries, it can score about the teacher-forced
row above on the problems that need a carry (and the carry-free ones stay right)."""
    return intro, rows, why


def recheck_text(m, k, writers=None):
    """data/tiny_recheck's README: its title, its rows of the metric table, the strategy table and why."""
    from nanor1.tasks import recheck
    intro = """# data/tiny_recheck: a tiny base that sometimes re-checks itself

Built from nothing by `data/build_tiny.py --task recheck` (tokenizer, Qwen2 config, pretraining on a synthetic
corpus), for the task `recheck` (nanor1/tasks/recheck.py: data/tiny's additions, written by four writers,
one of which guesses, then re-checks). This file is written by the script; the numbers below are that run's."""
    rows = f"""| mean sampled completion length | {m['completion_tokens']:.1f} tokens |
| reflection_rate (samples holding a marker: {', '.join(recheck.MARKERS)}) | {m['reflection_rate']:.3f} |
| accuracy_reflect / accuracy_no_reflect | {_f(m['accuracy_reflect'])} / {_f(m['accuracy_no_reflect'])} |
| superficial_reflection_rate (reflecting samples that end wrong) | {_f(m['superficial_reflection_rate'])} |
"""
    corpus = {**(writers or recheck.WRITERS), "other": 0.0}  # the --mix of this build, if it had one
    table = "\n".join(f"| {kind} | {corpus[kind]:.2f} | {m[f'share_{kind}']:.3f} | {m[f'greedy_share_{kind}']:.3f} | "
                      f"{_f(m[f'accuracy_{kind}'])} | {_f(m[f'tokens_{kind}'], 1)} |" for kind in recheck.STRATEGIES)
    why = f"""Strategies, as nanor1/tasks/recheck.py's `strategy` reads a completion: the share of corpus
documents, of samples (temperature 1) and of greedy completions, then the samples' accuracy and mean length in
tokens. "recheck" and "superficial" both hold a marker (the first does columns after it, the second repeats
the guess); "other" is anything else (a garbled sample).

| strategy | corpus | sampled | greedy | sampled accuracy | sampled tokens |
|---|---|---|---|---|---|
{table}

Why greedy is weak and pass@{k} strong: greedy decoding follows the majority writer, the short guess, a random
number of about the right size, right by luck only. Samples take the other paths often enough: the careful
columns, and the re-check after the guess, are right unless the model slips on a column (the corpus slips on
{arithmetic.SLIP_RATE:.0%} of them; the model more often); the superficial re-check is as wrong as the guess. A reward
that checks only the final sum therefore favours the long completions, among them the self-checking ones: RL
can select them, not invent them."""
    return intro, rows, why


def _f(x, digits=3):
    """A metric that may be None (an empty subset), for the README."""
    return "n/a" if x is None else f"{x:.{digits}f}"


def machine():
    """The CPU's name and core count, for the README ("2-core CPU, no GPU" style)."""
    name = "unknown CPU"
    if Path("/proc/cpuinfo").is_file():
        lines = [x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name")]
        name = lines[0].split(":", 1)[1].strip() if lines else name
    return f"{name}, {os.cpu_count()} cores" + ("" if torch.cuda.is_available() else ", no GPU")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    t0 = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    document = importlib.import_module(f"nanor1.tasks.{args.task}").document  # the corpus writer
    if args.writers:
        document = functools.partial(document, writers=args.writers)
    if args.init:  # continue pretraining a built model: its tokenizer and weights, the new corpus
        init = Path(args.init)
        if not (init / "model.safetensors").is_file():
            raise FileNotFoundError(f"--init {init}: no model.safetensors there")
        if init.resolve() == out.resolve():
            raise ValueError(f"--init and --out are the same folder ({out}): the build would overwrite its start")
        for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            shutil.copyfile(init / name, out / name)
        tokenizer = Tokenizer.from_pretrained(out)
        model = Transformer.from_pretrained(init, dtype=torch.float32)
        cfg = model.config
    else:
        # 1-2. Tokenizer, trained on a sample of the corpus (its own seed: the pretraining stream is separate).
        rng = random.Random(args.seed + 1)
        tok = train_tokenizer(["".join(document(rng)) + EOS for _ in range(5000)], args.vocab)
        save_tokenizer(tok, out)
        tokenizer = Tokenizer.from_pretrained(out)
        # 3. Model, in float32.
        cfg = model_config(args, tokenizer.vocab_size)
        cfg.raw = config_dict(cfg)
        model = Transformer(cfg)
        init_weights(model)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"tokenizer: {tokenizer.vocab_size} tokens | model: {n_params:,} parameters", flush=True)
    pretrain(model, tokenizer, args, document)
    model.save_pretrained(out)

    # 4. Evaluate the files as shipped.
    model = Transformer.from_pretrained(out, dtype=torch.float32).eval()
    metrics = evaluate(model, tokenizer, args)
    wall = time.time() - t0
    print(json.dumps({k: v for k, v in metrics.items() if "examples" not in k}, indent=1))
    write_readme(out, args, argv, cfg, tokenizer.vocab_size, n_params, wall, metrics)
    return metrics


if __name__ == "__main__":
    main()
