"""CSV tables with a header row, read through a column mapping (``ColumnMapping``).

The mapping says which column is the input and which the reference, or the choices and the
gold answer; Hugging Face datasets (``hf_dataset``) are read through the same mapping.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ensembles.errors import SuiteError
from ensembles.metrics.extract import OPTION_LETTERS
from ensembles.suites.importers.base import FORMATS, FileKey, SuiteFormat, TextFile, seed_of
from ensembles.suites.importers.common import DEV_RATIO, ItemBuilder, build_manifest, hash_split, slug
from ensembles.suites.model import DEFAULT_MAX_BYTES, DEFAULT_MAX_ITEMS, Suite, check_size

GoldKind = Literal["index", "letter", "text"]

_SPLIT_ALIASES = {"dev": "dev", "validation": "dev", "valid": "dev", "val": "dev", "test": "test"}


@dataclass(frozen=True)
class ColumnMapping:
    """Which columns hold what: ``input`` plus either ``reference`` or ``choices`` and ``gold``.

    ``choices`` names one column per option, or one column holding a list (datasets rows).
    ``gold`` is read as a 0-based position ("index"), a letter A-J ("letter") or the text of
    the right option ("text"). Without a ``split`` column splits come from ``hash_split``; a
    split column may say dev/validation/valid/val or test. Without ``id`` rows are numbered.
    """

    input: str
    reference: str | None = None
    choices: tuple[str, ...] = ()
    gold: str | None = None
    gold_kind: GoldKind = "index"
    split: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        if self.reference is not None and (self.choices or self.gold is not None):
            raise ValueError("map either a reference column or choices and gold columns, not both")
        if self.reference is None and not (self.choices and self.gold is not None):
            raise ValueError("map a reference column, or choices columns and a gold column")
        if self.gold_kind not in ("index", "letter", "text"):
            raise ValueError(f"gold_kind must be index, letter or text, got {self.gold_kind!r}")

    @classmethod
    def of(cls, mapping: ColumnMapping | Mapping[str, Any]) -> ColumnMapping:
        """Accept a ColumnMapping or a plain dict of its fields."""
        if isinstance(mapping, ColumnMapping):
            return mapping
        data = dict(mapping)
        if isinstance(data.get("choices"), list | tuple):
            data["choices"] = tuple(data["choices"])
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(str(exc)) from None

    @property
    def multiple_choice(self) -> bool:
        """True when the mapping names choices."""
        return bool(self.choices)

    def names(self) -> list[str]:
        """Every column the mapping reads."""
        named = [self.input, self.reference, *self.choices, self.gold, self.split, self.id]
        return [name for name in named if name is not None]


def _text_cell(row: Mapping[str, Any], column: str) -> str:
    value = row[column]
    if value is None or isinstance(value, dict | list):
        raise ValueError(f"column {column!r} holds {value!r}, not text")
    return str(value)


def _mapped_fields(
    row: Mapping[str, Any], columns: ColumnMapping, number: int, seed: int, dev_ratio: float
) -> dict[str, Any]:
    """Item fields for one row; ValueError says what is wrong."""
    fields: dict[str, Any] = {"input": _text_cell(row, columns.input)}
    if not fields["input"].strip():
        raise ValueError(f"input column {columns.input!r} is empty")
    fields["id"] = _text_cell(row, columns.id) if columns.id else f"row-{number:05d}"
    if columns.split:
        raw_split = _text_cell(row, columns.split).strip().lower()
        if raw_split not in _SPLIT_ALIASES:
            raise ValueError(f"split {raw_split!r} is not one of {sorted(_SPLIT_ALIASES)}")
        fields["split"] = _SPLIT_ALIASES[raw_split]
    else:
        fields["split"] = hash_split(number - 1, seed=seed, dev_ratio=dev_ratio)
    if columns.reference is not None:
        fields["reference"] = _text_cell(row, columns.reference)
        return fields
    if len(columns.choices) == 1 and isinstance(row[columns.choices[0]], list | tuple):
        choices = [str(choice) for choice in row[columns.choices[0]]]
    else:
        choices = [_text_cell(row, column) for column in columns.choices]
        empty = [column for column, choice in zip(columns.choices, choices, strict=True) if not choice.strip()]
        if empty:
            raise ValueError(f"choice column {empty[0]!r} is empty")
    fields["choices"] = choices
    fields["gold"] = _gold_value(row[columns.gold], columns.gold_kind, choices)  # type: ignore[index]
    return fields


def _gold_value(raw: Any, kind: GoldKind, choices: list[str]) -> int:
    text = str(raw).strip()
    if kind == "index":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if not re.fullmatch(r"\d+", text):
            raise ValueError(f"gold {raw!r} is not a 0-based option number")
        return int(text)
    if kind == "letter":
        if len(text) != 1 or text.upper() not in OPTION_LETTERS:
            raise ValueError(f"gold {raw!r} is not an option letter A-{OPTION_LETTERS[-1]}")
        return OPTION_LETTERS.index(text.upper())
    if text not in choices:
        raise ValueError(f"gold {raw!r} is not one of the choices {choices}")
    return choices.index(text)


def suite_from_rows(
    rows: Iterable[tuple[int, Mapping[str, Any]]],
    columns: ColumnMapping,
    *,
    file: str,
    name: str,
    seed: int,
    dev_ratio: float,
    prompt_template: str | None,
    answer_extraction: str | None,
    metric: str,
    description: str,
    max_new_tokens: int | None,
    max_items: int,
) -> Suite:
    """A Suite from (line, row) pairs read through ``columns``; a bad cell is a SuiteError on its line."""
    multiple_choice = columns.multiple_choice
    manifest = build_manifest(
        file,
        None,
        name=slug(name),
        version="1",
        task_type="multiple_choice" if multiple_choice else "generation",
        prompt_template=prompt_template
        or ("Question: {input}\n{choices}\nAnswer:" if multiple_choice else "Question: {input}\nAnswer:"),
        answer_extraction=answer_extraction or ("letter" if multiple_choice else "first_line"),
        metric=metric,
        description=description,
        max_new_tokens=max_new_tokens or (4 if multiple_choice else 32),
    )
    builder = ItemBuilder(manifest, file, max_items)
    for number, (line, row) in enumerate(rows, start=1):
        try:
            fields = _mapped_fields(row, columns, number, seed, dev_ratio)
        except ValueError as exc:
            raise SuiteError(str(exc), file=file, line=line) from None
        builder.add(line, **fields)
    return builder.suite()


def import_csv(
    text: str,
    columns: ColumnMapping | Mapping[str, Any],
    *,
    name: str,
    file: str = "items.csv",
    delimiter: str = ",",
    seed: int = 0,
    dev_ratio: float = DEV_RATIO,
    prompt_template: str | None = None,
    answer_extraction: str | None = None,
    metric: str = "exact_match",
    description: str = "",
    max_new_tokens: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Suite:
    """A CSV file with a header row, read through ``columns`` (a ColumnMapping or a dict of its fields).

    Without a ``prompt_template`` the suite asks "Question: {input}" and, for choices, lists them
    as letters; errors give the line where the offending record starts.
    """
    check_size(text, file, max_bytes)
    try:
        mapping = ColumnMapping.of(columns)
    except ValueError as exc:
        raise SuiteError(f"bad column mapping: {exc}", file=file) from None
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")), delimiter=delimiter)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise SuiteError(f"invalid CSV: {exc}", file=file, line=reader.line_num) from None
    if not header:
        raise SuiteError("file is empty; expected a header row", file=file, line=1)
    header = [cell.strip() for cell in header]
    missing = [column for column in mapping.names() if column not in header]
    if missing:
        raise SuiteError(f"header has no column {missing[0]!r}; columns are {header}", file=file, line=1)

    def records() -> Iterable[tuple[int, dict[str, str]]]:
        while True:
            start = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise SuiteError(f"invalid CSV: {exc}", file=file, line=reader.line_num) from None
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue
            if len(cells) != len(header):
                raise SuiteError(f"row has {len(cells)} fields, the header {len(header)}", file=file, line=start)
            yield start, dict(zip(header, cells, strict=True))

    return suite_from_rows(
        records(),
        mapping,
        file=file,
        name=name,
        seed=seed,
        dev_ratio=dev_ratio,
        prompt_template=prompt_template,
        answer_extraction=answer_extraction,
        metric=metric,
        description=description,
        max_new_tokens=max_new_tokens,
        max_items=max_items,
    )


@FORMATS.register("csv", pretty_name="CSV", reference_url="https://www.rfc-editor.org/rfc/rfc4180")
class CsvTable(SuiteFormat):
    summary = "CSV with a column mapping"
    files = (FileKey("csv", "items (CSV with a header row)", "items.csv"),)
    options = ("name", "seed", "columns", "metric", "prompt_template", "answer_extraction")

    @classmethod
    def parse(
        cls, files: Mapping[str, TextFile], options: Mapping[str, Any], *, max_bytes: int, max_items: int
    ) -> Suite:
        if not options.get("name"):
            raise SuiteError("a CSV upload needs a suite name")
        columns = options.get("columns")
        if not isinstance(columns, Mapping) or not columns.get("input"):
            raise SuiteError("a CSV upload needs a column mapping naming at least the input column")
        extra = {key: options[key] for key in ("prompt_template", "answer_extraction") if options.get(key)}
        table = files["csv"]
        return import_csv(
            table.text,
            columns,
            name=str(options["name"]),
            file=table.name,
            seed=seed_of(options),
            metric=str(options.get("metric") or "exact_match"),
            **extra,
            max_bytes=max_bytes,
            max_items=max_items,
        )
