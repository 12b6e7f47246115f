"""Suite data model, prompt rendering, scoring, and (de)serialization."""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Iterable
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ensembles.errors import SuiteError, UnknownNameError
from ensembles.metrics import EXTRACTORS, METRICS, get_metric
from ensembles.metrics.code import build_test_code
from ensembles.metrics.extract import OPTION_LETTERS
from ensembles.parsing import compose_yaml, load_json, load_yaml

# Same conventions as lm-evaluation-harness: a space before the target, a blank line between shots.
TARGET_DELIMITER = " "
FEWSHOT_DELIMITER = "\n\n"

# Upload limits: big enough for any public benchmark split, small enough to parse in memory.
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_ITEMS = 50_000
# Options an item may have when answered by log-likelihood (one scored continuation each); answered by
# generating a letter, the letters A-J bound it to ten.
MAX_OPTIONS = 100

# Judge suites are scored by a judge model comparing answers, not by a per-item metric;
# this reserved metric name marks them and is deliberately absent from METRICS.
JUDGE_METRIC = "judge"
CODE_METRIC = "code_pass"

TaskType = Literal["generation", "multiple_choice", "code", "judge"]
# How multiple-choice items are answered: by generating and extracting a letter, or by the
# log-likelihood of each option's text after the prompt (raw, or per character as lm-eval's acc_norm).
Scoring = Literal["generate", "loglikelihood", "loglikelihood_norm"]


class FewShot(BaseModel):
    """A worked example shown before the item; ``choices`` only for multiple choice."""

    model_config = ConfigDict(extra="forbid")

    input: str
    output: str
    choices: list[str] | None = None


class SuiteManifest(BaseModel):
    """How to prompt for and score a suite's items."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$", max_length=64)
    # Short enough that "+<hash8>" still fits when changed content reuses a version.
    version: str = Field(min_length=1, max_length=31, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    task_type: TaskType
    prompt_template: str
    few_shot: list[FewShot] = Field(default_factory=list)
    answer_extraction: str
    metric: str
    splits: list[Annotated[str, Field(pattern=r"^[a-z0-9_-]{1,20}$")]] = Field(
        default_factory=lambda: ["dev", "test"], min_length=1
    )
    description: str = ""
    max_new_tokens: int = Field(default=16, ge=1, le=512)
    stop: list[str] = Field(default_factory=lambda: ["\n"])
    scoring: Scoring = "generate"
    # What joins the prompt to an option (and a few-shot input to its output); "" where the prompt
    # already ends in its own separator, as BIG-bench's "\nA: " does.
    target_delimiter: str = Field(default=TARGET_DELIMITER, max_length=16)

    @field_validator("answer_extraction")
    @classmethod
    def _known_extractor(cls, value: str) -> str:
        try:
            EXTRACTORS.get(value)
        except UnknownNameError as exc:
            # pydantic only collects ValueErrors; UnknownNameError is a KeyError.
            raise ValueError(str(exc)) from None
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value == JUDGE_METRIC:
            return value
        try:
            METRICS.get(value)
        except UnknownNameError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _template_fields(self) -> SuiteManifest:
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(self.prompt_template) if f is not None}
        except ValueError as exc:
            raise ValueError(f"prompt_template is not a valid format string: {exc}") from None
        allowed = {"input", "choices"} if self.task_type == "multiple_choice" else {"input"}
        if "input" not in fields:
            raise ValueError("prompt_template must contain {input}")
        if self.task_type == "multiple_choice" and self.scoring == "generate" and "choices" not in fields:
            raise ValueError("multiple_choice prompt_template must contain {choices}")
        if fields - allowed:
            raise ValueError(
                f"prompt_template has unknown fields {sorted(fields - allowed)}; allowed: {sorted(allowed)}"
            )
        if len(set(self.splits)) != len(self.splits):
            raise ValueError(f"splits contain duplicates: {self.splits}")
        if (self.task_type == "judge") != (self.metric == JUDGE_METRIC):
            raise ValueError(f"metric {JUDGE_METRIC!r} goes with task_type 'judge' and only with it")
        if (self.task_type == "code") != (self.metric == CODE_METRIC):
            raise ValueError(f"metric {CODE_METRIC!r} goes with task_type 'code' and only with it")
        if self.scoring != "generate" and self.task_type != "multiple_choice":
            raise ValueError(f"scoring {self.scoring!r} is for multiple_choice suites only")
        return self

    def canonical(self) -> dict[str, Any]:
        """The manifest as hashed: fields added later are left out while at their default,
        so suites stored before they existed keep their hash."""
        data = self.model_dump(mode="json")
        if data.get("scoring") == "generate":
            del data["scoring"]
        if data.get("target_delimiter") == TARGET_DELIMITER:
            del data["target_delimiter"]
        return data


class Item(BaseModel):
    """One evaluation item.

    A generation item has a ``reference``; an MC item ``choices`` and ``gold``; a code item
    ``tests`` (and the canonical solution as ``reference``); a judge item only its ``input``.
    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100)
    input: str
    reference: str | None = None
    choices: list[str] | None = None
    gold: int | None = None
    split: str
    tests: str | None = None
    entry_point: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    follow_ups: list[str] | None = None
    # Credit in [0, 1] for choosing each option (BIG-bench's target_scores); without it only gold earns 1.
    option_scores: list[float] | None = None

    @property
    def is_multiple_choice(self) -> bool:
        """True when the item carries answer options."""
        return self.choices is not None

    @model_validator(mode="after")
    def _consistent(self) -> Item:
        if self.choices is not None or self.gold is not None:
            if not self.choices or len(self.choices) < 2:
                raise ValueError("multiple-choice items need at least 2 choices")
            if len(self.choices) > MAX_OPTIONS:
                raise ValueError(f"at most {MAX_OPTIONS} choices are supported, got {len(self.choices)}")
            if self.gold is None:
                raise ValueError("multiple-choice items need 'gold'")
            if not 0 <= self.gold < len(self.choices):
                raise ValueError(f"gold {self.gold} out of range 0..{len(self.choices) - 1}")
            if self.tests is not None or self.entry_point is not None:
                raise ValueError("multiple-choice items cannot carry 'tests' or 'entry_point'")
        if self.option_scores is not None:
            if self.choices is None or len(self.option_scores) != len(self.choices):
                raise ValueError("'option_scores' needs one score per choice")
            if not all(0.0 <= score <= 1.0 for score in self.option_scores):
                raise ValueError("'option_scores' must lie in [0, 1]")
        if self.entry_point is not None and self.tests is None:
            raise ValueError("'entry_point' needs 'tests' that check it")
        return self


def option_label(index: int) -> str:
    """The label of option ``index``: A-J, then (log-likelihood only) its 1-based number past the letters."""
    return OPTION_LETTERS[index] if index < len(OPTION_LETTERS) else str(index + 1)


def render_choices(choices: Iterable[str]) -> str:
    """Render options as "A. first\\nB. second..."."""
    return "\n".join(f"{option_label(i)}. {choice}" for i, choice in enumerate(choices))


# Fields added after the first release; left out of the content hash while unset so
# suites stored before they existed keep their hash.
_LATER_ITEM_FIELDS = ("tests", "entry_point", "follow_ups", "option_scores")


def _check_item_fits(manifest: SuiteManifest, item: Item) -> None:
    """Raise ValueError when a valid item does not fit this manifest."""
    task = manifest.task_type
    if item.split not in manifest.splits:
        raise ValueError(f"unknown split {item.split!r}; suite splits are {manifest.splits}")
    if task == "multiple_choice" and not item.is_multiple_choice:
        raise ValueError(f"item {item.id!r} has no choices but the suite is multiple_choice")
    if manifest.scoring == "generate" and len(item.choices or []) > len(OPTION_LETTERS):
        raise ValueError(
            f"item {item.id!r} has {len(item.choices or [])} options; answered by generating a letter at most "
            f"{len(OPTION_LETTERS)} are possible (log-likelihood scoring takes up to {MAX_OPTIONS})"
        )
    if task != "multiple_choice" and item.is_multiple_choice:
        raise ValueError(f"item {item.id!r} has choices but the suite is {task}")
    if task == "generation" and item.reference is None:
        raise ValueError("generation items need 'reference'")
    if task == "code" and not (item.tests or "").strip():
        raise ValueError(f"item {item.id!r} has no 'tests' but the suite is code")
    if task != "code" and (item.tests is not None or item.entry_point is not None):
        raise ValueError(f"item {item.id!r} has 'tests' or 'entry_point' but the suite is {task}")
    if task != "judge" and item.follow_ups is not None:
        raise ValueError(f"item {item.id!r} has 'follow_ups' but only judge suites have conversations")


def _canonical_item(item: Item) -> dict[str, Any]:
    data = item.model_dump(mode="json")
    for field in _LATER_ITEM_FIELDS:
        if data[field] is None:
            del data[field]
    return data


class Suite:
    """A manifest plus its items."""

    def __init__(self, manifest: SuiteManifest, items: Iterable[Item]) -> None:
        self.manifest = manifest
        self.items = list(items)
        seen: set[str] = set()
        for item in self.items:
            if item.id in seen:
                raise SuiteError(f"duplicate item id {item.id!r}")
            seen.add(item.id)
            try:
                _check_item_fits(manifest, item)
            except ValueError as exc:
                raise SuiteError(str(exc)) from None
        self._extract = EXTRACTORS.get(manifest.answer_extraction)
        self._metric = None if manifest.metric == JUDGE_METRIC else get_metric(manifest.metric)

    @property
    def name(self) -> str:
        """The manifest's name."""
        return self.manifest.name

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"Suite({self.manifest.name!r}, version={self.manifest.version!r}, items={len(self.items)})"

    def content_hash(self) -> str:
        """SHA-256 of the canonical JSON of manifest and items; any edit changes it."""
        payload = {
            "manifest": self.manifest.canonical(),
            "items": [_canonical_item(item) for item in self.items],
        }
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def split(self, name: str) -> list[Item]:
        """Items of split ``name``."""
        if name not in self.manifest.splits:
            raise SuiteError(f"unknown split {name!r}; suite {self.name!r} has {self.manifest.splits}")
        return [item for item in self.items if item.split == name]

    def _format(self, text: str, choices: list[str] | None) -> str:
        return self.manifest.prompt_template.format(input=text, choices=render_choices(choices or []))

    def render_prompt(self, item: Item) -> str:
        """Few-shot examples followed by the item, all rendered with the manifest's template."""
        shots = [
            self._format(shot.input, shot.choices) + self.manifest.target_delimiter + shot.output
            for shot in self.manifest.few_shot
        ]
        return FEWSHOT_DELIMITER.join([*shots, self._format(item.input, item.choices)])

    def reference_answer(self, item: Item) -> str:
        """The expected answer: the gold letter for MC items, else the reference text."""
        # Item validation guarantees gold for MC items and a reference otherwise.
        if item.is_multiple_choice and item.gold is not None:
            return option_label(item.gold)
        return item.reference or ""

    def extract(self, generated_text: str) -> str:
        """The answer the manifest's extractor finds in ``generated_text``."""
        return self._extract(generated_text)

    def score(self, item: Item, generated_text: str) -> tuple[str, float]:
        """Extract the answer from ``generated_text`` and score it; returns (prediction, score).

        Code items run the program with the item's tests (see ensembles.metrics.code);
        judge suites cannot be scored per item and raise SuiteError.
        """
        if self._metric is None:
            raise SuiteError(f"suite {self.name!r} is a judge suite: a judge model scores it, not a per-item metric")
        prediction = self._extract(generated_text)
        if self.manifest.task_type == "code":
            return prediction, self._metric.score(
                self.program(item, prediction), build_test_code(item.tests or "", item.entry_point)
            )
        if item.option_scores is not None:
            return prediction, self.option_credit(item, prediction)
        return prediction, self._metric.score(prediction, self.reference_answer(item))

    def option_credit(self, item: Item, label: str) -> float:
        """What choosing the option ``label`` earns: its option score (BIG-bench's multiple_choice_grade)."""
        labels = [option_label(i) for i in range(len(item.choices or []))]
        return float((item.option_scores or [])[labels.index(label)]) if label in labels else 0.0

    @property
    def by_loglikelihood(self) -> bool:
        """True when items are answered by the log-likelihood of each option rather than by generating."""
        return self.manifest.scoring != "generate"

    def option_requests(self, item: Item) -> list[tuple[str, str]]:
        """(context, continuation) per option: the rendered prompt, then the option's text."""
        prompt = self.render_prompt(item)
        return [(prompt, self.manifest.target_delimiter + choice) for choice in item.choices or []]

    def score_options(self, item: Item, logliks: list[float]) -> tuple[str, float, dict[str, float]]:
        """Pick the most likely option; returns (letter, score, each option's letter -> log-likelihood used).

        ``loglikelihood_norm`` divides each by the option's length in characters (lm-eval's acc_norm).
        """
        choices = item.choices or []
        if len(logliks) != len(choices):
            raise SuiteError(f"item {item.id!r} has {len(choices)} options but got {len(logliks)} log-likelihoods")
        if self.manifest.scoring == "loglikelihood_norm":
            delimiter = self.manifest.target_delimiter
            logliks = [ll / max(len(delimiter + c), 1) for ll, c in zip(logliks, choices, strict=True)]
        per_option = {option_label(i): round(float(ll), 6) for i, ll in enumerate(logliks)}
        # max() keeps the first of equal values: ties go to the earlier option, deterministically.
        best = max(range(len(choices)), key=lambda i: logliks[i])
        letter = option_label(best)
        if item.option_scores is not None:
            return letter, self.option_credit(item, letter), per_option
        metric = get_metric(self.manifest.metric)  # multiple-choice suites always have a per-item metric
        return letter, metric.score(letter, self.reference_answer(item)), per_option

    def program(self, item: Item, completion: str) -> str:
        """The program a code completion stands for: the prompt plus its continuation.

        A completion that itself defines the entry point (a model restating the whole
        function) is taken as the full program.
        """
        if item.entry_point and re.search(rf"^(?:async\s+)?def\s+{item.entry_point}\s*\(", completion, re.MULTILINE):
            return completion
        return item.input + completion


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def _top_level_key_lines(text: str) -> dict[str, int]:
    """1-based line of each top-level key in a YAML mapping, for error messages."""
    try:
        node = compose_yaml(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {key.value: key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)}


def _load_manifest(text: str, file: str) -> SuiteManifest:
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"invalid YAML: {problem}", file=file, line=line) from None
    if not isinstance(data, dict):
        raise SuiteError("manifest must be a YAML mapping", file=file, line=1)
    try:
        return SuiteManifest.model_validate(data)
    except ValidationError as exc:
        first_loc = exc.errors()[0]["loc"]
        line = _top_level_key_lines(text).get(str(first_loc[0])) if first_loc else None
        raise SuiteError(_validation_message(exc), file=file, line=line) from None


def check_size(text: str, file: str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Raise SuiteError naming ``file`` when ``text`` is over ``max_bytes`` of UTF-8."""
    # Every character takes at least one byte, so the cheap length check settles most cases.
    if len(text) > max_bytes or len(text.encode("utf-8")) > max_bytes:
        raise SuiteError(f"file is larger than the limit of {max_bytes:,} bytes", file=file)


def check_item_count(count: int, file: str, line: int | None = None, max_items: int = DEFAULT_MAX_ITEMS) -> None:
    """Raise SuiteError naming ``file`` once ``count`` items exceed ``max_items``."""
    if count > max_items:
        raise SuiteError(f"more than the limit of {max_items:,} items", file=file, line=line)


def load_suite(
    manifest_text: str,
    items_jsonl: str,
    *,
    manifest_file: str = "suite.yaml",
    items_file: str = "items.jsonl",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Suite:
    """Parse and validate a YAML manifest and JSONL items; errors name the file and line.

    Either file over ``max_bytes`` bytes, or more than ``max_items`` items, is refused whole.
    """
    check_size(manifest_text, manifest_file, max_bytes)
    check_size(items_jsonl, items_file, max_bytes)
    manifest = _load_manifest(manifest_text, manifest_file)
    items: list[Item] = []
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(items_jsonl.splitlines(), start=1):
        if not raw.strip():
            continue
        check_item_count(len(items) + 1, items_file, lineno, max_items)
        try:
            data: Any = load_json(raw)
        except json.JSONDecodeError as exc:
            raise SuiteError(
                f"invalid JSON: {exc.msg} (column {exc.colno})",
                file=items_file,
                line=lineno,
            ) from None
        if not isinstance(data, dict):
            raise SuiteError("each line must be a JSON object", file=items_file, line=lineno)
        try:
            item = Item.model_validate(data)
            _check_item_fits(manifest, item)
        except ValidationError as exc:
            raise SuiteError(_validation_message(exc), file=items_file, line=lineno) from None
        except ValueError as exc:
            raise SuiteError(str(exc), file=items_file, line=lineno) from None
        if item.id in seen:
            raise SuiteError(
                f"duplicate item id {item.id!r} (first on line {seen[item.id]})",
                file=items_file,
                line=lineno,
            )
        seen[item.id] = lineno
        items.append(item)
    if not items:
        raise SuiteError("suite has no items", file=items_file)
    return Suite(manifest, items)


class _ReadableDumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings (prompt templates) as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and value.strip() and value == value.rstrip(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ReadableDumper.add_representer(str, _represent_str)


def dump_suite(suite: Suite) -> tuple[str, str]:
    """Serialize ``suite`` to (manifest YAML, items JSONL); the inverse of load_suite."""
    manifest_text = yaml.dump(
        suite.manifest.model_dump(mode="json", exclude_none=True),
        Dumper=_ReadableDumper,
        sort_keys=False,
        allow_unicode=True,
    )
    items_jsonl = "".join(
        json.dumps(item.model_dump(mode="json", exclude_none=True), ensure_ascii=False) + "\n" for item in suite.items
    )
    return manifest_text, items_jsonl
