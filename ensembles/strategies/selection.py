"""Budgeted member selection by mutual information with the correct answer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from ensembles.answers import vote_key
from ensembles.strategies.base import STRATEGIES, Decision, MemberAnswer, Strategy
from ensembles.strategies.common import LearnedStrategy, member_order
from ensembles.strategies.vote import MajorityVote

if TYPE_CHECKING:
    from ensembles.strategies.calls import ModelCaller


def mutual_information(labels: Sequence[str], columns: Sequence[Sequence[str]], alpha: float) -> float:
    """Plug-in estimate of I(Y; X) in bits, X being the tuple of ``columns`` per item.

    Every cell of the (observed Y values) x (observed X tuples) table gets ``alpha`` added
    counts, which pulls the estimate of small samples toward independence.
    """
    y_codes: dict[str, int] = {}
    x_codes: dict[tuple[str, ...], int] = {}
    ys = [y_codes.setdefault(y, len(y_codes)) for y in labels]
    xs = [x_codes.setdefault(x, len(x_codes)) for x in zip(*columns, strict=True)] if columns else [0] * len(ys)
    counts = np.full((len(y_codes), max(len(x_codes), 1)), float(alpha))
    np.add.at(counts, (np.asarray(ys), np.asarray(xs)), 1.0)
    joint = counts / counts.sum()
    independent = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float(np.sum(joint[nonzero] * np.log2(joint[nonzero] / independent[nonzero])))


@STRATEGIES.register(
    "mi_selection",
    pretty_name="Mutual-information selection",
    reference_url="https://jmlr.org/papers/v13/brown12a.html",
)
class MISelection(LearnedStrategy):
    """Greedily picks up to k members whose joint dev answers say most about the correct answer,
    then takes the majority vote of the picked members only.

    A member whose dev answers copy an already picked member's is never picked: it adds no
    information, only a second vote for the same answers.
    """

    class Params(Strategy.Params):
        # Budget: the most members consulted per item.
        k: int = Field(3, ge=1, le=64)
        # Add-alpha smoothing of the joint counts behind the mutual-information estimate.
        alpha: float = Field(0.1, ge=0.0, le=10.0)

    params: Params

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.chosen: list[str] = []
        self.gains: list[float] = []

    def fit(
        self,
        dev_outputs: Sequence[Sequence[MemberAnswer]],
        dev_references: Sequence[str],
        *,
        dev_inputs: Sequence[str] | None = None,
    ) -> None:
        self.check_dev(dev_outputs, dev_references, dev_inputs)
        labels = [vote_key(ref) for ref in dev_references]
        # A member missing on an item counts as abstaining there.
        columns = {
            member: tuple(next((vote_key(a.answer) for a in item if a.member == member), "") for item in dev_outputs)
            for member in member_order(dev_outputs)
        }
        chosen: list[str] = []
        gains: list[float] = []
        current = 0.0
        while len(chosen) < self.params.k:
            picked_columns = {columns[m] for m in chosen}
            remaining = [m for m in columns if m not in chosen and columns[m] not in picked_columns]
            if not remaining:
                break
            # Smoothing can make a real gain slightly negative, so the best gain wins whatever its sign;
            # max() keeps the first of equal gains, i.e. member order breaks ties.
            scored = {
                m: mutual_information(labels, [columns[c] for c in [*chosen, m]], self.params.alpha) - current
                for m in remaining
            }
            best = max(scored, key=lambda m: scored[m])
            chosen.append(best)
            gains.append(scored[best])
            current += scored[best]
        self.chosen, self.gains = chosen, gains
        self.fitted = True

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        self.require_fit()
        rank = {m: i for i, m in enumerate(self.chosen)}
        # Voting in pick order lets the most informative member break ties.
        picked = sorted((a for a in answers if a.member in rank), key=lambda a: rank[a.member])
        decision = MajorityVote().combine(picked)
        decision.details.update(
            {
                "chosen": list(self.chosen),
                "gain": [round(g, 6) for g in self.gains],
                "skipped": [a.member for a in answers if a.member not in rank],
            }
        )
        return Decision(
            answer=decision.answer,
            details=decision.details,
            member_calls=len(picked),
            consulted=[a.member for a in picked],
        )
