"""BIG-bench JSON tasks (``task.json``): ``target_scores`` examples are multiple choice, ``target`` ones generation."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ensembles.errors import SuiteError
from ensembles.parsing import load_json
from ensembles.suites.importers.base import FORMATS, FileKey, SuiteFormat, TextFile, seed_of
from ensembles.suites.importers.common import DEV_RATIO, ItemBuilder, build_manifest, hash_split, slug
from ensembles.suites.model import DEFAULT_MAX_BYTES, DEFAULT_MAX_ITEMS, Suite, check_item_count, check_size

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
    manifest = build_manifest(
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
    builder = ItemBuilder(manifest, file, max_items)
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


@FORMATS.register("bigbench", pretty_name="BIG-bench", reference_url="https://github.com/google/BIG-bench")
class BigBench(SuiteFormat):
    summary = "BIG-bench task.json"
    files = (FileKey("task", "BIG-bench task.json", "task.json"),)
    options = ("name", "seed")

    @classmethod
    def parse(
        cls, files: Mapping[str, TextFile], options: Mapping[str, Any], *, max_bytes: int, max_items: int
    ) -> Suite:
        task = files["task"]
        return import_bigbench(
            task.text,
            file=task.name,
            name=options.get("name") or None,
            seed=seed_of(options),
            max_bytes=max_bytes,
            max_items=max_items,
        )
