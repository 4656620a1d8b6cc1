"""Statistics for the comparison: is a searched genotype better than random ones of the same cost?

Pure numpy/scipy, no torch, so reports can be rebuilt anywhere. The unit of analysis is the genotype: a
genotype's score is its mean over training seeds, and groups (searched, random) are compared by those means.
Seeds measure the noise floor, the spread one genotype shows when only the training seed changes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import kendalltau, mannwhitneyu, norm
from scipy.stats import t as student_t


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


def reliability_of_means(groups: Sequence[Sequence[float]]) -> tuple[float | None, float | None, float | None]:
    """``(spread, floor, reliability)`` of per-genotype means over seeds: the sd of the means, the noise floor
    (``pooled_sd``) and the share of the means' variance that is not seed noise (floor^2 / mean seeds removed, at
    least 0). A ranking by these means cannot agree with any other better than this reliability allows."""
    if len(groups) < 2:
        return None, None, None
    spread = mean_sd([mean_sd(g)[0] for g in groups])[1]
    floor = pooled_sd(groups)
    if floor is None or not spread:
        return spread, floor, None
    seeds = sum(len(g) for g in groups) / len(groups)
    return spread, floor, max(0.0, spread**2 - floor**2 / seeds) / spread**2


def tau_ceiling(reliability: float | None, other: float | None) -> float | None:
    """The expected Kendall τ between two rankings that agree perfectly on the genotypes' true means, when their
    means have these reliabilities (normal model: the correlation is attenuated to sqrt(R1 R2), and Kendall's τ is
    (2/π)·asin of the correlation): the most τ such a comparison can show."""
    if reliability is None or other is None:
        return None
    return 2 / math.pi * math.asin(math.sqrt(reliability * other))


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


def smallest_detectable_gap(sd: float, n_a: int, n_b: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true gap between the means of two groups of ``n_a`` and ``n_b`` values of spread ``sd`` that a
    one-sided test at level ``alpha`` detects with probability ``power`` (normal approximation):
    (z_{1-alpha} + z_power) * sd * sqrt(1/n_a + 1/n_b). A comparison that finds no gap rules out gaps above this."""
    if n_a < 1 or n_b < 1:
        raise ValueError("smallest_detectable_gap needs at least one value in each group")
    return float((norm.ppf(1 - alpha) + norm.ppf(power)) * sd * math.sqrt(1 / n_a + 1 / n_b))


def gap_to_fixed(values: Sequence[float], fixed: Sequence[float], floor: float, confidence: float = 0.95) -> Interval:
    """mean(values) - mean(fixed), where ``values`` are genotype means drawn from a method (the searched genotypes)
    and ``fixed`` one genotype's scores over seeds (a baseline), with a t interval: the method's spread is the sd of
    ``values`` (df = len(values) - 1: few genotypes, a wide interval), the baseline's only its seed noise ``floor``
    over its seeds."""
    x, y = np.asarray(values, dtype=float), np.asarray(fixed, dtype=float)
    if x.size < 2 or y.size == 0:
        raise ValueError("gap_to_fixed needs at least two values and one fixed score")
    se = math.sqrt(float(x.var(ddof=1)) / x.size + floor**2 / y.size)
    half = float(student_t.ppf(1 - (1 - confidence) / 2, x.size - 1)) * se
    gap = float(x.mean() - y.mean())
    return Interval(gap, gap - half, gap + half, confidence)


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
