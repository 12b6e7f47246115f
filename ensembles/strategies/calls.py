"""Model calls made by strategies themselves (fuser, mixture of agents, pipeline).

The strategy never holds a model: it asks a ``ModelCaller`` for generations by member name,
and the caller decides where they come from (a cache by content, a loaded backend, an endpoint).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from ensembles.answers import vote_key
from ensembles.backends.base import Backend, DecodingParams, Generation, digest_json
from ensembles.errors import EnsembleError
from ensembles.strategies.base import MemberAnswer, Strategy

# Which part of a member's output a prompt shows: the extracted answer or the raw generation.
Shown = Literal["answer", "text"]


@dataclass(frozen=True)
class Sampling:
    """Sampled decoding for one call; the caller keeps its own length limit and stop sequences."""

    temperature: float
    top_p: float
    seed: int

    def applied_to(self, params: DecodingParams) -> DecodingParams:
        """``params`` sampled this way, validated (and so part of every cache key)."""
        return DecodingParams.model_validate(
            {**params.model_dump(), "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed}
        )


@dataclass(frozen=True)
class CallResult:
    """One generation a strategy asked for, with the answer the suite's extractor found in it."""

    text: str
    answer: str
    tokens: int = 0  # prompt + completion tokens
    seconds: float = 0.0  # model time of this generation (when cached: what it took when computed)
    logprob: float | None = None  # mean token log-probability, when the backend reports it
    cached: bool = False


class ModelCaller(Protocol):
    """Generates with a named model: one CallResult per prompt, in order.

    Greedy unless ``sampling`` is given; a sampled call is cached under its seed like any other.
    """

    def generate(self, member: str, prompts: list[str], sampling: Sampling | None = None) -> list[CallResult]: ...


class BackendCaller:
    """A ModelCaller over library backends by name, caching by (fingerprint, prompt, params).

    What was generated once in this process is never generated again; ``new_calls`` counts
    the generations actually computed.
    """

    def __init__(self, backends: Mapping[str, Backend], params: DecodingParams, extract: Callable[[str], str]) -> None:
        self.backends = dict(backends)
        self.params = params
        self.extract = extract
        self.new_calls = 0
        self._fingerprints: dict[str, str] = {}
        self._cache: dict[str, Generation] = {}

    def _key(self, member: str, prompt: str, params: DecodingParams) -> str:
        if member not in self._fingerprints:
            self._fingerprints[member] = self.backends[member].fingerprint()
        dumped = params.model_dump(mode="json")
        return digest_json({"fingerprint": self._fingerprints[member], "prompt": prompt, "params": dumped})

    def generate(self, member: str, prompts: list[str], sampling: Sampling | None = None) -> list[CallResult]:
        if member not in self.backends:
            known = ", ".join(sorted(self.backends)) or "none"
            raise EnsembleError(f"no model named {member!r} to call; known: {known}")
        params = self.params if sampling is None else sampling.applied_to(self.params)
        keys = [self._key(member, p, params) for p in prompts]
        was_cached = [k in self._cache for k in keys]
        # A prompt asked for twice in one call is generated once.
        missing = list(dict.fromkeys(p for p, k in zip(prompts, keys, strict=True) if k not in self._cache))
        if missing:
            outputs = self.backends[member].generate(missing, params)
            for prompt, out in zip(missing, outputs, strict=True):
                self._cache[self._key(member, prompt, params)] = out
            self.new_calls += len(missing)
        return [result_of(self._cache[k], self.extract, cached=hit) for k, hit in zip(keys, was_cached, strict=True)]


def result_of(generation: Generation, extract: Callable[[str], str], *, cached: bool) -> CallResult:
    """A backend Generation as a CallResult, its answer found by ``extract``."""
    return CallResult(
        text=generation.text,
        answer=extract(generation.text),
        tokens=generation.prompt_tokens + generation.completion_tokens,
        seconds=generation.latency_s,
        logprob=generation.mean_logprob,
        cached=cached,
    )


def check_template(template: str, *, required: set[str], allowed: set[str]) -> str:
    """Refuse a prompt template with fields other than ``allowed`` or without the ``required`` ones."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid template: {exc}; write a literal brace as {{{{ or }}}}") from None
    unknown = sorted({f for f in fields if f not in allowed})
    if unknown:
        names = ", ".join("{" + f + "}" for f in unknown)
        raise ValueError(f"unknown fields {names}; allowed: {', '.join('{' + f + '}' for f in sorted(allowed))}")
    missing = sorted(required - set(fields))
    if missing:
        raise ValueError(f"must contain {', '.join('{' + f + '}' for f in missing)}")
    return template


def shown(answer: MemberAnswer | CallResult, part: Shown) -> str:
    """The part of an output a prompt shows, on one line; the answer when there is no text."""
    text = answer.text if part == "text" and answer.text.strip() else answer.answer
    return " ".join(text.split())


def numbered(texts: Iterable[str]) -> str:
    """Texts as a numbered list, one a line; "(none)" for no texts."""
    lines = [f"{i}. {text}" for i, text in enumerate(texts, start=1)]
    return "\n".join(lines) or "(none)"


def answered(answers: Sequence[MemberAnswer]) -> list[MemberAnswer]:
    """The answers that are not empty; empty answers abstain."""
    return [a for a in answers if vote_key(a.answer)]


class ModelCallingStrategy(Strategy):
    """A strategy that asks models for new generations through the caller passed to combine()."""

    calls_models = True

    def require_caller(self, caller: ModelCaller | None) -> ModelCaller:
        """The caller, or a clear error when the strategy was asked to combine without one."""
        if caller is None:
            raise EnsembleError(
                f"{self.name} calls models itself and was given no caller; pass caller= (a ModelCaller) to combine()"
            )
        return caller

    def require_input(self, item_input: str | None) -> str:
        """The item's input text, which every prompt the strategy writes starts from."""
        if item_input is None:
            raise EnsembleError(f"{self.name} writes prompts from the item's input; pass item_input to combine()")
        return item_input

    def call(
        self, caller: ModelCaller, member: str, prompts: list[str], sampling: Sampling | None = None
    ) -> list[CallResult]:
        """Ask ``member`` for one generation per prompt, checking the caller kept its contract."""
        # Greedy calls leave the argument out, so a caller written before sampling existed still serves them.
        results = caller.generate(member, prompts) if sampling is None else caller.generate(member, prompts, sampling)
        if len(results) != len(prompts):
            raise EnsembleError(
                f"{self.name}: the caller returned {len(results)} generations of {member!r} for {len(prompts)} prompts"
            )
        return results
