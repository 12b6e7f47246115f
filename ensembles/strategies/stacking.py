"""Stacking: a logistic-regression meta-model ranks each item's candidate answers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from ensembles.answers import is_correct, vote_key
from ensembles.strategies.base import STRATEGIES, Decision, MemberAnswer, Strategy
from ensembles.strategies.calibration import Calibrator
from ensembles.strategies.common import LearnedStrategy, confidence, member_order

if TYPE_CHECKING:
    from ensembles.strategies.calls import ModelCaller


def candidates(answers: Sequence[MemberAnswer]) -> dict[str, str]:
    """Distinct non-empty answers of one item: vote key -> the answer as first given."""
    found: dict[str, str] = {}
    for ans in answers:
        key = vote_key(ans.answer)
        if key:
            found.setdefault(key, ans.answer.strip())
    return found


@STRATEGIES.register(
    "stacking",
    pretty_name="Stacking",
    reference_url="https://doi.org/10.1016/S0893-6080(05)80023-1",
)
class Stacking(LearnedStrategy):
    """Learns on dev which members to believe, as a ranking of candidate answers.

    Each distinct answer of an item is a candidate with features: for every dev member,
    whether it proposed the candidate and with what confidence (exp mean logprob, 0 when
    unknown; temperature-scaled per member with ``calibrate``), plus the share of members
    proposing it. A logistic regression learns P(candidate is correct) on dev; combine picks the
    candidate it rates highest.
    """

    class Params(Strategy.Params):
        # Inverse L2 regularization strength of the logistic regression.
        C: float = Field(1.0, gt=0.0, le=1e4)
        # Temperature-scale each member's confidences, fitted on dev, before they become features.
        calibrate: bool = False

    params: Params

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.members: list[str] = []
        self.model: Any = None
        self.calibrator: Calibrator | None = None

    def features(self, answers: Sequence[MemberAnswer], key: str) -> list[float]:
        """Feature vector of candidate ``key`` among one item's answers."""
        proposed = [0.0] * len(self.members)
        conf = [0.0] * len(self.members)
        index = {m: i for i, m in enumerate(self.members)}
        for ans in answers:
            if ans.member in index and vote_key(ans.answer) == key:
                proposed[index[ans.member]] = 1.0
                conf[index[ans.member]] = (
                    confidence(ans, 0.0) if self.calibrator is None else self.calibrator.confidence(ans, 0.0)
                )
        share = sum(vote_key(ans.answer) == key for ans in answers) / max(len(answers), 1)
        return [*proposed, *conf, share]

    def fit(
        self,
        dev_outputs: Sequence[Sequence[MemberAnswer]],
        dev_references: Sequence[str],
        *,
        dev_inputs: Sequence[str] | None = None,
    ) -> None:
        self.check_dev(dev_outputs, dev_references, dev_inputs)
        self.members = member_order(dev_outputs)
        if self.params.calibrate:
            self.calibrator = Calibrator().fit(dev_outputs, dev_references)
        rows: list[list[float]] = []
        labels: list[int] = []
        for answers, reference in zip(dev_outputs, dev_references, strict=True):
            for key in candidates(answers):
                rows.append(self.features(answers, key))
                labels.append(int(is_correct(key, reference)))
        if len(set(labels)) < 2:
            # All candidates right (or all wrong) on dev: nothing separates them, so rank by vote share.
            self.model = None
        else:
            # Imported here so that listing strategies does not pay for loading scikit-learn.
            from sklearn.linear_model import LogisticRegression

            # lbfgs is deterministic; random_state pins any solver that is not.
            self.model = LogisticRegression(C=self.params.C, max_iter=1000, random_state=0)
            self.model.fit(np.asarray(rows), np.asarray(labels))
        self.fitted = True

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        self.require_fit()
        found = candidates(answers)
        unknown = [ans.member for ans in answers if ans.member not in self.members]
        calibration = {} if self.calibrator is None else {"calibration": self.calibrator.summary()}
        if not found:
            details = {
                "probabilities": {},
                "supporters": [],
                "unknown_members": unknown,
                "model": "none",
                **calibration,
            }
            return Decision(answer="", details=details, member_calls=len(answers))
        rows = np.asarray([self.features(answers, key) for key in found])
        if self.model is None:
            scores = rows[:, -1]
        else:
            scores = self.model.predict_proba(rows)[:, 1]
        # argmax takes the first of equal scores, i.e. the answer given first.
        best = int(np.argmax(scores))
        winner = list(found)[best]
        details = {
            "probabilities": {found[key]: round(float(s), 6) for key, s in zip(found, scores, strict=True)},
            "supporters": [ans.member for ans in answers if vote_key(ans.answer) == winner],
            # Members the meta-model never saw on dev only count through the vote-share feature.
            "unknown_members": unknown,
            "model": "vote_share" if self.model is None else "logistic_regression",
            **calibration,
        }
        return Decision(answer=found[winner], details=details, member_calls=len(answers))
