"""The comparison's statistics on fixed numbers that can be checked by hand."""

import math

import pytest

from darts_sr.experiments import stats


def test_mean_sd_and_the_noise_floor():
    assert stats.mean_sd([1.0, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))
    assert stats.mean_sd([5.0]) == (5.0, None)
    # Pooled over genotypes with >= 2 seeds: squares 2 + 8 over 1 + 1 degrees of freedom; [7] has no spread to add.
    assert stats.pooled_sd([[1.0, 3.0], [0.0, 4.0], [7.0]]) == pytest.approx(math.sqrt(5))
    assert stats.pooled_sd([[1.0], [2.0]]) is None


def test_bootstrap_gap_of_identical_groups_contains_zero():
    values = [29.0, 29.1, 29.2, 29.3, 29.4]
    gap = stats.bootstrap_mean_gap(values, values, resamples=10_000, seed=0)
    assert gap.estimate == pytest.approx(0.0, abs=1e-12) and gap.contains(0.0)
    assert gap.low < 0 < gap.high and gap.confidence == 0.95
    assert gap == stats.bootstrap_mean_gap(values, values, resamples=10_000, seed=0)  # seeded: reproducible


def test_bootstrap_gap_of_separated_groups_excludes_zero():
    gap = stats.bootstrap_mean_gap([30.0, 30.1, 30.2], [29.0, 29.1, 29.2, 29.3], resamples=10_000, seed=0)
    assert gap.estimate == pytest.approx(30.1 - 29.15)
    assert not gap.contains(0.0)
    # No resample can leave the range of possible gaps: min(a) - max(b) to max(a) - min(b).
    assert 30.0 - 29.3 - 1e-9 <= gap.low < gap.estimate < gap.high <= 30.2 - 29.0 + 1e-9


def test_mann_whitney_one_sided():
    u, p = stats.mann_whitney_greater([10, 11, 12, 13, 14], [0, 1, 2, 3, 4])
    assert u == 25 and p == pytest.approx(1 / 252)  # exact: one of C(10, 5) orderings puts all five on top
    _, p_reversed = stats.mann_whitney_greater([0, 1, 2, 3, 4], [10, 11, 12, 13, 14])
    assert p_reversed == pytest.approx(1.0)  # one-sided: worse is no evidence of better
    _, p_same = stats.mann_whitney_greater([1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    assert p_same > 0.4


def test_percentile_within_a_population():
    population = [1.0, 2.0, 3.0, 4.0]
    assert stats.percentile_within(5.0, population) == 100.0
    assert stats.percentile_within(0.0, population) == 0.0
    assert stats.percentile_within(2.5, population) == 50.0
    assert stats.percentile_within(2.0, population) == 37.5  # one below, one tie counted half


def test_kendall_tau_of_identical_and_reversed_rankings():
    x = [29.1, 29.4, 28.9, 29.0, 29.3, 29.2]
    assert stats.kendall_tau(x, x)[0] == pytest.approx(1.0)
    assert stats.kendall_tau(x, [-v for v in x])[0] == pytest.approx(-1.0)
    tau, p = stats.kendall_tau([1, 2, 3, 4], [1, 2, 4, 3])
    assert tau == pytest.approx(4 / 6) and 0 < p <= 1  # 5 concordant, 1 discordant pair of 6


def test_empty_groups_are_refused():
    with pytest.raises(ValueError):
        stats.bootstrap_mean_gap([], [1.0])
    with pytest.raises(ValueError):
        stats.percentile_within(1.0, [])


def test_smallest_detectable_gap_by_hand():
    # (z_0.95 + z_0.8) * sd * sqrt(1/n_a + 1/n_b) = (1.6449 + 0.8416) * 0.1 * sqrt(1/4 + 1/4)
    assert stats.smallest_detectable_gap(0.1, 4, 4) == pytest.approx(2.4865 * 0.1 * math.sqrt(0.5), rel=1e-4)
    assert stats.smallest_detectable_gap(0.1, 3, 20) < stats.smallest_detectable_gap(0.1, 3, 5)  # more is finer
    with pytest.raises(ValueError):
        stats.smallest_detectable_gap(0.1, 0, 5)


def test_gap_to_a_fixed_genotype_by_hand():
    # Searched means 1, 2, 3 (sd 1) against a baseline's seeds 1.5, 2.5 with noise floor 0.5:
    # se = sqrt(1/3 + 0.25/2), half width t(0.975, 2) = 4.3027 times it.
    ci = stats.gap_to_fixed([1.0, 2.0, 3.0], [1.5, 2.5], 0.5)
    half = 4.302653 * math.sqrt(1 / 3 + 0.25 / 2)
    assert ci.estimate == pytest.approx(0.0) and (ci.low, ci.high) == pytest.approx((-half, half), rel=1e-5)
    with pytest.raises(ValueError):
        stats.gap_to_fixed([1.0], [1.0], 0.5)  # one genotype has no spread
