"""Strategies that write a new answer from the candidates: GenFuser and mixture of agents."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from ensembles.strategies.base import STRATEGIES, CallCost, Decision, MemberAnswer, Strategy
from ensembles.strategies.calls import (
    ModelCallingStrategy,
    Shown,
    answered,
    check_template,
    numbered,
    shown,
)
from ensembles.strategies.common import LearnedStrategy
from ensembles.strategies.embed import Embedder
from ensembles.strategies.ranker import Aggregation, PairRanker

if TYPE_CHECKING:
    from ensembles.strategies.calls import ModelCaller

FUSER_TEMPLATE = "Question: {input}\nCandidate answers:\n{candidates}\nAnswer:"
PROPOSER_TEMPLATE = (
    "Question: {input}\nAnswers from other assistants:\n{previous}\n"
    "Some of them may be wrong. Give your own answer.\nAnswer:"
)
AGGREGATOR_TEMPLATE = (
    "Question: {input}\nAnswers from several assistants:\n{previous}\nSynthesize them into one correct answer.\nAnswer:"
)


@STRATEGIES.register(
    "gen_fuser",
    pretty_name="Generative fusion (GenFuser)",
    reference_url="https://arxiv.org/abs/2306.02561",
)
class GenFuser(ModelCallingStrategy, LearnedStrategy):
    """A fuser model reads the input and the candidates and writes one answer.

    With ``ranker: pair_ranker`` the fuser sees the ``top_k`` candidates of a PairRanker learned
    on dev (as LLM-Blender feeds its GenFuser); with ``none`` it sees every non-empty candidate
    in member order and nothing is learned. The fuser is any model entry of the team, a member
    of the blend or not.
    """

    class Params(Strategy.Params):
        # Member names are entry names, which the arena caps at 100 characters.
        fuser: str = Field(min_length=1, max_length=100)
        ranker: Literal["none", "pair_ranker"] = "none"
        top_k: int = Field(3, ge=1, le=16)
        aggregation: Aggregation = "max_logits"
        # What the fuser's prompt shows of each candidate.
        candidate: Shown = "answer"
        template: str = FUSER_TEMPLATE

        @field_validator("template")
        @classmethod
        def _fields(cls, value: str) -> str:
            return check_template(value, required={"input", "candidates"}, allowed={"input", "candidates"})

    params: Params

    def __init__(self, params: dict[str, Any] | None = None, *, embedder: Embedder | None = None) -> None:
        super().__init__(params)
        self.ranker: PairRanker | None = None
        if self.params.ranker == "pair_ranker":
            self.ranker = PairRanker(
                {"aggregation": self.params.aggregation, "candidate": self.params.candidate}, embedder=embedder
            )
        self.needs_fit = self.ranker is not None

    def called_members(self) -> dict[str, str]:
        return {"fuser": self.params.fuser}

    def fit(
        self,
        dev_outputs: Sequence[Sequence[MemberAnswer]],
        dev_references: Sequence[str],
        *,
        dev_inputs: Sequence[str] | None = None,
        scorer: Callable[[str, str], float] | None = None,
    ) -> None:
        """Train the ranker on dev (see PairRanker.fit); without a ranker there is nothing to learn."""
        if self.ranker is None:
            return
        self.check_dev(dev_outputs, dev_references, dev_inputs)
        self.ranker.fit(dev_outputs, dev_references, dev_inputs=dev_inputs, scorer=scorer)
        self.fitted = True

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        if self.ranker is not None:
            self.require_fit()
        caller = self.require_caller(caller)
        question = self.require_input(item_input)
        cost = CallCost()
        candidates = answered(answers)
        details: dict[str, Any] = {"fuser": self.params.fuser}
        if self.ranker is not None:
            started = time.perf_counter()
            ranked, info = self.ranker.rank(candidates, question, top=self.params.top_k)
            cost.add_local(time.perf_counter() - started, info["comparisons"])
            candidates = ranked[: self.params.top_k]
            details.update(ranking=[a.member for a in ranked], comparisons=info["comparisons"])
        prompt = self.params.template.format(
            input=question, candidates=numbered(shown(a, self.params.candidate) for a in candidates)
        )
        [result] = self.call(caller, self.params.fuser, [prompt])
        cost.add_stage([result])
        details.update(candidates=[a.member for a in candidates], fused_text=result.text)
        return Decision(
            answer=result.answer.strip(),
            details=details,
            # Every member's stored generation was read (by the ranker or the fuser), plus the fuser's call.
            member_calls=len(answers) + cost.calls,
            calls=cost,
        )


@STRATEGIES.register(
    "mixture_of_agents",
    pretty_name="Mixture of agents",
    reference_url="https://arxiv.org/abs/2406.04692",
)
class MixtureOfAgents(ModelCallingStrategy):
    """Layers of proposers, each reading the previous layer's answers, then one aggregator.

    The first layer is the members' stored answers (generated once for the suite); each of the
    next ``layers - 1`` layers asks every proposer again with the previous answers shown
    (anonymized, numbered); the aggregator writes the final answer from the last layer's.
    Proposers are the blend's members unless ``proposers`` names other model entries.
    """

    class Params(Strategy.Params):
        aggregator: str = Field(min_length=1, max_length=100)
        layers: int = Field(2, ge=1, le=4)
        proposers: list[str] | None = Field(None, min_length=1, max_length=16)
        candidate: Shown = "answer"
        template: str = PROPOSER_TEMPLATE
        aggregator_template: str = AGGREGATOR_TEMPLATE

        @field_validator("template", "aggregator_template")
        @classmethod
        def _fields(cls, value: str) -> str:
            return check_template(value, required={"input", "previous"}, allowed={"input", "previous"})

        @field_validator("proposers")
        @classmethod
        def _names(cls, value: list[str] | None) -> list[str] | None:
            if value is None:
                return None
            if any(not name or len(name) > 100 for name in value):
                raise ValueError("proposer names are entry names of 1 to 100 characters")
            if len(set(value)) != len(value):
                raise ValueError("a proposer appears twice")
            return value

    params: Params

    def called_members(self) -> dict[str, str]:
        called = {"aggregator": self.params.aggregator}
        if self.params.layers > 1:
            called.update({f"proposers.{i}": name for i, name in enumerate(self.params.proposers or [])})
        return called

    def asks_members_again(self) -> bool:
        # Without named proposers, the members themselves propose again in layers 2 and up.
        return self.params.layers > 1 and self.params.proposers is None

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        caller = self.require_caller(caller)
        question = self.require_input(item_input)
        part = self.params.candidate
        proposers = self.params.proposers or [a.member for a in answers]
        cost = CallCost()
        previous = [shown(a, part) for a in answered(answers)]
        layers: list[dict[str, str]] = [{a.member: a.answer.strip() for a in answers}]
        for _ in range(self.params.layers - 1):
            prompt = self.params.template.format(input=question, previous=numbered(previous))
            results = [self.call(caller, member, [prompt])[0] for member in proposers]
            # The proposers of one layer do not wait for each other.
            cost.add_stage(results)
            layers.append({m: r.answer.strip() for m, r in zip(proposers, results, strict=True)})
            previous = [shown(r, part) for r in results if r.answer.strip()]
        prompt = self.params.aggregator_template.format(input=question, previous=numbered(previous))
        [final] = self.call(caller, self.params.aggregator, [prompt])
        cost.add_stage([final])
        details = {"aggregator": self.params.aggregator, "layers": layers, "aggregated_text": final.text}
        return Decision(
            answer=final.answer.strip(), details=details, member_calls=len(answers) + cost.calls, calls=cost
        )
