"""Exception hierarchy for the ensembles library."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydantic import ValidationError
    from pydantic_core import ErrorDetails


class EnsembleError(Exception):
    """Base class for every error raised by the ensembles library."""


class UnknownNameError(EnsembleError, KeyError):
    """A name was looked up in a registry that does not contain it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message and wrap it in quotes.
        return self.message


class DuplicateNameError(EnsembleError):
    """A name was registered twice in the same registry."""


class ParamsError(EnsembleError, ValueError):
    """Parameters for a strategy, metric or method failed validation."""

    @classmethod
    def from_validation(cls, name: str, exc: ValidationError) -> ParamsError:
        """Build a readable error from a pydantic ValidationError for component ``name``."""
        problems = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"]) or "<params>"
            problems.append(f"{field}: {_describe(err)}")
        return cls(f"invalid params for '{name}': " + "; ".join(problems))


def _describe(err: ErrorDetails) -> str:
    """Render one pydantic error, spelling out the allowed range or values when known."""
    ctx = err.get("ctx") or {}
    kind = err.get("type", "")
    bounds = {
        "greater_than": (">", "gt"),
        "greater_than_equal": (">=", "ge"),
        "less_than": ("<", "lt"),
        "less_than_equal": ("<=", "le"),
    }
    if kind in bounds:
        symbol, key = bounds[kind]
        return f"must be {symbol} {ctx.get(key)} (got {err.get('input')!r})"
    if kind == "literal_error" and "expected" in ctx:
        return f"must be one of {ctx['expected']} (got {err.get('input')!r})"
    if kind == "extra_forbidden":
        return "unknown parameter"
    return f"{err.get('msg', 'invalid value')} (got {err.get('input')!r})"


class SuiteError(EnsembleError, ValueError):
    """A suite manifest or item file is malformed; carries the file and line when known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line

    def __str__(self) -> str:
        if self.file is None:
            return self.message
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"
