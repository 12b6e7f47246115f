"""Boosting (SAMME) over fixed members, fitted on dev, on member outputs whose right answer is known."""

import json
import math

import pytest

from ensembles.errors import EnsembleError, ParamsError
from ensembles.strategies import STRATEGIES, MemberAnswer, make_strategy


def items_where_each_member_misses_a_different_third(n: int, start: int = 0):
    """Members a, b and c are each wrong on a different third of the items, where they give the same
    wrong answer as w, which is always wrong and listed first.

    Every item is a 2-2 tie between the right answer and w's, so a majority vote's member-order
    tie-break takes w's: it gets nothing right. Any two of a, b and c together are always right.
    """
    outputs, references = [], []
    for i in range(start, start + n):
        right, wrong = str(i), f"-{i}"
        outputs.append(
            [MemberAnswer("w", wrong)]
            + [MemberAnswer(m, wrong if i % 3 == k else right) for k, m in enumerate(("a", "b", "c"))]
        )
        references.append(right)
    return outputs, references


def accuracy(strategy, outputs, references) -> float:
    return sum(strategy.combine(list(o)).answer == r for o, r in zip(outputs, references, strict=True)) / len(outputs)


def test_boosting_never_weighs_the_always_wrong_member_and_beats_majority_vote_on_test_items():
    boosting = make_strategy("boosting")
    boosting.fit(*items_where_each_member_misses_a_different_third(30))
    assert boosting.member_weights["w"] == 0.0
    assert "w" not in [r.member for r in boosting.rounds_]
    assert all(boosting.member_weights[m] > 0 for m in ("a", "b", "c"))

    test_items = items_where_each_member_misses_a_different_third(30, start=1000)
    majority = accuracy(make_strategy("majority_vote"), *test_items)
    boosted = accuracy(boosting, *test_items)
    assert majority == 0.0
    assert boosted == 1.0


def test_the_first_round_follows_samme_with_k_the_number_of_distinct_answers_on_dev():
    outputs, references = items_where_each_member_misses_a_different_third(30)
    boosting = make_strategy("boosting", {"rounds": 1})
    boosting.fit(outputs, references)
    # 30 right answers and 30 wrong ones were seen.
    assert boosting.classes == 60
    (first,) = boosting.rounds_
    # a, b and c tie at a third wrong; member order picks a.
    assert first.member == "a"
    assert first.error == pytest.approx(1 / 3)
    assert first.alpha == pytest.approx(math.log((2 / 3) / (1 / 3)) + math.log(60 - 1))


def test_a_member_picked_in_several_rounds_adds_up_its_alphas():
    boosting = make_strategy("boosting", {"rounds": 12})
    boosting.fit(*items_where_each_member_misses_a_different_third(30))
    picked = [r.member for r in boosting.rounds_]
    assert len(picked) == 12
    assert picked.count("a") > 1
    for member in ("a", "b", "c"):
        assert boosting.member_weights[member] == pytest.approx(
            sum(r.alpha for r in boosting.rounds_ if r.member == member)
        )


def test_re_weighting_moves_the_next_round_to_the_items_the_last_pick_got_wrong():
    boosting = make_strategy("boosting", {"rounds": 2})
    boosting.fit(*items_where_each_member_misses_a_different_third(30))
    first, second = boosting.rounds_
    # After a's round, a's wrong third carries most of the weight; b is right there, so its error falls.
    assert second.member != first.member
    assert second.error < first.error


def test_a_member_that_is_never_wrong_gets_a_capped_alpha_and_ends_the_fit():
    outputs = [[MemberAnswer("flaky", "x"), MemberAnswer("oracle", str(i))] for i in range(6)]
    references = [str(i) for i in range(6)]
    boosting = make_strategy("boosting", {"rounds": 10})
    boosting.fit(outputs, references)
    (only,) = boosting.rounds_
    assert only.member == "oracle"
    assert only.error == 0.0
    assert math.isfinite(only.alpha) and only.alpha > 10
    assert boosting.combine([MemberAnswer("flaky", "x"), MemberAnswer("oracle", "3")]).answer == "3"


def test_no_round_is_fitted_when_no_member_beats_chance_and_the_vote_falls_back_to_head_count():
    # Two answers in all (K = 2), and each member is right on exactly half the items.
    outputs = [[MemberAnswer("p", "yes"), MemberAnswer("q", "no"), MemberAnswer("r", "no")] for _ in range(2)]
    outputs += [[MemberAnswer("p", "no"), MemberAnswer("q", "yes"), MemberAnswer("r", "yes")] for _ in range(2)]
    references = ["yes", "yes", "yes", "yes"]
    boosting = make_strategy("boosting")
    boosting.fit(outputs, references)
    assert boosting.classes == 2
    assert boosting.rounds_ == []
    decision = boosting.combine([MemberAnswer("p", "yes"), MemberAnswer("q", "no"), MemberAnswer("r", "no")])
    assert decision.answer == "no"
    assert decision.details["rounds"] == []


def test_a_member_missing_on_a_dev_item_counts_as_wrong_there():
    outputs = [[MemberAnswer("a", "1"), MemberAnswer("b", "1")], [MemberAnswer("a", "2")], [MemberAnswer("a", "")]]
    boosting = make_strategy("boosting", {"rounds": 1})
    boosting.fit(outputs, ["1", "2", "3"])
    (first,) = boosting.rounds_
    assert first.member == "a"
    assert first.error == pytest.approx(1 / 3)


def test_the_decision_records_every_round_for_the_page():
    boosting = make_strategy("boosting", {"rounds": 3})
    boosting.fit(*items_where_each_member_misses_a_different_third(30))
    decision = boosting.combine([MemberAnswer("w", "9"), MemberAnswer("a", "8"), MemberAnswer("b", "8")])
    assert decision.answer == "8"
    assert decision.details["rounds"] == [
        {"member": r.member, "error": round(r.error, 6), "alpha": round(r.alpha, 6)} for r in boosting.rounds_
    ]
    assert decision.details["supporters"] == ["a", "b"]
    assert json.loads(json.dumps(decision.details, allow_nan=False)) == decision.details


def test_boosting_is_registered_with_a_reference_to_samme():
    cls = STRATEGIES.get("boosting")
    assert cls.pretty_name == "Boosting (SAMME)"
    assert cls.reference_url == "https://doi.org/10.4310/SII.2009.v2.n3.a8"
    assert make_strategy("boosting").needs_fit is True


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"rounds": 0}, r"rounds: must be >= 1 \(got 0\)"),
        ({"rounds": 201}, r"rounds: must be <= 200 \(got 201\)"),
        ({"round": 3}, "round: unknown parameter"),
    ],
)
def test_bad_boosting_params_name_the_field_and_its_range(params, message):
    with pytest.raises(ParamsError, match=f"invalid params for 'boosting': {message}"):
        make_strategy("boosting", params)


def test_boosting_without_a_dev_split_says_so():
    with pytest.raises(EnsembleError, match="boosting needs a dev split to learn from, and got no dev items"):
        make_strategy("boosting").fit([], [])
    with pytest.raises(EnsembleError, match=r"boosting learns from the dev split: call fit\(\) before combine"):
        make_strategy("boosting").combine([MemberAnswer("a", "1")])
