"""pass@k: the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code").

With n samples of which c are correct, pass@k = 1 − C(n−c, k) / C(n, k): the chance that k of
the n samples, drawn without replacement, include a correct one. The binomials overflow floats
for n in the hundreds, so it is computed as the paper's numpy code does, as a product of
ratios: 1 − ∏_{i=n−c+1..n} (1 − k/i); it is 1.0 when n − c < k (every k-subset holds a correct
sample). Averaged over tasks; a k is reported only when every task has at least k samples,
since a task with fewer cannot estimate it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one task with `n` samples, `c` of them correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n (got n={n}, c={c})")
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples (got n={n})")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def aggregate(per_task_counts: Mapping[str, tuple[int, int]], ks: Iterable[int]) -> dict:
    """pass@k averaged over tasks, for each k that every task has enough samples for.

    per_task_counts: task_id -> (n samples, c correct). Returns
    {"tasks": number of tasks, "pass_at_k": {k: mean}, "omitted": {k: why}}; a k is omitted
    when some task has fewer than k samples (the reason names the smallest such task).
    """
    if not per_task_counts:
        raise ValueError("no tasks to aggregate")
    fewest_task, (fewest, _) = min(per_task_counts.items(), key=lambda item: item[1][0])
    scores: dict[int, float] = {}
    omitted: dict[int, str] = {}
    for k in sorted(set(ks)):
        if k > fewest:
            short = sum(1 for n, _ in per_task_counts.values() if n < k)
            omitted[k] = (f"pass@{k} needs {k} samples per task; {short} of {len(per_task_counts)} tasks have "
                          f"fewer ({fewest_task} has {fewest})")
            continue
        scores[k] = math.fsum(pass_at_k(n, c, k) for n, c in per_task_counts.values()) / len(per_task_counts)
    return {"tasks": len(per_task_counts), "pass_at_k": scores, "omitted": omitted}
