import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from ensembles.stats import (
    Headroom,
    cohen_kappa_matrix,
    effective_members,
    error_correlation,
    headroom,
    oracle_scores,
)

SCORES = [
    [1, 0, 1, 0],
    [0, 1, 1, 0],
    [0, 0, 0, 1],
]


def test_oracle_takes_the_best_member_on_each_item():
    assert oracle_scores(SCORES).tolist() == [1, 1, 1, 1]
    assert oracle_scores([[0.2, 0.9], [0.5, 0.1]]).tolist() == [0.5, 0.9]


def test_headroom_is_oracle_mean_minus_the_best_members_mean():
    # member means 0.5, 0.5, 0.25: the first best wins the tie; oracle mean 1.0
    assert headroom(SCORES) == Headroom(oracle=1.0, best_member=0, best_mean=0.5, headroom=0.5)


def test_a_member_that_dominates_leaves_no_headroom():
    assert headroom([[1, 1, 0], [1, 0, 0]]).headroom == 0.0


def test_oracle_rejects_a_matrix_that_is_not_members_by_items():
    with pytest.raises(ValueError):
        oracle_scores([1, 0, 1])
    with pytest.raises(ValueError):
        headroom(np.zeros((2, 0)))


def test_error_correlation_is_the_phi_coefficient_of_the_two_by_two_table():
    a = [1, 1, 0, 0, 1, 0]
    b = [1, 0, 0, 0, 1, 1]
    # errors: both wrong 2, only a wrong 1, only b wrong 1, both right 2
    # phi = (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3
    phi = error_correlation([a, b])
    assert phi == pytest.approx(np.array([[1, 1 / 3], [1 / 3, 1]]))


def test_identical_and_opposite_errors_correlate_at_plus_and_minus_one():
    a = [1, 0, 1, 0]
    phi = error_correlation([a, a, [1 - x for x in a]])
    assert phi[0, 1] == pytest.approx(1.0) and phi[0, 2] == pytest.approx(-1.0)


def test_a_member_that_is_always_right_has_undefined_correlations():
    phi = error_correlation([[1, 0, 1], [1, 1, 1]])
    assert math.isnan(phi[0, 1]) and math.isnan(phi[1, 0])
    assert phi[1, 1] == 1.0


def test_cohen_kappa_corrects_agreement_for_chance():
    # observed agreement 3/4; chance 0.5*0.25 + 0.5*0.75 = 0.5; kappa = (0.75 - 0.5) / 0.5 = 0.5
    kappa = cohen_kappa_matrix([["x", "x", "y", "y"], ["x", "y", "y", "y"]])
    assert kappa == pytest.approx(np.array([[1, 0.5], [0.5, 1]]))


def test_cohen_kappa_matches_scikit_learn_on_random_answers():
    rng = np.random.default_rng(0)
    answers = rng.choice(["A", "B", "C", "D"], size=(4, 300), p=[0.4, 0.3, 0.2, 0.1])
    kappa = cohen_kappa_matrix(answers)
    for i in range(4):
        for j in range(4):
            if i != j:
                assert kappa[i, j] == pytest.approx(cohen_kappa_score(answers[i], answers[j]))


def test_cohen_kappa_is_undefined_when_both_always_give_the_same_answer():
    kappa = cohen_kappa_matrix([[1, 1, 1], [1, 1, 1], [1, 0, 1]])
    assert math.isnan(kappa[0, 1])
    assert kappa[0, 2] == pytest.approx(0.0)


@pytest.mark.parametrize(
    ("mean_correlation", "expected"),
    [
        (0.0, 3.0),  # independent: all three count
        (0.5, 1.5),  # 3 / (1 + 2 * 0.5)
        (1.0, 1.0),  # identical errors: one member's worth
        (-0.5, 3.0),  # 1 + 2 * -0.5 = 0: capped at N
        (-0.2, 3.0),  # 3 / 0.6 = 5: clipped to N
    ],
)
def test_effective_members_follows_the_design_effect_formula(mean_correlation, expected):
    matrix = np.full((3, 3), mean_correlation)
    np.fill_diagonal(matrix, 1.0)
    assert effective_members(matrix) == pytest.approx(expected)


def test_effective_members_skips_undefined_pairs():
    matrix = np.array([[1.0, np.nan, 0.2], [np.nan, 1.0, 0.4], [0.2, 0.4, 1.0]])
    # mean of defined pairs 0.3: 3 / (1 + 2 * 0.3) = 1.875
    assert effective_members(matrix) == pytest.approx(1.875)
    assert effective_members(np.array([[1.0, np.nan], [np.nan, 1.0]])) == 2.0
    assert effective_members(np.array([[1.0]])) == 1.0


def test_effective_members_of_real_error_correlations():
    correct = [[1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]]
    # phi = 1/3: 2 / (1 + 1/3) = 1.5
    assert effective_members(error_correlation(correct)) == pytest.approx(1.5)
