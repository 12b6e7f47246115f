"""The error floor of correlated members: when does adding members to a majority vote stop paying?

A Gaussian copula over who is right (the budgeted-selection paper's model): member ``i`` is right
on an item when a latent ``Z_i < Φ⁻¹(p_i)``, with ``Z ~ N(0, R)``. ``p_i`` is the member's accuracy
and ``R`` the latent (tetrachoric) correlation of the members' correctness, both estimated on dev.
Members that fail on the same items have a high correlation, and a vote over more of them
converges to ``Φ(Φ⁻¹(p̄) / √ρ̄)`` instead of to 1 (Condorcet's limit, reached only when ρ̄ = 0).

The model knows only right and wrong, so it is exact for two-answer tasks. Where many answers are
possible, wrong members rarely give the same wrong answer, and a plurality vote does better than
this binary majority predicts: read the curve as the model's prediction, a cautious one there.

Matrices are members x items, as in ``ensembles.stats``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps
from scipy.optimize import brentq

from ensembles.strategies.base import MemberAnswer
from ensembles.strategies.vote import MajorityVote

# Latent correlations are searched in (-_R_MAX, _R_MAX): at exactly ±1 the bivariate normal is singular.
_R_MAX = 1.0 - 1e-6
# Smallest eigenvalue kept when a pairwise estimate is repaired into a valid correlation matrix.
_EIGEN_FLOOR = 1e-6


def _correct_matrix(correct: Sequence[Sequence[bool]] | np.ndarray) -> np.ndarray:
    matrix = np.asarray(correct)
    if matrix.ndim != 2 or matrix.shape[0] < 1 or matrix.shape[1] < 1:
        raise ValueError(f"expected a non-empty members x items matrix, got shape {matrix.shape}")
    if not np.isin(matrix, (0, 1)).all():
        raise ValueError("correctness must be 0/1 (right or wrong per item)")
    return matrix.astype(bool)


def tetrachoric(a_correct: Sequence[bool] | np.ndarray, b_correct: Sequence[bool] | np.ndarray) -> float:
    """Latent correlation of two members' correctness on the same items.

    The ``r`` for which a standard bivariate normal with correlation ``r`` puts the observed share
    of items both got right below the thresholds ``Φ⁻¹(p_a)``, ``Φ⁻¹(p_b)``. A 2x2 table with an
    empty cell gets half a count in every cell (R psych's ``tetrachoric`` correction), so that a
    small sample is not read as exactly ±1. NaN when either member is always right or always wrong.
    """
    a = np.asarray(a_correct, dtype=bool).ravel()
    b = np.asarray(b_correct, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal lengths, got {a.size} and {b.size}")
    if a.size == 0 or a.all() or not a.any() or b.all() or not b.any():
        return math.nan
    table = np.array([[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]], dtype=np.float64)
    if (table == 0).any():
        table += 0.5
    table /= table.sum()
    both = table[0, 0]
    thresholds = sps.norm.ppf([table[0].sum(), table[:, 0].sum()])

    def excess(r: float) -> float:
        return float(sps.multivariate_normal.cdf(thresholds, mean=[0.0, 0.0], cov=[[1.0, r], [r, 1.0]])) - both

    low, high = excess(-_R_MAX), excess(_R_MAX)
    # The orthant probability grows with r; outside its range the nearest bound is the estimate.
    if low >= 0.0:
        return -_R_MAX
    if high <= 0.0:
        return _R_MAX
    return float(brentq(excess, -_R_MAX, _R_MAX, xtol=1e-8))


def nearest_correlation(matrix: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """A valid correlation matrix near ``matrix``: negative eigenvalues clipped, then unit diagonal.

    Pairwise estimates need not fit together (three members cannot all correlate at -0.9);
    clipping the spectrum is the simple repair, not Higham's exact nearest matrix.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 1:
        raise ValueError(f"expected a square matrix, got shape {m.shape}")
    m = (m + m.T) / 2.0
    values, vectors = np.linalg.eigh(m)
    repaired = (vectors * np.clip(values, _EIGEN_FLOOR, None)) @ vectors.T
    scale = np.sqrt(np.diag(repaired))
    repaired = repaired / np.outer(scale, scale)
    np.fill_diagonal(repaired, 1.0)
    return np.clip(repaired, -1.0, 1.0)


@dataclass(frozen=True)
class CopulaFit:
    """Each member's accuracy and the members' latent correlation, estimated from one split."""

    accuracy: np.ndarray
    # A valid correlation matrix; pairs that could not be estimated hold the mean of those that could.
    correlation: np.ndarray
    mean_accuracy: float
    # Mean of the pairwise estimates (NaN with fewer than two members that are sometimes right, sometimes wrong).
    mean_correlation: float
    items: int


def fit_copula(correct: Sequence[Sequence[bool]] | np.ndarray) -> CopulaFit:
    """Estimate the copula from a members x items 0/1 correctness matrix (dev, for what is then reported)."""
    matrix = _correct_matrix(correct)
    members, items = matrix.shape
    estimate = np.eye(members)
    for a in range(members):
        for b in range(a + 1, members):
            estimate[a, b] = estimate[b, a] = tetrachoric(matrix[a], matrix[b])
    pairs = estimate[np.triu_indices(members, k=1)]
    known = pairs[~np.isnan(pairs)]
    mean_correlation = float(known.mean()) if known.size else math.nan
    # A member always right (or always wrong) has an infinite threshold: its correlation changes no
    # prediction, and the mean keeps the matrix close to one the repair leaves alone.
    estimate[np.isnan(estimate)] = mean_correlation if known.size else 0.0
    accuracy = matrix.mean(axis=1)
    return CopulaFit(
        accuracy=accuracy,
        correlation=nearest_correlation(estimate),
        mean_accuracy=float(accuracy.mean()),
        mean_correlation=mean_correlation,
        items=items,
    )


def predicted_vote_accuracy(
    accuracy: Sequence[float] | np.ndarray,
    correlation: Sequence[Sequence[float]] | np.ndarray,
    *,
    samples: int = 40_000,
    seed: int = 0,
) -> np.ndarray:
    """The model's accuracy of a majority vote over the first n members, for n = 1..N, by Monte Carlo.

    Members vote in the given order (best first); a tie goes to the first member's side, as
    ``MajorityVote`` breaks ties by member order. Every n shares the same draws, so the curve is
    smooth in n; 40,000 draws put its standard error under 0.003.
    """
    p = np.asarray(accuracy, dtype=np.float64).ravel()
    r = np.asarray(correlation, dtype=np.float64)
    if r.shape != (p.size, p.size) or p.size < 1:
        raise ValueError(f"need N accuracies and an N x N correlation matrix, got {p.size} and {r.shape}")
    if ((p < 0.0) | (p > 1.0)).any():
        raise ValueError("accuracies must lie in [0, 1]")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    # A square root through the spectrum works for singular R too (perfectly correlated members).
    values, vectors = np.linalg.eigh((r + r.T) / 2.0)
    root = vectors * np.sqrt(np.clip(values, 0.0, None))
    latent = np.random.default_rng(seed).standard_normal((samples, p.size)) @ root.T
    right = latent < sps.norm.ppf(p)
    votes = np.cumsum(right, axis=1)
    sizes = np.arange(1, p.size + 1)
    wins = (2 * votes > sizes) | ((2 * votes == sizes) & right[:, :1])
    return wins.mean(axis=0)


def vote_asymptote(mean_accuracy: float, mean_correlation: float) -> float:
    """Where a majority vote of ever more equicorrelated members converges: Φ(Φ⁻¹(p̄) / √ρ̄).

    A ceiling when p̄ > 1/2, a floor when p̄ < 1/2. With ρ̄ ≤ 0 it is Condorcet's 1 (or 0); NaN
    when ρ̄ is unknown.
    """
    if math.isnan(mean_accuracy) or math.isnan(mean_correlation):
        return math.nan
    if not 0.0 <= mean_accuracy <= 1.0:
        raise ValueError(f"mean accuracy must lie in [0, 1], got {mean_accuracy}")
    if mean_correlation <= 0.0:
        return 1.0 if mean_accuracy > 0.5 else 0.0 if mean_accuracy < 0.5 else 0.5
    return float(sps.norm.cdf(sps.norm.ppf(mean_accuracy) / math.sqrt(min(mean_correlation, 1.0))))


def vote_curve(
    answers: Sequence[Sequence[str]],
    values: Sequence[Sequence[float]] | np.ndarray,
) -> list[float]:
    """Measured: the mean score of ``MajorityVote`` over the first n members, for n = 1..N.

    ``answers`` and ``values`` are members x items, members in voting order. The vote's answer is
    one of its supporters' answers, so an item scores what its first supporter scored; no item is
    scored again. An item where every member abstains scores 0.
    """
    scores = np.asarray(values, dtype=np.float64)
    if scores.ndim != 2 or scores.shape != (len(answers), len(answers[0]) if answers else 0) or scores.size == 0:
        raise ValueError(f"answers and values must both be non-empty members x items, got {scores.shape}")
    members, items = scores.shape
    names = [str(m) for m in range(members)]
    vote = MajorityVote()
    curve = []
    for n in range(1, members + 1):
        total = 0.0
        for item in range(items):
            ballot = [MemberAnswer(member=names[m], answer=answers[m][item]) for m in range(n)]
            supporters = vote.combine(ballot).details["supporters"]
            total += scores[int(supporters[0]), item] if supporters else 0.0
        curve.append(total / items)
    return curve
