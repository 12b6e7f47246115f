"""Voting strategies."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from ensembles.answers import vote_key
from ensembles.strategies.base import STRATEGIES, Decision, MemberAnswer, Strategy

if TYPE_CHECKING:
    from ensembles.strategies.calls import ModelCaller


@STRATEGIES.register(
    "majority_vote",
    pretty_name="Majority vote",
    reference_url="https://en.wikipedia.org/wiki/Ensemble_learning#Voting",
)
class MajorityVote(Strategy):
    """The answer given by the most members wins; empty answers abstain."""

    class Params(Strategy.Params):
        tie_break: Literal["member_order", "shortest"] = "member_order"

    params: Params

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        counts: dict[str, int] = {}
        # key -> the answer as first given; insertion order is first appearance.
        display: dict[str, str] = {}
        abstained: list[str] = []
        for ans in answers:
            key = vote_key(ans.answer)
            if not key:
                abstained.append(ans.member)
                continue
            counts[key] = counts.get(key, 0) + 1
            display.setdefault(key, ans.answer.strip())

        votes = {display[key]: count for key, count in counts.items()}
        if not counts:
            details = {
                "votes": votes,
                "supporters": [],
                "abstained": abstained,
                "tied": [],
            }
            return Decision(answer="", details=details, member_calls=len(answers))

        top = max(counts.values())
        tied = [key for key, count in counts.items() if count == top]
        if self.params.tie_break == "shortest":
            # min() keeps the first of equal lengths, i.e. member order breaks remaining ties.
            winner = min(tied, key=len)
        else:
            winner = tied[0]
        details = {
            "votes": votes,
            "supporters": [ans.member for ans in answers if vote_key(ans.answer) == winner],
            "abstained": abstained,
            "tied": [display[key] for key in tied] if len(tied) > 1 else [],
        }
        return Decision(answer=display[winner], details=details, member_calls=len(answers))
