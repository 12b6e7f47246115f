"""The suite format interface and its registry: each format module registers one SuiteFormat.

A format names the files it reads (their keys in an upload) and turns their text into a
validated Suite. The arena's upload page, its API and the ``arena`` client list formats from
here, so a new format is one module that registers itself and is imported by the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from ensembles.errors import SuiteError, UnknownNameError
from ensembles.registry import Registry
from ensembles.suites.model import DEFAULT_MAX_BYTES, DEFAULT_MAX_ITEMS, Suite


class TextFile(Protocol):
    """One file's text and the name messages call it by (the arena's UploadedText is one)."""

    @property
    def name(self) -> str: ...

    @property
    def text(self) -> str: ...


@dataclass(frozen=True)
class FileKey:
    """One file a format reads: its key in an upload, what it holds, and its name when none is given."""

    key: str
    description: str
    default_name: str
    required: bool = True


class SuiteFormat:
    """A file format suites are imported from; subclasses register with ``FORMATS.register``."""

    name: ClassVar[str] = ""
    pretty_name: ClassVar[str] = ""
    reference_url: ClassVar[str] = ""
    # What a user gives, in a phrase: the upload form's label for the format.
    summary: ClassVar[str] = ""
    files: ClassVar[tuple[FileKey, ...]] = ()
    # Upload options the format reads besides the files ("name", "columns", ...).
    options: ClassVar[tuple[str, ...]] = ()
    # False for formats read from an installed package or the Hub rather than from uploaded files.
    uploads: ClassVar[bool] = True

    @classmethod
    def file_keys(cls) -> tuple[str, ...]:
        """The keys of the files the format reads, in the order forms show them."""
        return tuple(file.key for file in cls.files)

    @classmethod
    def parse(
        cls, files: Mapping[str, TextFile], options: Mapping[str, Any], *, max_bytes: int, max_items: int
    ) -> Suite:
        """A validated Suite from the files under their keys; SuiteError names the file and line."""
        raise SuiteError(f"{cls.pretty_name} suites are not uploaded: {cls.summary}")


FORMATS: Registry[type[SuiteFormat]] = Registry("suite format")
# The arena's own manifest + items: what an upload is when it names no format.
DEFAULT_FORMAT = "suite"


def upload_formats() -> list[type[SuiteFormat]]:
    """The formats uploads may be in: the default first, then by name (the order forms list them)."""
    formats = [fmt for _, fmt in FORMATS.items() if fmt.uploads]
    return sorted(formats, key=lambda fmt: (fmt.name != DEFAULT_FORMAT, fmt.name))


def upload_format(name: str) -> type[SuiteFormat]:
    """The upload format ``name``; SuiteError (with "did you mean") when there is none."""
    try:
        fmt = FORMATS.get(name)
    except UnknownNameError as exc:
        raise SuiteError(exc.message) from None
    if not fmt.uploads:
        names = ", ".join(other.name for other in upload_formats())
        raise SuiteError(f"{fmt.pretty_name} suites are not uploaded ({fmt.summary}); upload one of {names}")
    return fmt


def parse_files(
    name: str,
    files: Mapping[str, TextFile],
    options: Mapping[str, Any] | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Suite:
    """A Suite from files in the upload format ``name``; a missing required file is named by what it holds."""
    fmt = upload_format(name)
    missing = [file.description for file in fmt.files if file.required and file.key not in files]
    if missing:
        raise SuiteError(f"a {fmt.name} upload needs {' and '.join(missing)}")
    return fmt.parse(files, dict(options or {}), max_bytes=max_bytes, max_items=max_items)


def seed_of(options: Mapping[str, Any]) -> int:
    """The seed of the dev/test split for data that has none (0 when not given)."""
    return int(options.get("seed") or 0)
