"""The one interface every ensemble member implements, and its registry."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ensembles.errors import EnsembleError, ParamsError
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


@dataclass
class Generation:
    """One completion with what it cost."""

    text: str
    token_logprobs: list[float] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0  # the item's share of its batch's wall time

    @property
    def mean_logprob(self) -> float | None:
        """Mean per-token log-probability, or None when the backend reported none."""
        if not self.token_logprobs:
            return None
        return sum(self.token_logprobs) / len(self.token_logprobs)


class Backend(ABC):
    """A language model the arena can call: generation, log-likelihood and a fingerprint."""

    name: ClassVar[str] = ""
    pretty_name: ClassVar[str] = ""
    reference_url: ClassVar[str] = ""

    class Config(BaseModel):
        """Backend configuration; subclasses extend it."""

        model_config = ConfigDict(extra="forbid")

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

    def load(self) -> None:  # noqa: B027 - optional hook, remote backends have nothing to load
        """Bring weights into memory; called once before the first request."""

    def unload(self) -> None:  # noqa: B027
        """Release memory held by the model."""

    @abstractmethod
    def generate(self, prompts: list[str], params: DecodingParams) -> list[Generation]:
        """Complete every prompt; the result has one Generation per prompt, in order."""

    @abstractmethod
    def loglikelihood(self, requests: list[tuple[str, str]]) -> list[float]:
        """Sum of log-probabilities of each continuation given its context."""


@dataclass(frozen=True)
class BackendOptions:
    """Where a backend may read weights from and where it may keep conversions."""

    # Local paths must lie under one of these; empty means any path is allowed.
    model_roots: tuple[Path, ...] = ()
    cache_dir: Path | None = None
    device: str | None = None  # None: CUDA when present, else CPU
    hub_cache: Path | None = None  # the Hugging Face cache hub ids are read from; None: its default (HF_HUB_CACHE)


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
    """SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
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


BACKENDS: Registry[type[Backend]] = Registry("backend")


def make_backend(kind: str, config: dict[str, Any], *, options: BackendOptions | None = None) -> Backend:
    """Instantiate the backend registered as ``kind`` with a validated config."""
    return BACKENDS.get(kind)(config, options=options)
