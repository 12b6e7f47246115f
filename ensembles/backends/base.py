"""The one interface every ensemble member implements, and its registry."""

from __future__ import annotations

import functools
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ensembles.errors import EnsembleError, ParamsError
from ensembles.net import OutboundPolicy
from ensembles.registry import Registry


class BackendError(EnsembleError):
    """A member cannot be loaded or called; the message is shown to the team as is."""


class LoglikelihoodUnsupported(BackendError):
    """The member cannot score given continuations (an endpoint without prompt log-probabilities)."""


class TransientBackendError(BackendError):
    """A failure worth retrying later (rate limit, server busy, connection reset)."""


class DecodingParams(BaseModel):
    """How to decode; part of every generation's cache key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_new_tokens: int = Field(default=16, ge=1, le=4096)
    temperature: float = Field(default=0.0, ge=0.0, le=5.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: tuple[str, ...] = ("\n",)
    seed: int = Field(default=0, ge=0)
    # The most likely tokens at each position, as OpenAI's `top_logprobs`. Left out of the dump at 0,
    # so the cache keys of every generation made without it stay what they were.
    top_logprobs: int = Field(default=0, ge=0, le=20, exclude_if=lambda k: k == 0)


# A conversation: {"role": ..., "content": ...} turns, rendered by the member's own chat template.
Message = dict[str, str]
# What a backend completes: a bare prompt (sent as one user turn where the model chats) or a conversation.
Prompt = str | list[Message]


def transcript(messages: Sequence[Message]) -> str:
    """A conversation as plain text, for a model with no chat template."""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\nassistant:"


@dataclass
class Generation:
    """One completion with what it cost."""

    text: str
    token_logprobs: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0  # the item's share of its batch's wall time
    # "stop": the model ended it (EOS or a stop sequence); "length": it ran into max_new_tokens.
    finish_reason: str = "stop"
    tokens: list[str] = field(default_factory=list)  # each completion token's text, as token_logprobs counts them
    # Per completion token, the top_logprobs most likely [token, logprob] pairs, most likely first.
    top_logprobs: list[list[tuple[str, float]]] = field(default_factory=list)

    @property
    def mean_logprob(self) -> float | None:
        """Mean per-token log-probability, or None when the backend reported none."""
        if not self.token_logprobs:
            return None
        return sum(self.token_logprobs) / len(self.token_logprobs)


class Prices(BaseModel):
    """What a model's tokens cost, in US dollars per million tokens, as providers and gateways quote them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_per_million: float = Field(ge=0.0, le=10_000.0)
    output_per_million: float = Field(ge=0.0, le=10_000.0)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """US dollars for ``prompt_tokens`` read and ``completion_tokens`` written."""
        return (prompt_tokens * self.input_per_million + completion_tokens * self.output_per_million) / 1_000_000


class Backend(ABC):
    """A language model the arena can call: generation, log-likelihood and a fingerprint."""

    name: ClassVar[str] = ""
    pretty_name: ClassVar[str] = ""
    reference_url: ClassVar[str] = ""

    class Config(BaseModel):
        """Backend configuration; subclasses extend it."""

        model_config = ConfigDict(extra="forbid")

        # Not part of any fingerprint: a new price changes what an answer costs, not the answer.
        # Left out of the dump when unset, so configs stored without prices stay as they were.
        prices: Prices | None = Field(default=None, exclude_if=lambda p: p is None)

    def __init__(self, config: dict[str, Any], *, options: BackendOptions | None = None) -> None:
        try:
            self.config = self.Config.model_validate(config)
        except ValidationError as exc:
            raise ParamsError.from_validation(self.name or type(self).__name__, exc) from None
        self.options = options or BackendOptions()

    @abstractmethod
    def fingerprint(self) -> str:
        """A stable id of what the member computes (weights hash, or endpoint + model + revision)."""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Cheap checks before any work is queued (the file exists, has the right format)."""

    def probe(self) -> None:
        """Checks before the member is registered: ``check``, then what shows cheaply that it can generate
        (a local model's config or header read, an endpoint's one-token answer); never loads the weights."""
        self.check()

    def load(self) -> None:  # noqa: B027 - optional hook, remote backends have nothing to load
        """Bring weights into memory; called once before the first request."""

    def unload(self) -> None:  # noqa: B027
        """Release memory held by the model."""

    @abstractmethod
    def generate(self, prompts: Sequence[Prompt], params: DecodingParams) -> list[Generation]:
        """Complete every prompt or conversation; the result has one Generation per prompt, in order."""

    def stream(self, prompt: Prompt, params: DecodingParams) -> Generator[str, None, Generation]:
        """Complete one prompt, yielding its text in pieces as they are decided; returns the Generation.

        The pieces join into the returned ``text``. Closing the generator early stops the work. This
        default, for backends that cannot stream, yields the whole generation at once.
        """
        out = self.generate([prompt], params)[0]
        if out.text:
            yield out.text
        return out

    @abstractmethod
    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[float]:
        """Sum of log-probabilities of each continuation given its context."""


@dataclass(frozen=True)
class BackendOptions:
    """Where a backend may read weights from, keep conversions, and send requests."""

    # Local paths must lie under one of these; empty means any path is allowed.
    model_roots: tuple[Path, ...] = ()
    cache_dir: Path | None = None
    device: str | None = None  # None: CUDA when present, else CPU
    hub_cache: Path | None = None  # the Hugging Face cache hub ids are read from; None: its default (HF_HUB_CACHE)
    # Where an endpoint member may connect; by default public addresses and this machine's loopback.
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)


def check_local_path(path: str | Path, options: BackendOptions) -> Path:
    """Resolve ``path`` and refuse it unless it exists under a configured model root."""
    resolved = Path(path).expanduser().resolve()
    if options.model_roots and not any(
        resolved == root.resolve() or resolved.is_relative_to(root.resolve()) for root in options.model_roots
    ):
        roots = ", ".join(str(r) for r in options.model_roots)
        raise BackendError(f"model path {str(path)!r} is outside the allowed model roots ({roots})")
    if not resolved.exists():
        raise BackendError(f"model path {str(path)!r} does not exist")
    return resolved


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read in chunks; read once per process while the file stays as it was.

    A fingerprint hashes the weights, and a backend is built for every request it serves: without the
    memo each /v1 request would read hundreds of megabytes. A file rewritten changes its modification
    time (or size, or inode), so it is read again.
    """
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, chunk)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, inode: int, size: int, mtime_ns: int, chunk: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def digest_json(value: Any) -> str:
    """SHA-256 of the canonical JSON of ``value``."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def truncate_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """Cut ``text`` at the earliest stop sequence; leading newlines do not count as a stop."""
    body = text.lstrip("\n")
    offset = len(text) - len(body)
    cut = len(text)
    for s in stop:
        if not s:
            continue
        at = body.find(s)
        if at != -1:
            cut = min(cut, offset + at)
    return text[:cut]


def streamable(text: str, stop: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """Of a generation's text so far, the start that no later token can change, and whether a stop ended it.

    The tail that could still grow into a stop sequence is held back, as is a half-decoded character.
    """
    cut = truncate_at_stop(text, stop)
    if len(cut) < len(text):
        return cut, True
    hold = 0
    for s in stop:
        hold = max(hold, next((k for k in range(min(len(s) - 1, len(cut)), 0, -1) if cut.endswith(s[:k])), 0))
    return cut[: len(cut) - hold].rstrip("\ufffd"), False


BACKENDS: Registry[type[Backend]] = Registry("backend")


def make_backend(kind: str, config: dict[str, Any], *, options: BackendOptions | None = None) -> Backend:
    """Instantiate the backend registered as ``kind`` with a validated config."""
    return BACKENDS.get(kind)(config, options=options)
