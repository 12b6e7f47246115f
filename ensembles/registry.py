"""A small generic registry for pluggable components (backends, strategies, metrics, ...)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, ItemsView, Iterator
from typing import Generic, TypeVar

from ensembles.errors import DuplicateNameError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to registered classes or functions of one ``kind``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, *, pretty_name: str, reference_url: str = "") -> Callable[[T], T]:
        """Return a decorator that registers its target under ``name``.

        The target (class or function) gets ``name``, ``pretty_name`` and
        ``reference_url`` attributes so it can describe itself.
        """

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise DuplicateNameError(f"{self.kind} '{name}' is already registered")
            obj.name = name  # type: ignore[attr-defined]
            obj.pretty_name = pretty_name  # type: ignore[attr-defined]
            obj.reference_url = reference_url  # type: ignore[attr-defined]
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        """Return the entry registered as ``name``, or raise UnknownNameError with a suggestion."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self._unknown_message(name)) from None

    def _unknown_message(self, name: str) -> str:
        message = f"unknown {self.kind} {name!r}"
        close = difflib.get_close_matches(str(name), self._entries, n=1)
        if close:
            return f"{message}; did you mean {close[0]!r}?"
        known = ", ".join(self.names()) or "none registered"
        return f"{message}; known: {known}"

    def names(self) -> list[str]:
        """Sorted list of registered names."""
        return sorted(self._entries)

    def items(self) -> ItemsView[str, T]:
        """(name, entry) pairs in registration order."""
        return self._entries.items()

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
