import json

import pytest
from pydantic import Field

from ensembles.errors import ParamsError, UnknownNameError
from ensembles.strategies import (
    STRATEGIES,
    Decision,
    MemberAnswer,
    Strategy,
    make_strategy,
)


def answers(*pairs: tuple[str, str]) -> list[MemberAnswer]:
    return [MemberAnswer(member=member, answer=answer) for member, answer in pairs]


def test_majority_vote_picks_the_most_common_answer():
    vote = make_strategy("majority_vote")
    decision = vote.combine(answers(("a", "12"), ("b", "7"), ("c", "7")))
    assert decision.answer == "7"
    assert decision.details["votes"] == {"12": 1, "7": 2}
    assert decision.details["supporters"] == ["b", "c"]
    assert decision.member_calls == 3


def test_majority_vote_counts_answers_case_and_whitespace_insensitively():
    decision = make_strategy("majority_vote").combine(answers(("a", "Paris"), ("b", " paris "), ("c", "Rome")))
    assert decision.answer == "Paris"
    assert decision.details["supporters"] == ["a", "b"]


def test_majority_vote_keeps_negative_and_positive_numbers_apart():
    decision = make_strategy("majority_vote").combine(answers(("a", "-5"), ("b", "5"), ("c", "5")))
    assert decision.answer == "5"


def test_majority_vote_breaks_ties_by_member_order():
    decision = make_strategy("majority_vote").combine(answers(("a", "B"), ("b", "A"), ("c", "A"), ("d", "B")))
    assert decision.answer == "B"
    assert decision.details["tied"] == ["B", "A"]


def test_majority_vote_can_break_ties_by_the_shortest_answer():
    vote = make_strategy("majority_vote", {"tie_break": "shortest"})
    decision = vote.combine(answers(("a", "Paris, France"), ("b", "Paris")))
    assert decision.answer == "Paris"
    assert decision.details["supporters"] == ["b"]


def test_majority_vote_ignores_abstentions():
    decision = make_strategy("majority_vote").combine(answers(("a", ""), ("b", ""), ("c", "4")))
    assert decision.answer == "4"
    assert decision.details["abstained"] == ["a", "b"]


def test_majority_vote_returns_empty_answer_when_everyone_abstains():
    decision = make_strategy("majority_vote").combine(answers(("a", ""), ("b", "  ")))
    assert decision == Decision(
        answer="",
        details={"votes": {}, "supporters": [], "abstained": ["a", "b"], "tied": []},
        member_calls=2,
    )


def test_decision_details_are_json_serializable():
    decision = make_strategy("majority_vote").combine(answers(("a", "1"), ("b", "2")))
    assert json.loads(json.dumps(decision.details)) == decision.details


def test_majority_vote_describes_itself():
    cls = STRATEGIES.get("majority_vote")
    assert cls.pretty_name == "Majority vote"
    assert cls.reference_url == "https://en.wikipedia.org/wiki/Ensemble_learning#Voting"
    assert cls.needs_fit is False


def test_unknown_strategy_suggests_closest_name():
    with pytest.raises(UnknownNameError, match="did you mean 'majority_vote'"):
        make_strategy("majority_vot")


def test_bad_param_value_gives_params_error_naming_the_field():
    with pytest.raises(ParamsError, match="tie_break: must be one of 'member_order' or 'shortest'"):
        make_strategy("majority_vote", {"tie_break": "longest"})


def test_unknown_param_gives_params_error_naming_the_field():
    with pytest.raises(ParamsError, match="tiebreak: unknown parameter"):
        make_strategy("majority_vote", {"tiebreak": "shortest"})


def test_out_of_range_param_gives_params_error_naming_the_allowed_range():
    class TopK(Strategy):
        name = "top_k"

        class Params(Strategy.Params):
            k: int = Field(1, ge=1, le=5)

        def combine(self, answers: list[MemberAnswer]) -> Decision:
            return Decision(answer=answers[0].answer)

    assert TopK({"k": 3}).params.k == 3
    with pytest.raises(ParamsError, match=r"invalid params for 'top_k': k: must be >= 1 \(got 0\)"):
        TopK({"k": 0})
