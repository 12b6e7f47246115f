"""Strategy interface and registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ensembles.errors import ParamsError
from ensembles.registry import Registry


@dataclass
class MemberAnswer:
    """One ensemble member's output for one item."""

    member: str
    answer: str  # already extracted, e.g. "12" or "B"
    text: str = ""  # raw generation
    # Mean token log-probability, when the backend reports it.
    logprob: float | None = None
    # Multiple choice: option letter -> the member's log-likelihood of that option, when scored.
    option_logprobs: dict[str, float] | None = None


@dataclass
class Decision:
    """The ensemble's answer for one item and a JSON-serializable account of how it was reached."""

    answer: str
    details: dict[str, Any] = field(default_factory=dict)
    member_calls: int = 0  # member generations the decision consumed
    # Members whose outputs the decision used (for cost); None means all of them.
    consulted: list[str] | None = None


class Strategy(ABC):
    """Combines the answers of several members into one Decision."""

    name: ClassVar[str] = ""
    pretty_name: ClassVar[str] = ""
    reference_url: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = False

    class Params(BaseModel):
        """Strategy parameters; subclasses extend this model."""

        model_config = ConfigDict(extra="forbid")

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        try:
            self.params = self.Params.model_validate(params or {})
        except ValidationError as exc:
            raise ParamsError.from_validation(self.name or type(self).__name__, exc) from None

    def fit(  # noqa: B027 - optional hook; only learned strategies override it
        self,
        dev_outputs: Sequence[Sequence[MemberAnswer]],
        dev_references: Sequence[str],
        *,
        dev_inputs: Sequence[str] | None = None,
    ) -> None:
        """Learn from dev-split member answers (one list per item) and references; default no-op.

        ``dev_inputs`` are the dev items' input texts, for strategies that look at the question.
        """

    @abstractmethod
    def combine(self, answers: list[MemberAnswer], *, item_input: str | None = None) -> Decision:
        """Decide one item's answer from its members' answers (``item_input``: the item's input text)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params.model_dump()})"


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def make_strategy(name: str, params: dict[str, Any] | None = None) -> Strategy:
    """Instantiate the strategy registered as ``name`` with validated ``params``."""
    return STRATEGIES.get(name)(params)
