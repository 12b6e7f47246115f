"""Strategy interface and registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ensembles.errors import ParamsError
from ensembles.registry import Registry

if TYPE_CHECKING:
    from ensembles.strategies.calls import CallResult, ModelCaller


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
    # The prompt the member answered, as the suite rendered it ("" when unknown): what a strategy
    # that samples the member again (self-consistency) must ask it.
    prompt: str = ""


@dataclass
class CallCost:
    """What a strategy's own work cost for one item, beyond the member generations it read."""

    calls: int = 0  # model calls the strategy made itself (cached or not)
    tokens: int = 0  # prompt + completion tokens of those calls
    compute_s: float = 0.0  # seconds of model or encoder time, summed
    latency_s: float = 0.0  # wall time added after the members answered (parallel calls overlap)
    comparisons: int = 0  # pairwise ranker comparisons

    def add_stage(self, results: Sequence[CallResult]) -> None:
        """Record calls that run side by side: compute adds up, the wall time is the slowest's."""
        self.calls += len(results)
        self.tokens += sum(r.tokens for r in results)
        self.compute_s += sum(r.seconds for r in results)
        self.latency_s += max((r.seconds for r in results), default=0.0)

    def add_local(self, seconds: float, comparisons: int = 0) -> None:
        """Record work done in the combining process itself (an encoder's forward passes)."""
        self.compute_s += seconds
        self.latency_s += seconds
        self.comparisons += comparisons

    def add(self, other: CallCost) -> None:
        """Add the cost of work done after this (one decision feeding another)."""
        self.calls += other.calls
        self.tokens += other.tokens
        self.compute_s += other.compute_s
        self.latency_s += other.latency_s
        self.comparisons += other.comparisons


@dataclass
class Decision:
    """The ensemble's answer for one item and a JSON-serializable account of how it was reached."""

    answer: str
    details: dict[str, Any] = field(default_factory=dict)
    member_calls: int = 0  # member generations the decision consumed
    # Members whose outputs the decision used (for cost); None means all of them.
    consulted: list[str] | None = None
    # The strategy's own model calls and encoder work; member_calls already counts the calls.
    calls: CallCost = field(default_factory=CallCost)


class Strategy(ABC):
    """Combines the answers of several members into one Decision."""

    name: ClassVar[str] = ""
    pretty_name: ClassVar[str] = ""
    reference_url: ClassVar[str] = ""
    # The class's default; a strategy whose params decide whether it learns sets it per instance.
    needs_fit: bool = False
    # Strategies that call models themselves need a ModelCaller passed to combine().
    calls_models: ClassVar[bool] = False
    # How many members a blend of this strategy takes (None: no limit beyond the arena's).
    min_members: ClassVar[int] = 2
    max_members: ClassVar[int | None] = None

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
    def combine(
        self, answers: list[MemberAnswer], *, item_input: str | None = None, caller: ModelCaller | None = None
    ) -> Decision:
        """Decide one item's answer from its members' answers.

        ``item_input`` is the item's input text; ``caller`` lets strategies with ``calls_models``
        ask models for new generations (the others ignore it).
        """

    def called_members(self) -> dict[str, str]:
        """Models the strategy calls by name, keyed by the parameter that names them ("fuser")."""
        return {}

    def called_models(self, members: Sequence[str]) -> list[str]:
        """Every model combine() may call for a blend of ``members``, the one named first first."""
        return list(dict.fromkeys(self.called_members().values()))

    def prefetch(  # noqa: B027 - optional hook; strategies that call models may batch their calls here
        self,
        items: Sequence[Sequence[MemberAnswer]],
        inputs: Sequence[str | None],
        *,
        caller: ModelCaller,
    ) -> None:
        """Ask ``caller`` at once, for every item, for calls combine() will make one item at a time.

        A caching caller then generates them in batches and combine() finds them cached.
        """

    def check_members(self, members: Sequence[str]) -> None:  # noqa: B027 - optional hook
        """Refuse a blend's member list the parameters cannot work with (raise ParamsError)."""

    def asks_members_again(self) -> bool:
        """Whether combine() asks the blend's own members for new generations, so each must be a model."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params.model_dump()})"


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


def make_strategy(name: str, params: dict[str, Any] | None = None) -> Strategy:
    """Instantiate the strategy registered as ``name`` with validated ``params``."""
    return STRATEGIES.get(name)(params)
