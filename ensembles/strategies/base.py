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


@dataclass
class Decision:
    """The ensemble's answer for one item and a JSON-serializable account of how it was reached."""

    answer: str
    details: dict[str, Any] = field(default_factory=dict)
    member_calls: int = 0  # member generations the decision consumed


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
    ) -> None:
        """Learn from dev-split member answers (one list per item) and references; default no-op."""

    @abstractmethod
    def combine(self, answers: list[MemberAnswer]) -> Decision:
        """Decide one item's answer from its members' answers."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params.model_dump()})"


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def make_strategy(name: str, params: dict[str, Any] | None = None) -> Strategy:
    """Instantiate the strategy registered as ``name`` with validated ``params``."""
    return STRATEGIES.get(name)(params)
