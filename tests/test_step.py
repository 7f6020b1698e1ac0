"""nanor1/step.py's batch plumbing: the prompt keys pack gives, and how micro_batches splits a batch."""
import torch

from nanor1.config import TrainConfig
from nanor1.step import Sample, micro_batches, pack


def samples(prompt_lens, completion_lens, G, seed=0):
    """G samples per prompt (prompt-major), random ids; the last prompt repeats the first one's ids."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 50, (p,), generator=g).tolist() for p in prompt_lens]
    prompts[-1] = list(prompts[0])  # the same prompt drawn twice: its rows share a key too
    out = []
    for i, p in enumerate(prompts):
        for j in range(G):
            c = completion_lens[(i * G + j) % len(completion_lens)]
            out.append(Sample(p, torch.randint(0, 50, (c,), generator=g).tolist(), [0.0] * c, False, 0.0, ""))
    return out


def test_pack_keys_rows_by_prompt():
    batch = pack(samples([5, 3, 4, 5], [2, 6, 1], G=3), "cpu")
    keys = batch.prompt_keys.tolist()
    assert keys[:3] == [0, 0, 0] and keys[3:6] == [1, 1, 1] and keys[6:9] == [2, 2, 2] and keys[9:] == [0, 0, 0]
    lens, k, ends = batch.shared_prefix()
    assert lens.tolist() == (batch.prompt_lens - 1).tolist() and ends.tolist() == (batch.lengths - 1).tolist()
    assert k is batch.prompt_keys
    assert batch.select([4, 0]).prompt_keys.tolist() == [1, 0]


def test_micro_batches_keep_a_prompts_rows_together_within_the_token_budget():
    batch = pack(samples([5, 9, 3, 7, 4], [2, 8, 5, 1, 6, 3], G=4), "cpu")  # 20 rows, 5 prompts
    keys, n = batch.prompt_keys.tolist(), batch.lengths.tolist()
    cfg = TrainConfig(micro_batch_size=6, micro_batch_tokens=40)
    mbs = micro_batches(batch, range(len(batch)), cfg)
    order = [r for mb in mbs for r in mb]
    assert sorted(order) == list(range(len(batch)))  # every row once
    for mb in mbs:
        assert len(mb) <= 6 and (len(mb) == 1 or len(mb) * max(n[r] - 1 for r in mb) <= 40), mb
    runs = [keys[r] for i, r in enumerate(order) if i == 0 or keys[r] != keys[order[i - 1]]]
    assert len(runs) == len(set(keys)) == 4  # a prompt's rows are adjacent (prompts 0 and 4 share a key)
    longest = {k: max(n[r] for r in order if keys[r] == k) for k in keys}
    assert [longest[k] for k in runs] == sorted((longest[k] for k in runs), reverse=True)  # longest prompts first
    # Without a budget: the rows in the order given, micro_batch_size at a time.
    plain = micro_batches(batch, range(len(batch)), TrainConfig(micro_batch_size=6, micro_batch_tokens=0))
    assert plain == [list(range(i, min(i + 6, 20))) for i in range(0, 20, 6)]
