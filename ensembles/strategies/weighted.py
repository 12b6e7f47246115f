"""Weighted vote: members count by their dev accuracy, or answers by their own confidence."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from ensembles.answers import is_correct
from ensembles.strategies.base import STRATEGIES, Decision, MemberAnswer, Strategy
from ensembles.strategies.calibration import Calibrator
from ensembles.strategies.common import LearnedStrategy, confidence, weighted_plurality

if TYPE_CHECKING:
    from ensembles.strategies.calls import ModelCaller

# Keeps log-odds finite for a confidence of exactly 0 or 1.
_EPS = 1e-6


@STRATEGIES.register(
    "weighted_vote",
    pretty_name="Weighted vote",
    reference_url="https://doi.org/10.2307/2526438",
)
class WeightedVote(LearnedStrategy):
    """The answer with the largest total weight wins.

    dev_accuracy: a member's weight is its Laplace-smoothed dev accuracy (correct + 1) / (n + 2).
    confidence: each answer weighs exp(its mean token logprob); nothing is learned, unless
    ``calibrate`` scales each member's confidences by a temperature fitted on dev first.
    """

    class Params(Strategy.Params):
        weights: Literal["dev_accuracy", "confidence"] = "dev_accuracy"
        # Weigh log(p / (1 - p)) instead of p: Nitzan and Paroush's optimum for independent voters
        # on a two-way choice. Members at or below p = 1/2 then get weight 0.
        log_odds: bool = False
        # Confidence mode: the weight of an answer whose member reports no logprob.
        default_confidence: float = Field(0.5, ge=0.0, le=1.0)
        # Confidence mode: temperature-scale each member's confidences, fitted on dev.
        calibrate: bool = False

        @field_validator("calibrate")
        @classmethod
        def _only_with_confidences(cls, value: bool, info: ValidationInfo) -> bool:
            if value and info.data.get("weights") == "dev_accuracy":
                raise ValueError("only the confidence weighting uses confidences; set weights to 'confidence'")
            return value

    params: Params

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        # Confidence weights arrive with each answer, so only dev accuracy or calibration has anything to learn.
        self.needs_fit = self.params.weights == "dev_accuracy" or self.params.calibrate
        self.member_weights: dict[str, float] = {}
        self.calibrator: Calibrator | None = None

    def _weight(self, p: float) -> float:
        if not self.params.log_odds:
            return p
        p = min(max(p, _EPS), 1.0 - _EPS)
        return max(0.0, math.log(p / (1.0 - p)))

    def _accuracy_weight(self, correct: int, seen: int) -> float:
        # Smoothing keeps a member seen on few items (or none) away from weight 0 or 1.
        return self._weight((correct + 1) / (seen + 2))

    def fit(
        self,
        dev_outputs: Sequence[Sequence[MemberAnswer]],
        dev_references: Sequence[str],
        *,
        dev_inputs: Sequence[str] | None = None,
    ) -> None:
        self.check_dev(dev_outputs, dev_references, dev_inputs)
        seen: dict[str, int] = {}
        correct: dict[str, int] = {}
        for answers, reference in zip(dev_outputs, dev_references, strict=True):
            for ans in answers:
                seen[ans.member] = seen.get(ans.member, 0) + 1
                correct[ans.member] = correct.get(ans.member, 0) + is_correct(ans.answer, reference)
        self.member_weights = {m: self._accuracy_weight(correct[m], seen[m]) for m in seen}
        if self.params.calibrate:
            self.calibrator = Calibrator().fit(dev_outputs, dev_references)
        self.fitted = True

    def answer_weight(self, ans: MemberAnswer) -> float:
        """The weight one answer carries under the configured scheme."""
        if self.params.weights == "confidence":
            if self.calibrator is not None:
                return self._weight(self.calibrator.confidence(ans, self.params.default_confidence))
            return self._weight(confidence(ans, self.params.default_confidence))
        # A member absent from dev gets the prior weight of an unseen member.
        return self.member_weights.get(ans.member, self._accuracy_weight(0, 0))

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        if self.needs_fit:
            self.require_fit()
        answer, totals, supporters = weighted_plurality(answers, self.answer_weight)
        details: dict[str, Any] = {
            "weighting": self.params.weights,
            "weights": totals,
            "member_weights": {ans.member: round(self.answer_weight(ans), 6) for ans in answers},
            "supporters": supporters,
        }
        if self.calibrator is not None:
            details["calibration"] = self.calibrator.summary()
        return Decision(answer=answer, details=details, member_calls=len(answers))
