"""Evaluation: pass@1 and the unbiased pass@k over a benchmark split, with fixed templates and decoding.

pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", eq. 1): with n samples per
problem of which c are correct, the probability that at least one of k drawn without replacement is
correct is 1 - C(n-c, k) / C(n, k), averaged over problems. Computed as a product, since the binomials
overflow for large n: C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i).
"""
import numpy as np
import torch

from nanor1 import distributed
from nanor1.data import encode_prompts, mix_seed
from nanor1.rollout import Stop, generate


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimate of pass@k for one problem with c correct out of n samples."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def evaluate(model, tok, task, rows, verifier, prec, max_new_tokens, num_samples=1, temperature=0.0, top_p=1.0,
             top_k=0, batch_size=64, seed=0, d=None):
    """Sample `num_samples` completions per row (greedy when temperature is 0) under precision `prec`, and score
    them. Under several ranks each takes a strided slice of the rows and the counts are summed. Returns
    (summary dict, per-problem records of this rank)."""
    d = d or distributed.Dist()
    if not rows:
        raise ValueError(f"task {task.name!r}: the evaluation split is empty")
    mine = list(range(d.rank, len(rows), d.world_size))
    n = 1 if temperature == 0 else num_samples
    stop = Stop(eos=tok.eos_token_ids, strings=task.stop, decode=tok.decode)
    records = []
    with distributed.gathered(model), prec.autocast():
        for start in range(0, len(mine), batch_size):
            idx = mine[start:start + batch_size]
            batch = [rows[i] for i in idx]
            out = generate(model, encode_prompts(task, tok, batch), max_new_tokens, temperature, top_k, top_p, n=n,
                           seed=mix_seed(seed, idx[0]), stop=stop)  # idx[0]: the batch's first problem, unique over ranks
            texts = tok.decode_batch(out.tokens)  # special tokens kept, as the rewards expect
            rewards = verifier.score(texts, [r for r in batch for _ in range(n)])
            for j, i in enumerate(idx):
                rs = rewards[j * n:(j + 1) * n]
                records.append({"index": i, "completions": texts[j * n:(j + 1) * n], "rewards": rs,
                                "correct": sum(task.is_correct(r) for r in rs), "n": n})
    return summarise(records, n, d), records


def summarise(records, n, d):
    """pass@k for k in the powers of two up to n, and n itself, over all ranks' records."""
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, 128, 256) if k <= n} | {n})
    sums = torch.tensor([float(len(records))] + [sum(pass_at_k(r["n"], r["correct"], k) for r in records)
                                                 for k in ks], dtype=torch.float64)
    distributed.all_reduce(sums, d)
    total = max(sums[0].item(), 1.0)
    summary = {"problems": int(sums[0].item()), "samples_per_problem": n}
    summary.update({f"pass@{k}": sums[i + 1].item() / total for i, k in enumerate(ks)})
    return summary
