"""Helpers shared by the strategies that learn from the dev split."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ensembles.answers import vote_key
from ensembles.errors import EnsembleError
from ensembles.strategies.base import MemberAnswer, Strategy


def confidence(answer: MemberAnswer, default: float) -> float:
    """exp(mean token logprob): the geometric-mean token probability, or ``default`` when unknown."""
    if answer.logprob is None or not math.isfinite(answer.logprob):
        return default
    return math.exp(min(answer.logprob, 0.0))


def member_order(outputs: Sequence[Sequence[MemberAnswer]]) -> list[str]:
    """Member names in order of first appearance across items (the blend's member order)."""
    seen: dict[str, None] = {}
    for item in outputs:
        for ans in item:
            seen.setdefault(ans.member, None)
    return list(seen)


def weighted_plurality(
    answers: Sequence[MemberAnswer], weight: Callable[[MemberAnswer], float]
) -> tuple[str, dict[str, float], list[str]]:
    """The answer with the largest total weight; returns (answer, totals per answer, its supporters).

    Empty answers abstain. Ties go to the larger head count, then to the answer given first.
    """
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    display: dict[str, str] = {}
    for ans in answers:
        key = vote_key(ans.answer)
        if not key:
            continue
        totals[key] = totals.get(key, 0.0) + weight(ans)
        counts[key] = counts.get(key, 0) + 1
        display.setdefault(key, ans.answer.strip())
    if not totals:
        return "", {}, []
    # max() keeps the first of equal keys, and dicts keep first-appearance order.
    winner = max(totals, key=lambda k: (totals[k], counts[k]))
    supporters = [ans.member for ans in answers if vote_key(ans.answer) == winner]
    return display[winner], {display[k]: round(v, 6) for k, v in totals.items()}, supporters


class LearnedStrategy(Strategy):
    """A strategy that must see the dev split before it can combine."""

    needs_fit = True
    fitted: bool = False

    def check_dev(
        self,
        dev_outputs: Sequence[Sequence[MemberAnswer]],
        dev_references: Sequence[str],
        dev_inputs: Sequence[str] | None = None,
    ) -> None:
        """Refuse an empty or ragged dev split with a message the team can act on."""
        if not dev_outputs:
            raise EnsembleError(f"{self.name} needs a dev split to learn from, and got no dev items")
        if len(dev_outputs) != len(dev_references):
            raise EnsembleError(f"{self.name} got {len(dev_outputs)} dev items but {len(dev_references)} references")
        if dev_inputs is not None and len(dev_inputs) != len(dev_outputs):
            raise EnsembleError(f"{self.name} got {len(dev_outputs)} dev items but {len(dev_inputs)} inputs")

    def require_fit(self) -> None:
        """Refuse to combine before fit, rather than answer from an untrained model."""
        if not self.fitted:
            raise EnsembleError(f"{self.name} learns from the dev split: call fit() before combine()")
