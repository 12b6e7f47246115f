"""Probability pooling over the members' option log-likelihoods for multiple-choice items."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from ensembles.strategies.base import STRATEGIES, Decision, MemberAnswer, Strategy
from ensembles.strategies.vote import MajorityVote

if TYPE_CHECKING:
    from ensembles.strategies.calls import ModelCaller


def option_log_distribution(option_logprobs: dict[str, float]) -> dict[str, float]:
    """Log-softmax of one member's option log-likelihoods; options at -inf (or NaN) get no mass.

    Returns {} when no option has a finite score.
    """
    finite = {opt: lp for opt, lp in option_logprobs.items() if math.isfinite(lp)}
    if not finite:
        return {}
    top = max(finite.values())
    # Shifting by the maximum keeps exp() from underflowing on long options' large negative sums.
    log_total = top + math.log(sum(math.exp(lp - top) for lp in finite.values()))
    return {opt: lp - log_total for opt, lp in finite.items()}


@STRATEGIES.register(
    "logprob_pool",
    pretty_name="Probability pool",
    reference_url="https://doi.org/10.1214/ss/1177013825",
)
class LogprobPool(Strategy):
    """Pools each member's distribution over the options and picks the most probable option.

    linear: the average of the members' probabilities (an opinion pool that hedges).
    log_linear: the normalized product, i.e. the sum of log-probabilities (a geometric pool
    in which one member's near-zero vetoes an option).
    Members without option scores sit out; with none scored it falls back to majority vote.
    """

    class Params(Strategy.Params):
        pool: Literal["linear", "log_linear"] = "linear"

    params: Params

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        scored = [(ans.member, option_log_distribution(ans.option_logprobs or {})) for ans in answers]
        scored = [(member, dist) for member, dist in scored if dist]
        pooled = self._pool([dist for _, dist in scored])
        if not pooled:
            decision = MajorityVote().combine(answers)
            decision.details["fallback"] = "vote"
            return decision
        # max() keeps the first of equal probabilities, i.e. the first-listed option.
        winner = max(pooled, key=lambda opt: pooled[opt])
        pooled_members = [member for member, _ in scored]
        details = {
            "pool": self.params.pool,
            "probabilities": {opt: round(p, 6) for opt, p in pooled.items()},
            "pooled": pooled_members,
            "unscored": [ans.member for ans in answers if ans.member not in pooled_members],
        }
        return Decision(answer=winner, details=details, member_calls=len(answers))

    def _pool(self, dists: list[dict[str, float]]) -> dict[str, float]:
        """Pooled probability per option from the members' log-distributions; {} when nothing to pool."""
        if not dists:
            return {}
        if self.params.pool == "linear":
            options = dict.fromkeys(opt for dist in dists for opt in dist)
            return {opt: sum(math.exp(dist[opt]) for dist in dists if opt in dist) / len(dists) for opt in options}
        # An option a member gives zero probability has zero product, so only shared options remain.
        shared = [opt for opt in dists[0] if all(opt in dist for dist in dists)]
        if not shared:
            return {}
        log_sums = {opt: sum(dist[opt] for dist in dists) for opt in shared}
        top = max(log_sums.values())
        unnorm = {opt: math.exp(value - top) for opt, value in log_sums.items()}
        total = sum(unnorm.values())
        return {opt: value / total for opt, value in unnorm.items()}
