"""Bagging: fit a learned strategy on bootstrap resamples of dev and vote their decisions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from ensembles.errors import EnsembleError, ParamsError, UnknownNameError
from ensembles.strategies.base import STRATEGIES, CallCost, Decision, MemberAnswer, Strategy
from ensembles.strategies.common import LearnedStrategy
from ensembles.strategies.embed import Embedder
from ensembles.strategies.ranker import PairRanker
from ensembles.strategies.router import Router
from ensembles.strategies.vote import MajorityVote

if TYPE_CHECKING:
    from ensembles.strategies.calls import ModelCaller


@STRATEGIES.register(
    "bagging",
    pretty_name="Bagging",
    reference_url="https://en.wikipedia.org/wiki/Bootstrap_aggregating",
)
class Bagging(LearnedStrategy):
    """Trains ``n_estimators`` copies of a learned strategy, each on a bootstrap resample of the
    dev items, and answers with the majority of their decisions (ties: the first estimator's).
    """

    class Params(Strategy.Params):
        base: str = "stacking"
        # validate_default: the base must be checked against its params even when none are given.
        base_params: dict[str, Any] = Field(default_factory=dict, validate_default=True)
        n_estimators: int = Field(10, ge=1, le=200)
        seed: int = Field(0, ge=0)

        @field_validator("base")
        @classmethod
        def _registered(cls, value: str) -> str:
            if value == "bagging":
                raise ValueError("bagging cannot bag itself")
            try:
                base_cls = STRATEGIES.get(value)
            except UnknownNameError as exc:
                raise ValueError(str(exc)) from None
            if base_cls.calls_models:
                raise ValueError(f"{value} calls models itself; bagging combines the members' stored answers only")
            return value

        @field_validator("base_params")
        @classmethod
        def _valid_for_base(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
            base = info.data.get("base")
            if base is None:  # base was invalid and is reported on its own
                return value
            try:
                strategy = STRATEGIES.get(base)(value)
            except ParamsError as exc:
                raise ValueError(str(exc)) from None
            if not strategy.needs_fit:
                raise ValueError(
                    f"{base} with these params learns nothing from dev, so every estimator would be the same"
                )
            return value

    params: Params

    def __init__(self, params: dict[str, Any] | None = None, *, embedder: Embedder | None = None) -> None:
        super().__init__(params)
        # Passed on to a router or pair_ranker base, which needs an encoder for the inputs.
        self.embedder = embedder
        self.estimators: list[Strategy] = []

    def make_base(self) -> Strategy:
        """A fresh, unfitted instance of the base strategy."""
        cls = STRATEGIES.get(self.params.base)
        if issubclass(cls, (Router, PairRanker)):
            return cls(self.params.base_params, embedder=self.embedder)
        return cls(self.params.base_params)

    def fit(
        self,
        dev_outputs: Sequence[Sequence[MemberAnswer]],
        dev_references: Sequence[str],
        *,
        dev_inputs: Sequence[str] | None = None,
    ) -> None:
        self.check_dev(dev_outputs, dev_references, dev_inputs)
        rng = np.random.default_rng(self.params.seed)
        n = len(dev_outputs)
        estimators: list[Strategy] = []
        for number in range(1, self.params.n_estimators + 1):
            sample = rng.integers(0, n, size=n)
            estimator = self.make_base()
            try:
                estimator.fit(
                    [dev_outputs[i] for i in sample],
                    [dev_references[i] for i in sample],
                    dev_inputs=None if dev_inputs is None else [dev_inputs[i] for i in sample],
                )
            except EnsembleError as exc:
                raise EnsembleError(f"{self.name}: estimator {number} of {self.params.n_estimators}: {exc}") from exc
            estimators.append(estimator)
        self.estimators = estimators
        self.fitted = True

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        self.require_fit()
        decisions = [estimator.combine(answers, item_input=item_input) for estimator in self.estimators]
        ballots = [MemberAnswer(member=str(i), answer=d.answer) for i, d in enumerate(decisions)]
        vote = MajorityVote().combine(ballots)
        details = {
            "base": self.params.base,
            "votes": vote.details["votes"],
            "estimator_answers": [d.answer for d in decisions],
        }
        # Every estimator reads the same member answers, so the cost is the deepest estimator's, not a sum.
        member_calls = max((d.member_calls for d in decisions), default=0)
        calls = CallCost()
        for decision in decisions:
            calls.add(decision.calls)  # each estimator's own work (a ranker's comparisons) does add up
        return Decision(answer=vote.answer, details=details, member_calls=member_calls, calls=calls)
