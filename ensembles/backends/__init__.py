"""Model backends: one interface for local weights, GGUF files and HTTP endpoints."""

from ensembles.backends import hf as _hf  # noqa: F401 - registers hf and gguf
from ensembles.backends import openai as _openai  # noqa: F401 - registers openai
from ensembles.backends.base import (
    BACKENDS,
    Backend,
    BackendError,
    BackendOptions,
    DecodingParams,
    Generation,
    LoglikelihoodUnsupported,
    Message,
    Prices,
    Prompt,
    TransientBackendError,
    make_backend,
    transcript,
)
from ensembles.backends.pool import ModelPool

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "BackendOptions",
    "DecodingParams",
    "Generation",
    "LoglikelihoodUnsupported",
    "Message",
    "ModelPool",
    "Prices",
    "Prompt",
    "TransientBackendError",
    "make_backend",
    "transcript",
]
