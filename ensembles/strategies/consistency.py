"""Self-consistency: sample one member k times and vote over its samples."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ensembles.errors import EnsembleError
from ensembles.strategies.base import STRATEGIES, CallCost, Decision, MemberAnswer, Strategy
from ensembles.strategies.calls import ModelCallingStrategy, Sampling
from ensembles.strategies.vote import MajorityVote

if TYPE_CHECKING:
    from ensembles.strategies.calls import ModelCaller


@STRATEGIES.register(
    "self_consistency",
    pretty_name="Self-consistency",
    reference_url="https://arxiv.org/abs/2203.11171",
)
class SelfConsistency(ModelCallingStrategy):
    """Majority vote over k sampled generations of the blend's one member (Wang et al., 2022).

    Each sample asks the member the prompt it answered, at ``temperature`` and ``top_p``, with its
    own seed (``seed``, ``seed + 1``, …), so each is a distinct generation the caller caches and a
    second combine reproduces. The member's greedy answer is not a vote.
    """

    class Params(Strategy.Params):
        k: int = Field(5, ge=2, le=64)
        temperature: float = Field(0.7, gt=0.0, le=2.0)
        top_p: float = Field(0.95, gt=0.0, le=1.0)
        seed: int = Field(0, ge=0, le=2**31 - 1)
        # Share of all samples that must give the winning answer for the vote to count as agreed.
        min_agreement: float = Field(0.0, ge=0.0, le=1.0)
        # Below min_agreement: keep the plurality answer anyway, or abstain with an empty answer.
        below_agreement: Literal["keep_plurality", "abstain"] = "keep_plurality"

    params: Params
    # One member, sampled k times.
    min_members = 1
    max_members = 1

    def samplings(self) -> list[Sampling]:
        """The k ways the member is sampled: one seed each."""
        p = self.params
        return [Sampling(temperature=p.temperature, top_p=p.top_p, seed=p.seed + i) for i in range(p.k)]

    def called_models(self, members: Sequence[str]) -> list[str]:
        return list(members[:1])

    def asks_members_again(self) -> bool:
        return True

    def _prompt(self, answer: MemberAnswer, item_input: str | None) -> str:
        # Where the member's own prompt is unknown (a chat request), the input is that prompt.
        return answer.prompt or self.require_input(item_input)

    def prefetch(
        self,
        items: Sequence[Sequence[MemberAnswer]],
        inputs: Sequence[str | None],
        *,
        caller: ModelCaller,
    ) -> None:
        prompts: dict[str, list[str]] = defaultdict(list)
        for answers, item_input in zip(items, inputs, strict=True):
            if len(answers) == 1:
                prompts[answers[0].member].append(self._prompt(answers[0], item_input))
        for member, asked in prompts.items():
            for sampling in self.samplings():
                self.call(caller, member, asked, sampling)

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        caller = self.require_caller(caller)
        if len(answers) != 1:
            raise EnsembleError(f"{self.name} samples one member; it was given {len(answers)} members' answers")
        [base] = answers
        prompt = self._prompt(base, item_input)
        samplings = self.samplings()
        results = [self.call(caller, base.member, [prompt], sampling)[0] for sampling in samplings]
        cost = CallCost()
        # The samples do not wait for each other.
        cost.add_stage(results)
        ballots = [
            MemberAnswer(member=f"{base.member}#{s.seed}", answer=r.answer, text=r.text, logprob=r.logprob)
            for s, r in zip(samplings, results, strict=True)
        ]
        vote = MajorityVote().combine(ballots)
        # Unparseable samples stay in the denominator: they are samples that did not agree.
        agreement = len(vote.details["supporters"]) / len(ballots)
        agreed = bool(vote.answer) and agreement >= self.params.min_agreement
        answer = vote.answer if agreed or self.params.below_agreement == "keep_plurality" else ""
        details = {
            **vote.details,
            "member": base.member,
            "samples": len(ballots),
            "seeds": [s.seed for s in samplings],
            "sample_answers": [r.answer.strip() for r in results],
            "agreement": round(agreement, 6),
            "agreed": agreed,
        }
        # Only the samples were read: the member's greedy generation costs this blend nothing.
        return Decision(answer=answer, details=details, member_calls=cost.calls, consulted=[], calls=cost)
