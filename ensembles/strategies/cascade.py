"""Cascade: ask members from cheapest to dearest and stop at the first confident answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from ensembles.answers import is_correct, vote_key
from ensembles.errors import EnsembleError
from ensembles.strategies.base import STRATEGIES, Decision, MemberAnswer, Strategy
from ensembles.strategies.calibration import Calibrator
from ensembles.strategies.common import LearnedStrategy, confidence

if TYPE_CHECKING:
    from ensembles.strategies.calls import ModelCaller

# Thresholds tried on dev; a fixed grid bounds the search however many dev items there are.
_GRID = np.linspace(0.0, 1.0, 1001)


def answer_confidence(ans: MemberAnswer, calibrator: Calibrator | None = None) -> float:
    """Confidence a cascade acts on: exp(mean logprob), or its calibrated value when a calibrator is
    given; unknown or empty answers are never confident."""
    if not vote_key(ans.answer):
        return -1.0
    if calibrator is not None:
        return calibrator.confidence(ans, 0.0)
    return confidence(ans, 0.0)


@STRATEGIES.register(
    "cascade",
    pretty_name="Cascade",
    reference_url="https://arxiv.org/abs/2305.05176",
)
class Cascade(LearnedStrategy):
    """Members, in blend order, are taken as ordered by cost. The first whose confidence reaches
    the threshold answers; if none does, the last member consulted answers.

    The threshold is fixed by ``threshold`` or learned on dev as the one with the best dev
    accuracy among those that consult at most ``max_cost`` members per item on average.
    With ``calibrate``, the one threshold applies to each member's temperature-scaled confidence,
    so members whose raw confidences sit on different scales are held to the same standard.
    """

    class Params(Strategy.Params):
        # Budget for the learned threshold: average members consulted per item.
        max_cost: float = Field(1.5, ge=1.0, le=64.0)
        # A fixed threshold on exp(mean logprob); when set, nothing is learned.
        threshold: float | None = Field(None, ge=0.0, le=1.0)
        # Temperature-scale each member's confidences, fitted on dev, before any threshold is applied.
        calibrate: bool = False

    params: Params

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.needs_fit = self.params.threshold is None or self.params.calibrate
        self.calibrator: Calibrator | None = None
        self.threshold: float | None = self.params.threshold
        self.dev_accuracy: float | None = None
        self.dev_cost: float | None = None

    def fit(
        self,
        dev_outputs: Sequence[Sequence[MemberAnswer]],
        dev_references: Sequence[str],
        *,
        dev_inputs: Sequence[str] | None = None,
    ) -> None:
        self.check_dev(dev_outputs, dev_references, dev_inputs)
        if self.params.calibrate:
            self.calibrator = Calibrator().fit(dev_outputs, dev_references)
        if self.params.threshold is None:
            self._learn_threshold(dev_outputs, dev_references)
        self.fitted = True

    def _learn_threshold(self, dev_outputs: Sequence[Sequence[MemberAnswer]], dev_references: Sequence[str]) -> None:
        items = [(answers, ref) for answers, ref in zip(dev_outputs, dev_references, strict=True) if answers]
        if not items:
            raise EnsembleError(f"{self.name} got dev items without any member answers")
        width = max(len(answers) for answers, _ in items)
        # -1 pads items that lack a member, and never passes a threshold.
        conf = np.full((len(items), width), -1.0)
        right = np.zeros((len(items), width), dtype=bool)
        last = np.zeros(len(items), dtype=int)
        for i, (answers, ref) in enumerate(items):
            conf[i, : len(answers)] = [answer_confidence(a, self.calibrator) for a in answers]
            right[i, : len(answers)] = [is_correct(a.answer, ref) for a in answers]
            last[i] = len(answers) - 1

        passes = conf[None, :, :] >= _GRID[:, None, None]  # (threshold, item, member)
        stop = np.where(passes.any(axis=2), passes.argmax(axis=2), last[None, :])
        accuracy = right[np.arange(len(items))[None, :], stop].mean(axis=1)
        cost = (stop + 1).mean(axis=1)

        feasible = np.flatnonzero(cost <= self.params.max_cost + 1e-9)
        if feasible.size:
            # Best accuracy, then fewest calls, then the lowest threshold.
            best = int(min(feasible, key=lambda t: (-accuracy[t], cost[t], t)))
        else:
            # Even stopping at the first answer exceeds the budget (members missing): take the cheapest.
            best = min(range(len(_GRID)), key=lambda t: (cost[t], -accuracy[t], t))
        self.threshold = float(_GRID[best])
        self.dev_accuracy = float(accuracy[best])
        self.dev_cost = float(cost[best])

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        if self.needs_fit:
            self.require_fit()
        # Set by the params or by fit; require_fit() has ruled out neither.
        threshold = float(self.threshold or 0.0)
        consulted: list[MemberAnswer] = []
        for ans in answers:
            consulted.append(ans)
            if answer_confidence(ans, self.calibrator) >= threshold:
                break
        final = consulted[-1] if consulted else None
        details: dict[str, Any] = {
            "threshold": round(threshold, 6),
            "consulted": [a.member for a in consulted],
            # None: an empty answer, which no threshold accepts.
            "confidences": {
                a.member: round(c, 6) if (c := answer_confidence(a, self.calibrator)) >= 0 else None for a in consulted
            },
            "answered_by": final.member if final else None,
        }
        if self.dev_accuracy is not None:
            details["dev"] = {"accuracy": round(self.dev_accuracy, 6), "cost": round(self.dev_cost or 0.0, 6)}
        if self.calibrator is not None:
            details["calibration"] = self.calibrator.summary()
        return Decision(
            answer=final.answer.strip() if final else "",
            details=details,
            member_calls=len(consulted),
            consulted=[a.member for a in consulted],
        )
