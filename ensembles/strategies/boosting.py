"""Boosting: AdaBoost's multi-class form (SAMME) over the blend's fixed members."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from ensembles.answers import is_correct, vote_key
from ensembles.strategies.base import STRATEGIES, Decision, MemberAnswer, Strategy
from ensembles.strategies.common import LearnedStrategy, member_order, weighted_plurality

if TYPE_CHECKING:
    from ensembles.strategies.calls import ModelCaller

# A member with no weighted error would get an infinite alpha: its error counts as this instead,
# which caps alpha near 13.8 + log(K - 1), enough to outvote any other round's members.
_MIN_ERROR = 1e-6
# Re-weighting leaves the member just picked at an error of exactly 1 - 1/K; rounding must not
# let it pass as better than chance and be picked again at once with a near-zero alpha.
_TOLERANCE = 1e-9


@dataclass
class Round:
    """One boosting round: the member picked, its weighted dev error, and the weight it earned."""

    member: str
    error: float
    alpha: float

    def as_dict(self) -> dict[str, str | float]:
        return {"member": self.member, "error": round(self.error, 6), "alpha": round(self.alpha, 6)}


@STRATEGIES.register(
    "boosting",
    pretty_name="Boosting (SAMME)",
    reference_url="https://doi.org/10.4310/SII.2009.v2.n3.a8",
)
class Boosting(LearnedStrategy):
    """AdaBoost over fixed members (Zhu, Zou, Rosset and Hastie's SAMME), fitted on dev.

    Dev items start with equal weight. Each round picks the member with the lowest weighted
    error, gives it alpha = log((1 - err) / err) + log(K - 1), K being the number of distinct
    answers seen on dev, and multiplies the weight of the items it got wrong by exp(alpha). It
    stops after ``rounds``, when no member beats chance (err < 1 - 1/K), or when one makes no
    error. A member picked in several rounds adds up its alphas; combine is the alpha-weighted vote.
    """

    class Params(Strategy.Params):
        # The most rounds; a member may be picked in more than one.
        rounds: int = Field(10, ge=1, le=200)

    params: Params

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.rounds_: list[Round] = []
        self.member_weights: dict[str, float] = {}
        self.classes = 2

    def fit(
        self,
        dev_outputs: Sequence[Sequence[MemberAnswer]],
        dev_references: Sequence[str],
        *,
        dev_inputs: Sequence[str] | None = None,
    ) -> None:
        self.check_dev(dev_outputs, dev_references, dev_inputs)
        members = member_order(dev_outputs)
        # wrong[m, i]: member m missed item i; a member that is missing or abstains there missed it.
        wrong = np.ones((len(members), len(dev_outputs)), dtype=float)
        index = {m: i for i, m in enumerate(members)}
        for item, (answers, reference) in enumerate(zip(dev_outputs, dev_references, strict=True)):
            for ans in answers:
                if is_correct(ans.answer, reference):
                    wrong[index[ans.member], item] = 0.0
        observed = {vote_key(r) for r in dev_references} | {vote_key(a.answer) for item in dev_outputs for a in item}
        self.classes = max(len(observed - {""}), 2)
        chance = 1.0 - 1.0 / self.classes

        weights = np.full(len(dev_outputs), 1.0 / len(dev_outputs))
        rounds: list[Round] = []
        while members and len(rounds) < self.params.rounds:
            errors = wrong @ weights / weights.sum()
            best = int(np.argmin(errors))  # the first of equal errors: member order breaks ties
            error = float(errors[best])
            if error >= chance - _TOLERANCE:
                break
            clipped = max(error, _MIN_ERROR)
            alpha = math.log((1.0 - clipped) / clipped) + math.log(self.classes - 1)
            rounds.append(Round(member=members[best], error=error, alpha=alpha))
            if error < _MIN_ERROR:
                break  # nothing left wrong to re-weight
            weights = weights * np.exp(alpha * wrong[best])
            weights /= weights.sum()
        self.rounds_ = rounds
        self.member_weights = dict.fromkeys(members, 0.0)
        for r in rounds:
            self.member_weights[r.member] += r.alpha
        self.fitted = True

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        self.require_fit()
        # With no round fitted every weight is 0, and weighted_plurality's head count decides: a majority vote.
        answer, totals, supporters = weighted_plurality(answers, lambda a: self.member_weights.get(a.member, 0.0))
        details = {
            "rounds": [r.as_dict() for r in self.rounds_],
            "classes": self.classes,
            "member_weights": {m: round(w, 6) for m, w in self.member_weights.items()},
            "weights": totals,
            "supporters": supporters,
        }
        return Decision(answer=answer, details=details, member_calls=len(answers))
