import math

import numpy as np
import pytest

from ensembles.stats import (
    Interval,
    bootstrap_mean,
    mcnemar,
    paired_bootstrap_diff,
    rank_upper_bounds,
)


def test_bootstrap_is_reproducible_with_a_seed():
    values = np.random.default_rng(1).random(200)
    assert bootstrap_mean(values, seed=3) == bootstrap_mean(values, seed=3)
    assert bootstrap_mean(values, seed=3) != bootstrap_mean(values, seed=4)


def test_bootstrap_interval_contains_the_mean():
    values = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1]
    interval = bootstrap_mean(values)
    assert interval.mean == pytest.approx(0.7)
    assert interval.low <= interval.mean <= interval.high
    assert interval.n == 10


def test_bootstrap_interval_narrows_as_items_grow():
    rng = np.random.default_rng(0)
    small = bootstrap_mean(rng.integers(0, 2, 50))
    large = bootstrap_mean(rng.integers(0, 2, 5000))
    assert (large.high - large.low) < (small.high - small.low) / 5


def test_bootstrap_handles_empty_and_single_samples():
    empty = bootstrap_mean([])
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.low) and math.isnan(empty.high)
    assert bootstrap_mean([0.25]) == Interval(0.25, 0.25, 0.25, 1)


def test_bootstrap_scales_to_a_hundred_thousand_items():
    values = np.random.default_rng(0).integers(0, 2, 100_000)
    interval = bootstrap_mean(values, resamples=200)
    assert interval.high - interval.low < 0.01


def test_bootstrap_rejects_a_level_outside_zero_and_one():
    with pytest.raises(ValueError):
        bootstrap_mean([1, 0], level=1.5)


def test_paired_diff_is_the_mean_difference_over_the_same_items():
    a = [1, 1, 1, 0, 1, 1, 1, 1, 0, 1] * 10
    b = [1, 0, 1, 0, 0, 1, 0, 1, 0, 1] * 10
    interval = paired_bootstrap_diff(a, b)
    assert interval.mean == pytest.approx(0.3)
    assert 0.0 < interval.low <= interval.mean <= interval.high
    assert interval.n == 100


def test_paired_diff_of_identical_systems_is_exactly_zero():
    a = [1, 0, 1, 1]
    assert paired_bootstrap_diff(a, a) == Interval(0.0, 0.0, 0.0, 4)


def test_paired_diff_rejects_unequal_lengths():
    with pytest.raises(ValueError):
        paired_bootstrap_diff([1, 0], [1])


def test_mcnemar_uses_the_exact_binomial_for_few_discordant_pairs():
    # 10 items only A gets right, 2 only B: p = 2 * P(X <= 2 | n=12, p=1/2) = 2 * 79 / 4096
    a = [True] * 10 + [False] * 2 + [True] * 5
    b = [False] * 10 + [True] * 2 + [True] * 5
    assert mcnemar(a, b) == pytest.approx(158 / 4096)


def test_mcnemar_uses_chi_square_with_continuity_correction_for_many_discordant_pairs():
    # 30 vs 10 discordant: statistic (|30 - 10| - 1)^2 / 40 = 9.025; chi2(1) survival = erfc(sqrt(x / 2))
    a = [True] * 30 + [False] * 10
    b = [False] * 30 + [True] * 10
    assert mcnemar(a, b) == pytest.approx(math.erfc(math.sqrt(9.025 / 2)))
    assert mcnemar(a, b) == pytest.approx(0.002663, abs=1e-6)


def test_mcnemar_is_one_when_systems_agree_everywhere():
    assert mcnemar([True, False], [True, False]) == 1.0


def test_rank_upper_bound_counts_entries_that_are_better_with_confidence():
    intervals = [
        Interval(0.80, 0.75, 0.85, 100),
        # overlaps the leader, so it can still claim rank 1
        Interval(0.70, 0.65, 0.78, 100),
        Interval(0.50, 0.45, 0.55, 100),
    ]
    assert rank_upper_bounds(intervals) == [1, 1, 3]


def test_rank_upper_bounds_match_their_definition_with_ties_and_missing_bounds():
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(0, 40))
        means = rng.choice([0.2, 0.5, 0.5, 0.8], size=n) + rng.choice([0.0, 0.01], size=n)
        widths = rng.choice([0.0, 0.05, 0.2], size=n)
        lows, highs = means - widths, means + widths
        lows[rng.random(n) < 0.05] = math.nan
        highs[rng.random(n) < 0.05] = math.nan
        intervals = [Interval(m, lo, hi, 10) for m, lo, hi in zip(means, lows, highs, strict=True)]
        expected = [1 + sum(o.low > t.high for o in intervals) for t in intervals]
        assert rank_upper_bounds(intervals) == expected
