"""The Gaussian-copula model of correlated members: estimating it, and what it predicts for a vote."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from ensembles.copula import (
    fit_copula,
    nearest_correlation,
    predicted_vote_accuracy,
    tetrachoric,
    vote_asymptote,
    vote_curve,
)


def equicorrelated(n: int, rho: float) -> np.ndarray:
    return np.full((n, n), rho) + (1.0 - rho) * np.eye(n)


def sample_correct(accuracy, correlation, items: int, seed: int) -> np.ndarray:
    """Members x items correctness drawn from the copula itself."""
    latent = np.random.default_rng(seed).multivariate_normal(np.zeros(len(accuracy)), correlation, size=items)
    return (latent < sps.norm.ppf(accuracy)).T


def condorcet(p: float, n: int) -> float:
    """Independent members of accuracy p: majority right, a tie counting half (the first member's side)."""
    binom = sps.binom(n, p)
    return float(binom.sf(n // 2) if n % 2 else binom.sf(n // 2) + binom.pmf(n // 2) / 2)


def test_independent_members_reproduce_condorcet_s_binomial_majority():
    predicted = predicted_vote_accuracy([0.6] * 9, np.eye(9), seed=1)
    expected = [condorcet(0.6, n) for n in range(1, 10)]
    # 40,000 draws: a standard error of at most 0.0025.
    assert predicted == pytest.approx(expected, abs=0.01)
    assert predicted[8] > predicted[0] + 0.1


def test_perfectly_correlated_members_give_a_flat_curve_at_their_accuracy():
    predicted = predicted_vote_accuracy([0.7] * 6, np.ones((6, 6)), seed=2)
    assert np.ptp(predicted) == 0.0  # every member right on exactly the same draws
    assert predicted[0] == pytest.approx(0.7, abs=0.01)
    assert vote_asymptote(0.7, 1.0) == pytest.approx(0.7)


def test_the_asymptote_is_where_many_equicorrelated_members_end_up():
    predicted = predicted_vote_accuracy([0.65] * 201, equicorrelated(201, 0.3), samples=20_000, seed=3)
    limit = vote_asymptote(0.65, 0.3)
    assert limit == pytest.approx(sps.norm.cdf(sps.norm.ppf(0.65) / math.sqrt(0.3)))
    assert predicted[-1] == pytest.approx(limit, abs=0.015)
    assert 0.65 < limit < 1.0


def test_below_half_right_the_asymptote_is_a_floor_and_without_correlation_condorcet_s_limit():
    assert vote_asymptote(0.4, 0.5) < 0.4
    assert vote_asymptote(0.8, 0.0) == 1.0 and vote_asymptote(0.3, -0.1) == 0.0 and vote_asymptote(0.5, 0.0) == 0.5
    assert vote_asymptote(0.8, 1e-4) == pytest.approx(1.0)
    assert math.isnan(vote_asymptote(0.8, math.nan))


@pytest.mark.parametrize("rho", [0.6, 0.2, -0.35])
def test_the_tetrachoric_estimate_recovers_the_latent_correlation_of_copula_data(rho):
    correct = sample_correct([0.7, 0.55], equicorrelated(2, rho), items=20_000, seed=4)
    assert tetrachoric(correct[0], correct[1]) == pytest.approx(rho, abs=0.04)


def test_fitting_recovers_accuracies_and_the_correlation_matrix():
    truth = np.array([[1.0, 0.7, 0.5, 0.3], [0.7, 1.0, 0.4, 0.2], [0.5, 0.4, 1.0, 0.1], [0.3, 0.2, 0.1, 1.0]])
    accuracy = [0.8, 0.7, 0.6, 0.45]
    fit = fit_copula(sample_correct(accuracy, truth, items=20_000, seed=5))
    assert fit.items == 20_000
    assert fit.accuracy == pytest.approx(accuracy, abs=0.015)
    assert fit.correlation == pytest.approx(truth, abs=0.05)
    assert fit.mean_correlation == pytest.approx(truth[np.triu_indices(4, 1)].mean(), abs=0.03)
    assert fit.mean_accuracy == pytest.approx(np.mean(accuracy), abs=0.01)


def test_on_a_two_answer_task_the_prediction_matches_the_measured_vote():
    accuracy, truth = [0.75, 0.7, 0.68, 0.66, 0.64], equicorrelated(5, 0.4)
    correct = sample_correct(accuracy, truth, items=20_000, seed=6)
    # Two answers: every wrong member gives the same wrong answer, so the binary model is exact.
    answers = [["yes" if c else "no" for c in row] for row in correct]
    measured = vote_curve(answers, correct.astype(float))
    fit = fit_copula(correct)
    predicted = predicted_vote_accuracy(fit.accuracy, fit.correlation, seed=7)
    assert predicted == pytest.approx(measured, abs=0.015)


def test_a_member_always_right_has_no_correlation_and_changes_no_prediction():
    correct = np.array([[1, 1, 1, 1, 1, 1], [1, 0, 1, 0, 1, 1], [1, 0, 0, 0, 1, 1]])
    assert math.isnan(tetrachoric(correct[0], correct[1]))
    fit = fit_copula(correct)
    assert fit.mean_correlation == pytest.approx(tetrachoric(correct[1], correct[2]))
    assert np.all(np.linalg.eigvalsh(fit.correlation) > 0)
    # The first member is always right, so with it first every tie and every vote of one is right.
    predicted = predicted_vote_accuracy(fit.accuracy, fit.correlation)
    assert predicted[0] == 1.0 and predicted[1] == 1.0


def test_pairwise_estimates_that_do_not_fit_together_are_repaired_into_a_correlation_matrix():
    impossible = equicorrelated(3, -0.9)
    repaired = nearest_correlation(impossible)
    assert np.diag(repaired) == pytest.approx(np.ones(3))
    assert np.linalg.eigvalsh(repaired).min() > 0
    valid = equicorrelated(3, 0.4)
    assert nearest_correlation(valid) == pytest.approx(valid)


def test_the_measured_curve_replays_the_vote_with_ties_to_the_earlier_member():
    answers = [["1", "2", "9", "9"], ["1", "7", "3", "8"], ["5", "2", "3", "4"]]
    values = [[1, 1, 0, 0], [1, 0, 1, 0], [0, 1, 1, 1]]
    # n=1: the first member, 2/4. n=2: every disagreement is a tie won by the first: 2/4.
    # n=3: 1, 2 and 3 win by majority; 9 vs 8 vs 4 is a three-way tie won by the first's 9.
    assert vote_curve(answers, values) == [0.5, 0.5, 0.75]


def test_bad_inputs_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="0/1"):
        fit_copula([[1, 0.5], [0, 1]])
    with pytest.raises(ValueError, match="members x items"):
        fit_copula([1, 0, 1])
    with pytest.raises(ValueError, match="correlation matrix"):
        predicted_vote_accuracy([0.5, 0.6], np.eye(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predicted_vote_accuracy([1.5], np.eye(1))
    with pytest.raises(ValueError, match="paired samples"):
        tetrachoric([1, 0], [1, 0, 1])
