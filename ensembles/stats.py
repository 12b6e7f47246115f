"""Confidence intervals and significance tests for per-item scores (seeded, reproducible)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

# Cap on index-matrix cells drawn at once (~32 MB of int64), so 100k items x 1000
# resamples runs in chunks instead of allocating 800 MB.
_MAX_CELLS_PER_CHUNK = 4_000_000
# Below this many discordant pairs the chi-square approximation is poor; use the exact test.
_MCNEMAR_EXACT_BELOW = 25


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval over ``n`` items."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile-bootstrap confidence interval for the mean of ``values``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    data = np.asarray(values, dtype=np.float64).ravel()
    n = int(data.size)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(data.mean())
    if n == 1:
        return Interval(mean, mean, mean, 1)

    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _MAX_CELLS_PER_CHUNK // n)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows_per_chunk):
        rows = min(rows_per_chunk, resamples - start)
        idx = rng.integers(0, n, size=(rows, n))
        means[start : start + rows] = data[idx].mean(axis=1)

    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    # Clamp so the interval always contains the point estimate despite percentile skew.
    return Interval(mean, min(float(low), mean), max(float(high), mean), n)


def paired_bootstrap_diff(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Bootstrap interval of mean(a - b), resampling items jointly so pairing is kept."""
    a_arr = np.asarray(a, dtype=np.float64).ravel()
    b_arr = np.asarray(b, dtype=np.float64).ravel()
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired samples need equal lengths, got {a_arr.size} and {b_arr.size}")
    return bootstrap_mean(a_arr - b_arr, resamples=resamples, level=level, seed=seed)


def mcnemar(a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray) -> float:
    """Two-sided McNemar p-value that systems A and B have the same accuracy on paired items."""
    a_arr = np.asarray(a_correct, dtype=bool).ravel()
    b_arr = np.asarray(b_correct, dtype=bool).ravel()
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired samples need equal lengths, got {a_arr.size} and {b_arr.size}")
    only_a = int(np.sum(a_arr & ~b_arr))
    only_b = int(np.sum(~a_arr & b_arr))
    discordant = only_a + only_b
    if discordant == 0:
        return 1.0
    if discordant < _MCNEMAR_EXACT_BELOW:
        return float(sps.binomtest(min(only_a, only_b), discordant, 0.5).pvalue)
    statistic = (abs(only_a - only_b) - 1) ** 2 / discordant
    return float(sps.chi2.sf(statistic, df=1))


def rank_upper_bounds(intervals: Sequence[Interval]) -> list[int]:
    """Best rank each entry can claim: 1 + number of entries whose low beats its high.

    This is the LMSYS Chatbot Arena convention: a model is only ranked below
    those that are better with confidence (non-overlapping intervals).
    """
    return [1 + sum(other.low > this.high for other in intervals) for this in intervals]
