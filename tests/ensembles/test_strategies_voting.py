"""Voting and pooling strategies that combine one item's answers: weighted vote and pooling."""

import math

import pytest

from ensembles.errors import EnsembleError
from ensembles.strategies import MemberAnswer, make_strategy


def ma(member: str, answer: str, *, p: float | None = None, options: dict[str, float] | None = None) -> MemberAnswer:
    """A member answer whose confidence exp(mean logprob) is ``p``."""
    return MemberAnswer(
        member=member,
        answer=answer,
        logprob=None if p is None else math.log(p),
        option_logprobs=options,
    )


def dev_where_good_is_right_and_the_others_agree_on_a_wrong_answer(items: int = 10):
    outputs = [[ma("good", str(i)), ma("bad1", "999"), ma("bad2", "999")] for i in range(items)]
    references = [str(i) for i in range(items)]
    return outputs, references


# --- weighted_vote -----------------------------------------------------------------------------------


def test_weighted_vote_lets_a_member_accurate_on_dev_outvote_two_that_were_wrong():
    vote = make_strategy("weighted_vote")
    vote.fit(*dev_where_good_is_right_and_the_others_agree_on_a_wrong_answer())
    decision = vote.combine([ma("good", "7"), ma("bad1", "3"), ma("bad2", "3")])
    assert decision.answer == "7"
    # (10 + 1) / (10 + 2) for good; (0 + 1) / (10 + 2) for each bad member.
    assert decision.details["weights"] == {"7": round(11 / 12, 6), "3": round(2 / 12, 6)}
    assert decision.details["member_weights"] == {
        "good": round(11 / 12, 6),
        "bad1": round(1 / 12, 6),
        "bad2": round(1 / 12, 6),
    }
    assert decision.details["supporters"] == ["good"]
    assert decision.member_calls == 3
    assert make_strategy("majority_vote").combine([ma("good", "7"), ma("bad1", "3"), ma("bad2", "3")]).answer == "3"


def test_weighted_vote_with_log_odds_gives_members_below_chance_no_weight():
    vote = make_strategy("weighted_vote", {"log_odds": True})
    vote.fit(*dev_where_good_is_right_and_the_others_agree_on_a_wrong_answer())
    decision = vote.combine([ma("good", "7"), ma("bad1", "3"), ma("bad2", "3")])
    assert decision.answer == "7"
    assert decision.details["member_weights"]["bad1"] == 0.0
    assert decision.details["member_weights"]["good"] == pytest.approx(math.log(11), abs=1e-6)


def test_weighted_vote_gives_a_member_unseen_on_dev_the_prior_weight_of_one_half():
    vote = make_strategy("weighted_vote")
    vote.fit(*dev_where_good_is_right_and_the_others_agree_on_a_wrong_answer())
    decision = vote.combine([ma("newcomer", "5"), ma("bad1", "3")])
    assert decision.details["member_weights"] == {"newcomer": 0.5, "bad1": round(1 / 12, 6)}
    assert decision.answer == "5"


def test_weighted_vote_by_confidence_needs_no_dev_split_and_trusts_the_sure_answer():
    vote = make_strategy("weighted_vote", {"weights": "confidence"})
    assert vote.needs_fit is False
    decision = vote.combine([ma("a", "A", p=0.9), ma("b", "B", p=0.3), ma("c", "B", p=0.3)])
    assert decision.answer == "A"
    assert decision.details["weights"] == {"A": 0.9, "B": 0.6}


def test_weighted_vote_by_confidence_weighs_members_without_logprobs_by_the_default():
    vote = make_strategy("weighted_vote", {"weights": "confidence", "default_confidence": 0.2})
    decision = vote.combine([ma("remote", "A"), ma("local", "B", p=0.5)])
    assert decision.answer == "B"
    assert decision.details["member_weights"] == {"remote": 0.2, "local": 0.5}


def test_weighted_vote_ignores_empty_answers():
    vote = make_strategy("weighted_vote", {"weights": "confidence"})
    decision = vote.combine([ma("a", "", p=1.0), ma("b", "4", p=0.1)])
    assert decision.answer == "4"
    assert decision.details["weights"] == {"4": 0.1}


def test_weighted_vote_needs_fit_only_when_weighting_by_dev_accuracy():
    assert make_strategy("weighted_vote").needs_fit is True
    assert make_strategy("weighted_vote", {"weights": "dev_accuracy"}).needs_fit is True


# --- logprob_pool ------------------------------------------------------------------------------------


def options(**probs: float) -> dict[str, float]:
    # Unnormalized log-likelihoods, as a backend reports them: the pool must softmax them itself.
    return {letter: math.log(p) - 5.0 for letter, p in probs.items()}


VETOED_A = [
    ma("m1", "A", options=options(A=0.8, B=0.2)),
    ma("m2", "A", options=options(A=0.8, B=0.2)),
    ma("m3", "B", options=options(A=0.001, B=0.999)),
]


def test_linear_pool_averages_probabilities_so_two_keen_members_carry_option_a():
    decision = make_strategy("logprob_pool", {"pool": "linear"}).combine(VETOED_A)
    assert decision.answer == "A"
    assert decision.details["probabilities"] == {"A": pytest.approx(0.533667), "B": pytest.approx(0.466333)}
    assert decision.details["pooled"] == ["m1", "m2", "m3"]
    assert decision.member_calls == 3


def test_log_linear_pool_lets_one_member_veto_an_option_it_finds_near_impossible():
    decision = make_strategy("logprob_pool", {"pool": "log_linear"}).combine(VETOED_A)
    assert decision.answer == "B"
    a = 0.8 * 0.8 * 0.001
    b = 0.2 * 0.2 * 0.999
    assert decision.details["probabilities"]["B"] == pytest.approx(b / (a + b), abs=1e-6)


def test_logprob_pool_falls_back_to_majority_vote_when_no_member_scored_the_options():
    decision = make_strategy("logprob_pool").combine([ma("a", "C"), ma("b", "D"), ma("c", "D")])
    assert decision.answer == "D"
    assert decision.details["fallback"] == "vote"
    assert decision.details["votes"] == {"C": 1, "D": 2}


def test_logprob_pool_leaves_members_without_option_scores_out_of_the_pool():
    decision = make_strategy("logprob_pool").combine(
        [ma("scored", "B", options=options(A=0.3, B=0.7)), ma("generated", "A"), ma("generated2", "A")]
    )
    assert decision.answer == "B"
    assert decision.details["unscored"] == ["generated", "generated2"]


def test_logprob_pool_gives_options_at_minus_infinity_no_mass():
    decision = make_strategy("logprob_pool", {"pool": "log_linear"}).combine(
        [
            ma("a", "A", options={"A": -0.1, "B": -math.inf, "C": -2.0}),
            ma("b", "A", options={"A": -1.0, "B": -0.5, "C": -2.0}),
        ]
    )
    assert decision.answer == "A"
    assert set(decision.details["probabilities"]) == {"A", "C"}


def test_logprob_pool_copes_with_log_likelihoods_far_below_zero():
    decision = make_strategy("logprob_pool", {"pool": "log_linear"}).combine(
        [ma("a", "B", options={"A": -2000.0, "B": -1990.0}), ma("b", "B", options={"A": -3000.0, "B": -2999.0})]
    )
    assert decision.answer == "B"
    assert sum(decision.details["probabilities"].values()) == pytest.approx(1.0)


def test_non_learning_strategies_combine_without_fit():
    strategy = make_strategy("logprob_pool")
    assert strategy.needs_fit is False
    assert strategy.combine([ma("a", "1")]).answer == "1"


def test_weighted_vote_refuses_to_combine_before_it_has_seen_dev():
    with pytest.raises(EnsembleError, match=r"weighted_vote learns from the dev split: call fit\(\) before combine"):
        make_strategy("weighted_vote").combine([ma("a", "1")])
