"""What several importers share: seeded dev/test splits, items checked line by line, safe file reading.

Every helper raises SuiteError naming the file and, where it can, the line.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ensembles.errors import SuiteError
from ensembles.parsing import compose_yaml, load_json, load_yaml
from ensembles.suites.model import (
    Item,
    Suite,
    SuiteManifest,
    _check_item_fits,
    _validation_message,
    check_item_count,
)

DEV_RATIO = 0.5


def hash_split(index: int, *, seed: int = 0, dev_ratio: float = DEV_RATIO) -> str:
    """ "dev" or "test" for example ``index``, from a seeded hash: stable whatever else is in the file."""
    if not 0.0 <= dev_ratio <= 1.0:
        raise ValueError(f"dev_ratio must be in [0, 1], got {dev_ratio}")
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return "dev" if int.from_bytes(digest[:8], "big") / 2**64 < dev_ratio else "test"


def slug(text: str) -> str:
    """A valid suite name from free text ("Logical Deduction" -> "logical_deduction")."""
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:64].strip("_")
    return name or "imported"


class ItemBuilder:
    """Validates items one by one against a manifest, so each error carries its line."""

    def __init__(self, manifest: SuiteManifest, file: str, max_items: int) -> None:
        self.manifest = manifest
        self.file = file
        self.max_items = max_items
        self.items: list[Item] = []
        self._lines: dict[str, int | None] = {}

    def add(self, line: int | None, **fields: Any) -> None:
        check_item_count(len(self.items) + 1, self.file, line, self.max_items)
        try:
            item = Item.model_validate(fields)
            _check_item_fits(self.manifest, item)
        except ValidationError as exc:
            raise SuiteError(_validation_message(exc), file=self.file, line=line) from None
        except ValueError as exc:
            raise SuiteError(str(exc), file=self.file, line=line) from None
        if item.id in self._lines:
            first = self._lines[item.id]
            where = f" (first on line {first})" if first is not None else ""
            raise SuiteError(f"duplicate item id {item.id!r}{where}", file=self.file, line=line)
        self._lines[item.id] = line
        self.items.append(item)

    def suite(self) -> Suite:
        if not self.items:
            raise SuiteError("no items to import", file=self.file)
        return Suite(self.manifest, self.items)


def build_manifest(file: str, line: int | None = None, **fields: Any) -> SuiteManifest:
    """A validated manifest; a bad field is a SuiteError at ``file``:``line``."""
    try:
        return SuiteManifest.model_validate(fields)
    except ValidationError as exc:
        raise SuiteError(_validation_message(exc), file=file, line=line) from None


def json_lines(text: str, file: str) -> Iterable[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank JSONL line."""
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            data = load_json(raw)
        except json.JSONDecodeError as exc:
            raise SuiteError(f"invalid JSON: {exc.msg} (column {exc.colno})", file=file, line=lineno) from None
        if not isinstance(data, dict):
            raise SuiteError("each line must be a JSON object", file=file, line=lineno)
        yield lineno, data


def read_text(path: Path, max_bytes: int) -> str:
    """A UTF-8 file (gzip-compressed when it starts with the gzip magic), refused over ``max_bytes``."""
    try:
        if path.stat().st_size > max_bytes:
            raise SuiteError(f"file is larger than the limit of {max_bytes:,} bytes", file=str(path))
        raw = path.read_bytes()
    except OSError as exc:
        raise SuiteError(f"cannot read file: {exc.strerror}", file=str(path)) from None
    if raw[:2] == b"\x1f\x8b":
        try:
            # Read one byte past the limit so a small archive cannot expand without bound.
            with gzip.GzipFile(fileobj=io.BytesIO(raw)) as archive:
                raw = archive.read(max_bytes + 1)
        except (OSError, EOFError) as exc:
            raise SuiteError(f"cannot decompress gzip file: {exc}", file=str(path)) from None
        if len(raw) > max_bytes:
            raise SuiteError(f"file is larger than the limit of {max_bytes:,} bytes uncompressed", file=str(path))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SuiteError("file is not valid UTF-8", file=str(path), line=line) from None


def package_data(package: str, relative: str, install_hint: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SuiteError(f"the {package!r} package is not installed ({install_hint})")
    path = Path(next(iter(spec.submodule_search_locations)), relative)
    if not path.is_file():
        raise SuiteError(f"the installed {package!r} package does not ship {relative}")
    return path


def yaml_mapping(text: str, file: str) -> tuple[dict[str, Any], dict[str, int]]:
    """Safely parse a YAML mapping; returns it with the line of each top-level key."""
    try:
        node = compose_yaml(text)
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        if "!function" in problem:
            problem = "lm-evaluation-harness '!function' hooks are Python code and cannot be imported"
        raise SuiteError(f"invalid YAML: {problem}", file=file, line=line) from None
    if not isinstance(data, dict) or not isinstance(node, yaml.MappingNode):
        raise SuiteError("expected a YAML mapping", file=file, line=1)
    lines = {key.value: key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)}
    return data, lines
