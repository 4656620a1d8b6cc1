"""Statistics for the comparison: is a searched genotype better than random ones of the same cost?

Pure numpy/scipy, no torch, so reports can be rebuilt anywhere. The unit of analysis is the genotype: a
genotype's score is its mean over training seeds, and groups (searched, random) are compared by those means.
Seeds measure the noise floor, the spread one genotype shows when only the training seed changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau, mannwhitneyu


@dataclass(frozen=True)
class Interval:
    """An estimate with a confidence interval ``[low, high]`` at ``confidence``."""

    estimate: float
    low: float
    high: float
    confidence: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the sd is None for a single value."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_sd of no values")
    return float(x.mean()), (float(x.std(ddof=1)) if x.size > 1 else None)


def pooled_sd(groups: Sequence[Sequence[float]]) -> float | None:
    """The noise floor: sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)) over the groups (e.g. one genotype's scores over
    seeds) that have at least two values; None when none has."""
    squares, dof = 0.0, 0
    for g in groups:
        x = np.asarray(g, dtype=float)
        if x.size > 1:
            squares += float(((x - x.mean()) ** 2).sum())
            dof += x.size - 1
    return float(np.sqrt(squares / dof)) if dof else None


def bootstrap_mean_gap(
    a: Sequence[float], b: Sequence[float], resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> Interval:
    """mean(a) - mean(b) with a percentile bootstrap interval: each group resampled with replacement on its own
    (the groups are independent draws: searched genotypes, random genotypes). Seeded, so a report is reproducible."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.size == 0 or y.size == 0:
        raise ValueError("bootstrap_mean_gap needs at least one value in each group")
    rng = np.random.default_rng(seed)
    resampled_x = x[rng.integers(0, x.size, (resamples, x.size))].mean(axis=1)
    resampled_y = y[rng.integers(0, y.size, (resamples, y.size))].mean(axis=1)
    gaps = resampled_x - resampled_y
    tail = (1 - confidence) / 2
    low, high = np.quantile(gaps, [tail, 1 - tail])
    return Interval(float(x.mean() - y.mean()), float(low), float(high), confidence)


def percentile_within(value: float, population: Sequence[float]) -> float:
    """Where ``value`` falls in ``population``, in percent: the share below it, ties counted half (100 = above all,
    0 = below all)."""
    p = np.asarray(population, dtype=float)
    if p.size == 0:
        raise ValueError("percentile_within an empty population")
    return float(100 * ((p < value).sum() + 0.5 * (p == value).sum()) / p.size)


def mann_whitney_greater(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mann-Whitney U of ``a`` against ``b`` and its one-sided p-value for the alternative "a tends to be greater"
    (searched > random): the question the comparison asks, so a searched group that is worse gives p near 1."""
    result = mannwhitneyu(a, b, alternative="greater")
    return float(result.statistic), float(result.pvalue)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Kendall's tau-b between two scorings of the same items (e.g. a short and a realistic recipe) and its
    two-sided p-value: 1 = the same ranking, -1 = reversed."""
    result = kendalltau(x, y)
    return float(result.statistic), float(result.pvalue)
