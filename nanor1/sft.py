"""Supervised fine-tuning (SFT): the cold start and the distillation of the R1 pipeline.

DeepSeek-R1 is three stages: SFT on a few thousand chain-of-thought examples (the cold start), RL, then SFT
of smaller models on traces rejection-sampled from the RL model (the R1-Distill models; Open-R1's step 1).
`train.py --algo grpo` runs the RL; `train.py --algo sft --data FILE.jsonl` runs this, on the same machinery:
FSDP2, gradient checkpointing, checkpoints and exact resume, the lr schedule, and nanor1/step.py's `update`
with its token-budget micro-batches. Only the learner differs: `Learner` below in place of PolicyLearner.

The loss is the mean negative log-likelihood per target token of the optimiser step:

    L = -(1 / N) sum_{b, t: m[b, t] = 1} log p(x[b, t+1] | x[b, <= t])        N = sum_{b, t} m[b, t]

m marks the target tokens (below); N counts them over the whole step on all ranks before any forward
(step.normalisers), so the split into micro-batches and ranks never changes the gradient. log p comes from
the fused head (kernels/logprob.py) at the scored positions only, at temperature 1: the (N, V) logits are
never materialised.

Data: one JSON object per line, in either format.

    {"prompt": str, "completion": str}            targets: the completion's tokens, then EOS (the tokenizer's
                                                  first), unless the completion already ends in an EOS token
    {"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]}
                                                  rendered with tokenizer.apply_chat_template (ChatML); targets:
                                                  each assistant turn's content and its end-of-turn <|im_end|>

Context and targets are encoded apart, as a rollout sees them: the prompt (for a chat, everything up to
`<|im_start|>assistant\\n`, the generation prompt) alone, then the reply's tokens; a BPE merge across that
boundary would never occur in sampling. A chat row ends with its last assistant turn's <|im_end|>. Every row
must fit the model's context: a longer one is an error naming its line, or with --drop_long is left out,
counted on the console at start-up. Bad rows (not JSON, a missing field, an unknown role, an empty
completion) are one error naming the file and line.

Steps and epochs: a step is one optimiser step on --prompts_per_step examples (over all ranks; "prompts"
because each example is one prompt and its reply), read in a fresh shuffle of the file each epoch
(data.PromptStream, a function of the seed and the position, so a resume needs only the cursor). An epoch
of N examples is N / prompts_per_step steps; a step may straddle two epochs.

Why data/build_tiny.py's pretraining does not call this: it trains on every token, the prompt's included
(pretraining, not instruction tuning), with weight decay on the matrices only and full logits over its
320-token vocabulary, in one process. Routing it through this learner would change its loss, its optimiser
groups and its random draws, so data/tiny would no longer rebuild bit for bit from its recorded seed and the
figures in its README (tests/test_tiny.py checks the build); the two loops share only the idea.
"""
import os
from dataclasses import dataclass

import torch

from nanor1 import distributed
from nanor1.step import Batch, micro_batches, optimiser_step
from nanor1.tasks.base import read_jsonl

ROLES = ("system", "user", "assistant")
END_OF_TURN = "<|im_end|>"  # ChatML's end of a turn: a target of every assistant turn


@dataclass
class Example:
    """One row of the data file, encoded."""
    ids: list  # token ids: context and targets
    target: list  # 1 where ids[i] is a target of the loss, else 0 (same length as ids)
    line: int  # its line in the file (1-based), for errors


# ----------------------------------------------------------------------------- reading the data

def read_examples(path, tok, context: int, drop_long: bool, flag="--data"):
    """The file's rows, encoded and checked: each is one error naming `path:line` when bad. Rows longer than
    `context` tokens are an error, or with `drop_long` are left out with a count on the console."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path}: file not found")
    # read_jsonl fails on any line that is not one JSON object (a blank one included): object n is line n.
    examples = [Example(*encode(obj, tok, f"{path}:{n}"), line=n) for n, obj in enumerate(read_jsonl(path), 1)]
    if not examples:
        raise ValueError(f"{flag} {path}: no examples (the file is empty)")
    long = [e for e in examples if len(e.ids) > context]
    if long and not drop_long:
        e = long[0]
        raise ValueError(f"{path}:{e.line}: {len(e.ids)} tokens, longer than the model's context of {context} "
                         f"({len(long)} of {len(examples)} rows are): shorten them, or pass --drop_long to leave "
                         "them out")
    if long:
        examples = [e for e in examples if len(e.ids) <= context]
        if not examples:
            raise ValueError(f"{flag} {path}: every row is longer than the model's context of {context} tokens")
        print(f"{flag} {path}: dropped {len(long)} of {len(long) + len(examples)} rows longer than the context of "
              f"{context} tokens (the longest: {max(len(e.ids) for e in long)})")
    return examples


def encode(obj, tok, where):
    """One row -> (ids, target): its (text, is_target) segments, each encoded alone, concatenated."""
    if "messages" in obj:
        segments = chat_segments(obj["messages"], tok, where)
    elif "prompt" in obj or "completion" in obj:
        segments = pair_segments(obj, where)
    else:
        raise ValueError(f"{where}: missing field: a row has \"prompt\" and \"completion\", or \"messages\" "
                         f"(got keys {sorted(obj)})")
    ids, target = [], []
    for text, is_target in segments:
        piece = tok.encode(text)
        ids += piece
        target += [int(is_target)] * len(piece)
    if "messages" not in obj and ids[-1] not in tok.eos_token_ids:
        ids, target = ids + [tok.eos_token_id], target + [1]  # the model learns to stop
    if target[0]:
        raise ValueError(f"{where}: the first token is a target, with nothing before it to predict it from")
    return ids, target


def pair_segments(obj, where):
    for key in ("prompt", "completion"):
        if key not in obj:
            raise ValueError(f"{where}: missing field {key!r}")
        if not isinstance(obj[key], str):
            raise ValueError(f"{where}: {key!r} must be a string, got {type(obj[key]).__name__}")
    if not obj["completion"]:
        raise ValueError(f"{where}: empty completion")
    if not obj["prompt"]:
        raise ValueError(f"{where}: empty prompt (the completion's first token would have nothing to follow)")
    return [(obj["prompt"], False), (obj["completion"], True)]


def chat_segments(messages, tok, where):
    """Context and assistant-reply segments of a chat. The context before assistant turn i is the chat
    template of messages[:i] with the generation prompt (what a rollout is given); the reply is what the
    template adds for turn i, up to and including its <|im_end|> (the newline after it is never generated)."""
    check_messages(messages, where)
    segments, done = [], ""  # done: the text already in segments
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tok.apply_chat_template(messages[:i], add_generation_prompt=True)
        through = tok.apply_chat_template(messages[:i + 1], add_generation_prompt=False)
        if not (before.startswith(done) and through.startswith(before) and END_OF_TURN in through[len(before):]):
            raise ValueError(f"{where}: the chat template does not render turn by turn, so the assistant turns "
                             "cannot be told apart")
        end = through.rindex(END_OF_TURN) + len(END_OF_TURN)
        segments += [(before[len(done):], False), (through[len(before):end], True)]
        done = through[:end]
    return segments  # messages after the last assistant turn have no target: left out


def check_messages(messages, where):
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: \"messages\" must be a non-empty list of {{\"role\", \"content\"}} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"{where}: message {i}: missing field: each message has \"role\" and \"content\"")
        if m["role"] not in ROLES:
            raise ValueError(f"{where}: message {i}: unknown role {m['role']!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(m["content"], str):
            raise ValueError(f"{where}: message {i}: \"content\" must be a string, got {type(m['content']).__name__}")
        if m["role"] == "assistant" and not m["content"]:
            raise ValueError(f"{where}: message {i}: empty completion (an assistant message with no content)")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError(f"{where}: no assistant message: nothing to train on")
    if messages[0]["role"] == "assistant":
        raise ValueError(f"{where}: message 0 is the assistant's: a chat starts with a system or user message")


# ----------------------------------------------------------------------------- batches

def pack(examples, device) -> Batch:
    """Examples -> step.Batch, right-padded. A row's scored positions run from its first target to its end
    (`prompt_lens` is the index of the first target); `mask` is 1 on the targets among them (a multi-turn
    chat's user turns in between are scored and masked out)."""
    lengths = torch.tensor([len(e.ids) for e in examples])
    first = torch.tensor([e.target.index(1) for e in examples])
    B, T = len(examples), int(lengths.max()) - 1
    ids, target = torch.zeros(B, T + 1, dtype=torch.long), torch.zeros(B, T + 1)
    for i, e in enumerate(examples):
        ids[i, :len(e.ids)] = torch.tensor(e.ids)
        target[i, :len(e.ids)] = torch.tensor(e.target, dtype=torch.float)
    cols = torch.arange(T + 1)
    scored = ((cols >= first[:, None]) & (cols < lengths[:, None])).float()
    on = lambda x: x.to(device)  # noqa: E731
    # Column t of the targets is token t + 1 of the row: token masks shift left by one.
    return Batch(ids=on(ids[:, :-1]), targets=on(ids[:, 1:]), completion=on(scored[:, 1:]), mask=on(target[:, 1:]),
                 sampler_logp=None, prompt_lens=first, lengths=lengths, loss_tokens=target.sum(1),
                 rewards=torch.zeros(B))


def next_batch(run, cursor: int):
    """This rank's share of the step's --prompts_per_step examples, and the new cursor (every rank advances
    the same global one): as step.collect draws prompts."""
    P, d = run.cfg.prompts_per_step, run.d
    per = P // d.world_size
    mine = [run.rows[run.stream[cursor + i]] for i in range(d.rank * per, (d.rank + 1) * per)]
    return pack(mine, d.device), cursor + P


class Learner:
    """step.update's learner for SFT: the mean NLL per target token (module docstring), AdamW on fp32 masters."""
    prefix = ""  # metric names: loss, tokens, grad_norm
    counts_steps = True  # its optimiser steps are the lr schedule's clock

    def __init__(self, model, opt, run):
        self.model, self.opt, self.run = model, opt, run

    def loss(self, mb: Batch, norms, budget=None):
        """norms: (sequences, target tokens) of the step over all ranks (step.normalisers); the second divides."""
        with self.run.prec.autocast():
            logp, _ = self.model(mb.ids, targets=mb.targets, positions=mb.positions())  # (b, T), 0 off scored
        n = mb.mask.sum()
        loss = -(logp * mb.mask).sum() / norms[1]
        return loss, {"loss": loss.detach(), "tokens": n}, {}

    def step(self, lr):
        return optimiser_step(self.model, self.opt, lr, self.run.cfg.grad_clip)


@torch.no_grad()
def eval_loss(run, model, examples) -> float:
    """Mean NLL per target token of `examples` (the --eval_data rows), each rank a strided slice. The weights
    stay gathered, so ranks may run different numbers of forwards (as evaluate.evaluate does)."""
    d, total = run.d, torch.zeros(2, dtype=torch.float64)  # (NLL sum, target tokens)
    mine = examples[d.rank::d.world_size]
    with distributed.gathered(model), run.prec.autocast():
        for start in range(0, len(mine), run.cfg.prompts_per_step):
            batch = pack(mine[start:start + run.cfg.prompts_per_step], d.device)
            for idx in micro_batches(batch, range(len(batch)), run.cfg):
                mb = batch.select(idx)
                logp, _ = model(mb.ids, targets=mb.targets, positions=mb.positions())
                total += torch.stack([-(logp * mb.mask).sum(), mb.mask.sum()]).double().cpu()
    distributed.all_reduce(total, d)
    return (total[0] / total[1].clamp(min=1)).item()


def describe(examples, held_out, cfg) -> str:
    """The start-up line: the data, and how --steps maps to epochs."""
    n, tokens = len(examples), sum(sum(e.target) for e in examples)
    per_epoch = n / cfg.prompts_per_step
    return (f"sft: {n} examples ({tokens} target tokens), {cfg.prompts_per_step} per step: one epoch is "
            f"{per_epoch:.1f} steps, --steps {cfg.steps} is {cfg.steps / per_epoch:.2f} epochs"
            + (f"; {len(held_out)} held-out examples" if held_out else ""))
