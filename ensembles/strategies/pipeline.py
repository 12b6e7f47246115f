"""Procedural pipeline: one model's output fills the next model's prompt."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ensembles.errors import EnsembleError, ParamsError
from ensembles.strategies.base import STRATEGIES, CallCost, Decision, MemberAnswer, Strategy
from ensembles.strategies.calls import ModelCallingStrategy, Shown, check_template, shown

if TYPE_CHECKING:
    from ensembles.strategies.calls import ModelCaller


class Step(BaseModel):
    """One link of the chain: a model and the prompt it is given."""

    model_config = ConfigDict(extra="forbid")

    member: str = Field(min_length=1, max_length=100)
    # {previous}: the output of the step before; {input}: the item's input.
    template: str

    @field_validator("template")
    @classmethod
    def _fields(cls, value: str) -> str:
        return check_template(value, required={"previous"}, allowed={"input", "previous"})


@STRATEGIES.register(
    "pipeline",
    pretty_name="Procedural pipeline",
    reference_url="https://arxiv.org/abs/2110.01691",
)
class Pipeline(ModelCallingStrategy):
    """A chain of models: the ``start`` member's stored output for the item (the first member by
    default) fills the first step's template, each step's output the next one's, and the last
    step's answer is the blend's.
    """

    class Params(Strategy.Params):
        start: str | None = Field(None, min_length=1, max_length=100)
        steps: list[Step] = Field(min_length=1, max_length=8)
        # What {previous} holds: the extracted answer or the whole generation.
        previous: Shown = "answer"

    params: Params

    def called_members(self) -> dict[str, str]:
        return {f"steps.{i}.member": step.member for i, step in enumerate(self.params.steps)}

    def check_members(self, members: Sequence[str]) -> None:
        start = self.params.start
        if start is not None and start not in members:
            raise ParamsError(
                f"invalid params for '{self.name}': start: {start!r} is not a member of the blend "
                f"({', '.join(members)}); the chain starts from a member's stored output"
            )

    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        caller = self.require_caller(caller)
        question = self.require_input(item_input)
        start = self.params.start
        first = next((a for a in answers if start is None or a.member == start), None)
        if first is None:
            raise EnsembleError(
                f"{self.name} starts from {start!r}, which has no answer for this item"
                if start
                else f"{self.name} starts from the first member's answer and got no answers"
            )
        cost = CallCost()
        previous = shown(first, self.params.previous)
        trail: list[dict[str, Any]] = [{"member": first.member, "answer": first.answer.strip()}]
        answer = first.answer.strip()
        for step in self.params.steps:
            prompt = step.template.format(input=question, previous=previous)
            [result] = self.call(caller, step.member, [prompt])
            # Each step waits for the one before it.
            cost.add_stage([result])
            answer = result.answer.strip()
            previous = shown(result, self.params.previous)
            trail.append({"member": step.member, "answer": answer, "text": result.text})
        return Decision(
            answer=answer,
            details={"chain": trail},
            member_calls=1 + cost.calls,
            # Of the members' stored generations only the start's was read.
            consulted=[first.member],
            calls=cost,
        )
