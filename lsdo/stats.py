"""Per-query retrieval statistics shared by the reports: hits, MnR terms and the paired bootstrap.

A run's ``test_ranks.json`` holds, per direction, the 1-based rank of each query's correct item. Every
mean-decomposable metric is the mean of one value per query: R@k of ``100 * (rank <= k)``, MnR of the rank
itself (MdR is not a mean and has no paired interval).
"""

from __future__ import annotations

import numpy as np


def per_query(ranks: list[int] | np.ndarray, metric: str) -> np.ndarray:
    """One value per query whose mean is ``metric`` (``R1``, ``R5``, ``R10``, ``R50`` or ``MnR``): [Q]."""
    r = np.asarray(ranks, dtype=float)
    if metric == "MnR":
        return r
    if metric.startswith("R") and metric[1:].isdigit():
        return 100.0 * (r <= int(metric[1:]))
    raise ValueError(f"{metric}: not a per-query mean (R<k> or MnR)")


def hits(ranks: list[int] | np.ndarray, k: int) -> np.ndarray:
    """Per query: 100 if the correct item is in the top k, else 0 (the mean is R@k): [Q]."""
    return per_query(ranks, f"R{k}")


def paired_bootstrap(a: np.ndarray, b: np.ndarray, boot: int, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b and its 95% percentile interval; a, b [seeds, queries] paired by (seed, query).

    Each resample draws seeds with replacement, then queries with replacement (the same query draw
    for both members of a pair), so the interval covers training-seed and test-query variation.
    """
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    rng = np.random.default_rng(seed)
    d = a - b  # [S, Q]
    s, q = d.shape
    seeds = rng.integers(0, s, size=(boot, s))
    queries = rng.integers(0, q, size=(boot, 1, q))
    resampled = np.take_along_axis(d[seeds], queries, axis=2)  # [boot, s, Q] -> [boot, s, q]
    means = resampled.mean(axis=(1, 2))
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(d.mean()), float(lo), float(hi)
