import math

import pytest

from ensembles.stats import Interval, bradley_terry, bradley_terry_intervals, rating_rank_bounds


def elo(ratio_to_geometric_mean: float) -> float:
    return 1000 + 400 * math.log10(ratio_to_geometric_mean)


def test_two_to_one_wins_give_strengths_in_ratio_two():
    ratings = bradley_terry([("A", "B", 1), ("A", "B", 1), ("B", "A", 1)], prior=0)
    # p_A / p_B = 2, geometric mean 1: p_A = sqrt(2), p_B = 1 / sqrt(2)
    assert ratings == pytest.approx({"A": elo(math.sqrt(2)), "B": elo(1 / math.sqrt(2))})
    assert ratings["A"] - ratings["B"] == pytest.approx(400 * math.log10(2))


def test_a_tie_counts_half_a_win_for_each_side():
    ratings = bradley_terry([("A", "B", 1.0), ("A", "B", 0.5)], prior=0)
    # A has 1.5 wins, B 0.5: ratio 3
    assert ratings["A"] - ratings["B"] == pytest.approx(400 * math.log10(3))
    assert (ratings["A"] + ratings["B"]) / 2 == pytest.approx(1000)


def test_consistent_pairwise_records_are_recovered_exactly():
    battles = (
        [("A", "B", 1)] * 2
        + [("A", "B", 0)]
        + [("B", "C", 1)] * 2
        + [("C", "B", 1)]
        + [("A", "C", 1)] * 4
        + [("A", "C", 0)]
    )
    # 2:1, 2:1 and 4:1 fit p = (4, 2, 1) exactly; geometric mean 2
    assert bradley_terry(battles, prior=0) == pytest.approx({"A": elo(2), "B": elo(1), "C": elo(0.5)})


def test_a_cycle_gives_equal_ratings():
    ratings = bradley_terry([("A", "B", 1), ("B", "C", 1), ("C", "A", 1)], prior=0)
    assert ratings == pytest.approx({"A": 1000, "B": 1000, "C": 1000})


def test_the_prior_adds_virtual_ties_and_keeps_an_unbeaten_rating_finite():
    ratings = bradley_terry([("A", "B", 1)] * 3, prior=1.0)
    # one virtual tie: A has 3.5 wins, B 0.5: ratio 7
    assert ratings["A"] - ratings["B"] == pytest.approx(400 * math.log10(7))


def test_without_a_prior_an_unbeaten_player_has_no_finite_rating():
    with pytest.raises(ValueError, match="unbounded"):
        bradley_terry([("A", "B", 1), ("B", "C", 1)], prior=0)


@pytest.mark.parametrize("battle", [("A", "A", 1), ("A", "B", 2), ("A", "B", -0.5)])
def test_malformed_battles_are_rejected(battle):
    with pytest.raises(ValueError):
        bradley_terry([("A", "B", 1), battle])


def test_no_battles_give_no_ratings():
    assert bradley_terry([]) == {} and bradley_terry_intervals([]) == {}


def battles_between(strong: str, weak: str, wins: int, losses: int, ties: int = 0) -> list:
    return [(strong, weak, 1.0)] * wins + [(strong, weak, 0.0)] * losses + [(strong, weak, 0.5)] * ties


def test_bootstrap_intervals_are_seeded_and_contain_the_point_rating():
    battles = (
        battles_between("A", "B", 30, 10, 5) + battles_between("B", "C", 25, 15) + battles_between("A", "C", 35, 5)
    )
    first = bradley_terry_intervals(battles, resamples=200, seed=1)
    assert first == bradley_terry_intervals(battles, resamples=200, seed=1)
    assert first != bradley_terry_intervals(battles, resamples=200, seed=2)
    point = bradley_terry(battles)
    for name, interval in first.items():
        assert interval.mean == pytest.approx(point[name])
        assert interval.low <= interval.mean <= interval.high
    assert (first["A"].n, first["B"].n, first["C"].n) == (85, 85, 80)


def test_more_battles_give_narrower_intervals():
    few = bradley_terry_intervals(battles_between("A", "B", 6, 4), resamples=300)
    many = bradley_terry_intervals(battles_between("A", "B", 600, 400), resamples=300)
    assert (many["A"].high - many["A"].low) < (few["A"].high - few["A"].low) / 5


def test_rank_bounds_separate_clear_winners_and_share_a_rank_for_a_close_pair():
    battles = battles_between("A", "B", 90, 10) + battles_between("A", "C", 90, 10) + battles_between("B", "C", 50, 50)
    bounds = rating_rank_bounds(bradley_terry_intervals(battles, resamples=300))
    assert bounds == {"A": 1, "B": 2, "C": 2}


def test_rank_bounds_count_only_confidently_better_entries():
    intervals = {
        "x": Interval(1200, 1150, 1250, 10),
        "y": Interval(1100, 1040, 1160, 10),
        "z": Interval(1000, 950, 1030, 10),
    }
    # y's high 1160 > x's low 1150, so nobody is surely above y; z sits below both lows.
    assert rating_rank_bounds(intervals) == {"x": 1, "y": 1, "z": 3}
