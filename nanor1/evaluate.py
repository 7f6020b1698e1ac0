"""Evaluation: pass@1 and the unbiased pass@k over a benchmark split, with fixed templates and decoding.

pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1): with n samples per
problem of which c are correct, the probability that at least one of k drawn without replacement is
correct is 1 - C(n-c, k) / C(n, k), averaged over problems. Computed as a product, since the binomials
overflow for large n: C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i).
"""
import numpy as np
import torch

from nanor1 import distributed
from nanor1.rollout import generate


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k for one problem with c correct out of n samples."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def encode_prompts(task, tokenizer, rows):
    return [tokenizer.encode(task.prompt(row, tokenizer)) for row in rows]


def evaluate(model, tokenizer, task, rows, verifier, max_new_tokens, num_samples=1, temperature=0.0, top_p=1.0,
             top_k=0, batch_size=64, seed=0, d=None):
    """Sample `num_samples` completions per row (greedy when temperature is 0) and score them. Under several
    ranks each takes a strided slice of the rows and the counts are summed. Returns
    (summary dict, per-problem records of this rank)."""
    d = d or distributed.Dist()
    mine = list(range(d.rank, len(rows), d.world_size))
    n = 1 if temperature == 0 else num_samples
    records = []
    with distributed.gathered(model):
        for start in range(0, len(mine), batch_size):
            idx = mine[start:start + batch_size]
            batch = [rows[i] for i in idx]
            out = generate(model, encode_prompts(task, tokenizer, batch), max_new_tokens, temperature=temperature,
                           top_p=top_p, top_k=top_k, eos_token_id=sorted(tokenizer.eos_token_ids), n=n,
                           stop_strings=task.stop, decode=tokenizer.decode, seed=seed + start)
            texts = [tokenizer.decode(c) for c in out]  # special tokens kept, as the rewards expect
            rewards = verifier.score(texts, [r for r in batch for _ in range(n)])
            for j, i in enumerate(idx):
                rs = rewards[j * n:(j + 1) * n]
                records.append({"index": i, "completions": texts[j * n:(j + 1) * n], "rewards": rs,
                                "correct": sum(task.is_correct(r) for r in rs), "n": n})
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k <= n} | {n})  # powers of two, and n
    sums = torch.tensor([float(len(records))] + [sum(pass_at_k(r["n"], r["correct"], k) for r in records)
                                                 for k in ks], dtype=torch.float64)
    distributed.all_reduce(sums, d)
    total = max(sums[0].item(), 1.0)
    summary = {"problems": int(sums[0].item()), "samples_per_problem": n}
    summary.update({f"pass@{k}": sums[i + 1].item() / total for i, k in enumerate(ks)})
    return summary, records
