"""Confidence intervals, significance tests, ratings and ensemble diversity (seeded, reproducible).

Score matrices are laid out members x items: row ``m`` holds member ``m``'s per-item scores.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

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
    # Sorted lows and a binary search per entry: a leaderboard of 500 entries costs 500 searches,
    # not 250,000 comparisons. NaN bounds beat nothing and are beaten by nothing, as with ">".
    lows = np.array([i.low for i in intervals], dtype=np.float64)
    lows = np.sort(lows[~np.isnan(lows)])
    highs = np.array([i.high for i in intervals], dtype=np.float64)
    above = len(lows) - np.searchsorted(lows, highs, side="right")
    return [1 + (0 if np.isnan(h) else int(a)) for h, a in zip(highs, above, strict=True)]


def rating_rank_bounds(intervals: Mapping[str, Interval]) -> dict[str, int]:
    """``rank_upper_bounds`` for named intervals, e.g. the output of ``bradley_terry_intervals``."""
    names = list(intervals)
    return dict(zip(names, rank_upper_bounds([intervals[name] for name in names]), strict=True))


# ------------------------------------------------------------ Bradley-Terry

# One battle: (a, b, score of a), where 1 means a was preferred, 0 b, and 0.5 a tie.
Battle = tuple[str, str, float]

ELO_BASE = 1000.0
ELO_SCALE = 400.0
_BT_MAX_ITER = 10_000
_BT_TOL = 1e-10


def _battle_arrays(battles: Sequence[Battle]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    names = sorted({name for a, b, _ in battles for name in (a, b)})
    index = {name: i for i, name in enumerate(names)}
    first = np.array([index[a] for a, _, _ in battles], dtype=np.int64)
    second = np.array([index[b] for _, b, _ in battles], dtype=np.int64)
    score = np.array([float(s) for _, _, s in battles], dtype=np.float64)
    if np.any(first == second):
        raise ValueError("a battle needs two different players")
    if np.any((score < 0.0) | (score > 1.0)):
        raise ValueError("battle scores must lie in [0, 1] (1 win, 0.5 tie, 0 loss)")
    return names, first, second, score


def _win_matrix(n: int, first: np.ndarray, second: np.ndarray, score: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """wins[i, j]: how often i beat j, ties counting half to each side."""
    wins = np.zeros((n, n))
    np.add.at(wins, (first, second), score * weight)
    np.add.at(wins, (second, first), (1.0 - score) * weight)
    return wins


def _fit_log_strengths(wins: np.ndarray, prior: float, start: np.ndarray | None = None) -> np.ndarray:
    """Natural-log strengths (mean 0) maximising the Bradley-Terry likelihood, by Hunter's (2004) MM."""
    n = wins.shape[0]
    if prior > 0:
        # ``prior`` virtual ties between every pair: keeps strengths finite when someone never wins.
        wins = wins + (prior / 2.0) * (1.0 - np.eye(n))
    else:
        # The maximum exists only if every player beat, directly or through others, every other (Ford 1957).
        components, _ = connected_components(csr_matrix(wins > 0), directed=True, connection="strong")
        if components > 1:
            raise ValueError(
                "ratings are unbounded: some players never beat (or never lost to) the rest; use prior > 0"
            )
    games = wins + wins.T
    total_wins = wins.sum(axis=1)
    log_p = np.zeros(n) if start is None else start.copy()
    for _ in range(_BT_MAX_ITER):
        p = np.exp(log_p)
        denominators = (games / (p[:, None] + p[None, :])).sum(axis=1)
        new_log_p = np.log(total_wins) - np.log(denominators)
        new_log_p -= new_log_p.mean()
        converged = np.max(np.abs(new_log_p - log_p)) < _BT_TOL
        log_p = new_log_p
        if converged:
            break
    return log_p


def _to_elo(log_p: np.ndarray) -> np.ndarray:
    return ELO_BASE + ELO_SCALE * log_p / math.log(10.0)


def bradley_terry(battles: Sequence[Battle], *, prior: float = 1.0) -> dict[str, float]:
    """Bradley-Terry ratings on the Elo scale (mean 1000; +400 means 10:1 odds of being preferred).

    Ties count as half a win for each side. ``prior`` adds that many virtual ties between every
    pair so ratings stay finite; against hundreds of battles one is negligible. With
    ``prior=0`` the plain maximum-likelihood fit is returned, or ValueError if it does not exist.
    """
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    if not battles:
        return {}
    names, first, second, score = _battle_arrays(battles)
    wins = _win_matrix(len(names), first, second, score, np.ones(len(score)))
    return dict(zip(names, _to_elo(_fit_log_strengths(wins, prior)).tolist(), strict=True))


def bradley_terry_intervals(
    battles: Sequence[Battle],
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    prior: float = 1.0,
) -> dict[str, Interval]:
    """Bradley-Terry ratings with percentile-bootstrap intervals over battles.

    Each resample redraws the battles with replacement and refits; ``Interval.n`` is the number
    of battles the player took part in. Feed the result to ``rating_rank_bounds``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if prior < 0:
        raise ValueError(f"prior must be >= 0, got {prior}")
    if not battles:
        return {}
    names, first, second, score = _battle_arrays(battles)
    n, m = len(names), len(score)
    point = _fit_log_strengths(_win_matrix(n, first, second, score, np.ones(m)), prior)
    rng = np.random.default_rng(seed)
    samples = np.empty((resamples, n))
    for r in range(resamples):
        # Resampling battles is the same as weighting each by how often it was drawn.
        weight = np.bincount(rng.integers(0, m, size=m), minlength=m).astype(np.float64)
        samples[r] = _fit_log_strengths(_win_matrix(n, first, second, score, weight), prior, start=point)
    alpha = (1.0 - level) / 2.0
    low, high = _to_elo(np.quantile(samples, alpha, axis=0)), _to_elo(np.quantile(samples, 1.0 - alpha, axis=0))
    rating = _to_elo(point)
    counts = np.bincount(first, minlength=n) + np.bincount(second, minlength=n)
    return {
        name: Interval(
            float(rating[i]),
            min(float(low[i]), float(rating[i])),
            max(float(high[i]), float(rating[i])),
            int(counts[i]),
        )
        for i, name in enumerate(names)
    }


# --------------------------------------------------- oracle and diversity


def _member_matrix(values: Sequence[Sequence[float]] | np.ndarray, dtype: type = np.float64) -> np.ndarray:
    matrix: np.ndarray = np.asarray(values, dtype=dtype)
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise ValueError(f"expected a non-empty members x items matrix, got shape {matrix.shape}")
    return matrix


def oracle_scores(scores: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """Per item, the best member's score: what a perfect per-item selector would get."""
    return _member_matrix(scores).max(axis=0)


@dataclass(frozen=True)
class Headroom:
    """How much a perfect per-item selector would gain over the best single member."""

    oracle: float
    best_member: int
    best_mean: float
    headroom: float


def headroom(scores: Sequence[Sequence[float]] | np.ndarray) -> Headroom:
    """Oracle mean minus the best member's mean (the first best member on ties)."""
    matrix = _member_matrix(scores)
    means = matrix.mean(axis=1)
    best = int(np.argmax(means))
    oracle = float(matrix.max(axis=0).mean())
    return Headroom(oracle=oracle, best_member=best, best_mean=float(means[best]), headroom=oracle - float(means[best]))


def error_correlation(correct: Sequence[Sequence[bool]] | np.ndarray) -> np.ndarray:
    """Members x members phi coefficients between binary errors (1 = wrong on that item).

    Phi is Pearson's correlation of 0/1 variables. A member that is always right or always wrong
    has no variance, so its correlations are NaN; the diagonal is 1.
    """
    errors = 1.0 - _member_matrix(correct, dtype=bool).astype(np.float64)
    centered = errors - errors.mean(axis=1, keepdims=True)
    covariance = centered @ centered.T
    spread = np.sqrt(np.diag(covariance))
    with np.errstate(invalid="ignore", divide="ignore"):
        phi = covariance / np.outer(spread, spread)
    phi[np.outer(spread, spread) == 0] = np.nan
    np.fill_diagonal(phi, 1.0)
    return np.clip(phi, -1.0, 1.0)


def cohen_kappa_matrix(labels: Sequence[Sequence[Hashable]] | np.ndarray) -> np.ndarray:
    """Members x members Cohen's kappa between the members' answers (labels of one type) per item.

    Kappa is (observed - chance agreement) / (1 - chance agreement); it is NaN when chance
    agreement is 1 (both gave one and the same answer throughout). The diagonal is 1.
    """
    matrix = np.asarray(labels)
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise ValueError(f"expected a non-empty members x items matrix, got shape {matrix.shape}")
    _, codes = np.unique(matrix, return_inverse=True)
    codes = codes.reshape(matrix.shape)
    members, items = matrix.shape
    categories = int(codes.max()) + 1
    shares = np.stack([np.bincount(row, minlength=categories) / items for row in codes])
    kappa = np.eye(members)
    for a in range(members):
        for b in range(a + 1, members):
            observed = float(np.mean(codes[a] == codes[b]))
            chance = float(shares[a] @ shares[b])
            value = (observed - chance) / (1.0 - chance) if chance < 1.0 else math.nan
            kappa[a, b] = kappa[b, a] = value
    return kappa


def effective_members(correlation: np.ndarray) -> float:
    """Effective number of independent members, N / (1 + (N - 1) * mean pairwise correlation), in [1, N].

    Take ``correlation`` from ``error_correlation`` (or ``cohen_kappa_matrix``); NaN pairs are
    skipped and, with none left, members count as independent.
    """
    matrix = np.asarray(correlation, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 1:
        raise ValueError(f"expected a square correlation matrix, got shape {matrix.shape}")
    n = matrix.shape[0]
    if n == 1:
        return 1.0
    pairs = matrix[~np.eye(n, dtype=bool)]
    pairs = pairs[~np.isnan(pairs)]
    mean = float(pairs.mean()) if pairs.size else 0.0
    denominator = 1.0 + (n - 1) * mean
    # Negatively correlated errors would push the formula past N (or divide by zero): cap at N.
    if denominator <= 0.0:
        return float(n)
    return float(min(max(n / denominator, 1.0), n))


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, score) points no other point beats on both axes, cheapest first.

    Of points equal on both axes only the first listed stays, so a caller's order breaks ties.
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    frontier, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            frontier.append(i)
            best = points[i][1]
    return frontier
