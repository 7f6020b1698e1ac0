"""Prompts for RL: which rows a step draws, which prompts fit the budget, and how groups are shared over ranks.

    prompts = encode_prompts(task, tok, rows)             token ids of each row's prompt
    rows, prompts = fit_prompts(rows, prompts, budget, drop)  at start-up: every prompt fits, or one clear error
    stream = PromptStream(n_rows, seed)                    stream[i]: the row at global position i
    mine = deal(parts, rank, cap)                          kept groups pooled over ranks, an equal share each

The step loop never skips a prompt: lengths are checked once, for the whole split, before training starts
(a prompt skipped inside the loop would be skipped again every epoch and shrink every batch without a word).
"""
import hashlib

import torch


def mix_seed(*parts) -> int:
    """One 63-bit seed from any ints (run seed, step, round, rank, ...): a hash, so nearby inputs give
    unrelated seeds and no two tuples collide by arithmetic accident."""
    digest = hashlib.sha256(repr(tuple(int(p) for p in parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class PromptStream:
    """The global prompt order: a fresh permutation of the rows each epoch. Position i is a pure function of
    (seed, i), so every rank agrees on it and a resumed run needs only its cursor."""

    def __init__(self, n_rows: int, seed: int):
        if n_rows < 1:
            raise ValueError("the train split is empty: nothing to draw prompts from")
        self.n_rows, self.seed = n_rows, seed
        self._epoch, self._perm = None, None

    def __getitem__(self, i: int) -> int:
        epoch = i // self.n_rows
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            self._epoch, self._perm = epoch, torch.randperm(self.n_rows, generator=g).tolist()
        return self._perm[i % self.n_rows]


def encode_prompts(task, tokenizer, rows):
    """The prompt token ids of each row (the task's template, then the tokenizer)."""
    return tokenizer.encode_batch([task.prompt(row, tokenizer) for row in rows])


def prompt_budget(prompts, max_prompt_len: int, context: int, completion_len: int,
                  what: str = "--max_completion_len") -> int:
    """The prompt budget in tokens: --max_prompt_len when given, else the longest prompt; never more than
    the context left after the completion budget (`what` names the option that set it in an error)."""
    room = context - completion_len
    if room < 1:
        raise ValueError(f"{what} {completion_len} leaves no room for a prompt in the model's "
                         f"context of {context} tokens")
    if max_prompt_len > room:
        raise ValueError(f"--max_prompt_len {max_prompt_len} + {what} {completion_len} exceeds "
                         f"the model's context of {context} tokens")
    return max_prompt_len or min(max(map(len, prompts), default=1), room)


def fit_prompts(rows, prompts, budget: int, drop: bool, what: str = "train", say=print):
    """Keep the rows whose prompt fits `budget`. A prompt that does not fit is an error naming the count and
    the longest length, unless `drop`, which removes those rows from the split (said with `say`: rank 0's)."""
    fits = [len(p) <= budget for p in prompts]
    n_long = fits.count(False)
    if not n_long:
        return rows, prompts
    longest = max(map(len, prompts))
    if not drop:
        raise ValueError(f"{n_long} of {len(prompts)} {what} prompts are longer than the prompt budget of {budget} "
                         f"tokens (the longest has {longest}): raise --max_prompt_len (and the context allows "
                         f"it?) or pass --drop_long to leave them out")
    kept = [(r, p) for r, p, ok in zip(rows, prompts, fits) if ok]
    if not kept:
        raise ValueError(f"every one of the {len(prompts)} {what} prompts is longer than the prompt budget of "
                         f"{budget} tokens: nothing left to train on")
    say(f"dropped {n_long} of {len(prompts)} {what} prompts longer than {budget} tokens (the longest: {longest})")
    return [r for r, _ in kept], [p for _, p in kept]


def deal(parts, rank: int, cap: int):
    """parts[r] = rank r's kept groups. Returns rank `rank`'s share of the pooled groups: every rank gets
    min(len(pool) // ranks, cap), so every rank runs the same number of micro-batches (FSDP's collectives).
    What is left over (up to ranks - 1 groups, more when `cap` binds) is not trained on."""
    pool = [g for part in parts for g in part]
    per = min(len(pool) // len(parts), cap)
    return pool[rank * per:(rank + 1) * per]
