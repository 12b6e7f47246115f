"""BIG-bench JSON tasks (``task.json``): ``target_scores`` examples are multiple choice, ``target`` ones generation.

Prompts are built from the task's own prefixes as BIG-bench's JSON task builds its zero-shot prompts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from ensembles.errors import SuiteError
from ensembles.parsing import load_json
from ensembles.suites.importers.base import FORMATS, FileKey, SuiteFormat, TextFile, seed_of
from ensembles.suites.importers.common import DEV_RATIO, ItemBuilder, build_manifest, hash_split, slug
from ensembles.suites.model import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_ITEMS,
    MAX_OPTIONS,
    TARGET_DELIMITER,
    Scoring,
    Suite,
    check_item_count,
    check_size,
)

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


# BIG-bench's JSON task defaults (bigbench/api/json_task.py) for the fields a task may leave out.
DEFAULT_INPUT_PREFIX = "\nQ: "
DEFAULT_OUTPUT_PREFIX = "\nA: "
DEFAULT_CHOICE_PREFIX = "\n  choice: "
# The seed of the generator BIG-bench's JSON task shuffles each example's appended choices with,
# one generator drawn in example order, so the choice lists read as BIG-bench shows them.
BIGBENCH_SEED = 42
SCORINGS: tuple[Scoring, ...] = ("loglikelihood", "loglikelihood_norm", "generate")


@dataclass(frozen=True)
class _Prompting:
    """How a task builds its prompts: the task's own fields or BIG-bench's defaults."""

    task_prefix: str
    input_prefix: str
    output_prefix: str
    choice_prefix: str
    append_choices: bool

    @classmethod
    def of(cls, task: dict[str, Any], file: str) -> _Prompting:
        fields = {}
        for key, default in (
            ("task_prefix", ""),
            ("example_input_prefix", DEFAULT_INPUT_PREFIX),
            ("example_output_prefix", DEFAULT_OUTPUT_PREFIX),
            ("choice_prefix", DEFAULT_CHOICE_PREFIX),
        ):
            value = task.get(key, default)
            if not isinstance(value, str):
                raise SuiteError(f"'{key}' must be a string", file=file, line=1)
            fields[key] = value
        append = task.get("append_choices_to_input", True)
        if not isinstance(append, bool):
            raise SuiteError("'append_choices_to_input' must be true or false", file=file, line=1)
        return cls(
            fields["task_prefix"],
            fields["example_input_prefix"],
            fields["example_output_prefix"],
            fields["choice_prefix"],
            append,
        )


def _escape(text: str) -> str:
    """``text`` as literal text inside a prompt template."""
    return text.replace("{", "{{").replace("}", "}}")


def import_bigbench(
    text: str,
    *,
    file: str = "task.json",
    name: str | None = None,
    seed: int = 0,
    dev_ratio: float = DEV_RATIO,
    scoring: Scoring = "loglikelihood",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_items: int = DEFAULT_MAX_ITEMS,
) -> Suite:
    """A BIG-bench JSON task, prompted as BIG-bench's JSON task prompts it.

    ``target_scores`` examples become multiple choice: by default each option is scored by its
    log-likelihood after the task's zero-shot prompt (task_prefix, example_input_prefix, the input,
    the choices shuffled after choice_prefix where append_choices_to_input, example_output_prefix);
    ``scoring="generate"`` asks for a letter instead. Every option keeps its target score, which is
    the credit for choosing it (BIG-bench's multiple_choice_grade), so ties for the top are allowed.
    ``target`` examples become generation scored by the task's exact_str_match, bleu or rouge; of
    several targets the first is the reference. Splits come from
    ``hash_split(index, seed=seed, dev_ratio=dev_ratio)``.
    """
    if scoring not in SCORINGS:
        raise SuiteError(f"unknown scoring {scoring!r}; choose one of {', '.join(SCORINGS)}", file=file)
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
    prompting = _Prompting.of(task, file)

    def line_of(index: int) -> int | None:
        starts = _json_array_starts(text, "examples")
        return text.count("\n", 0, starts[index]) + 1 if index < len(starts) else None

    first = examples[0] if isinstance(examples[0], dict) else {}
    multiple_choice = "target_scores" in first
    by_letter = multiple_choice and scoring == "generate"
    stop = task.get("stop_string")
    if multiple_choice:
        metric, extraction = "exact_match", "letter"
        # Answered by a letter, the arena lists lettered options in place of BIG-bench's choice list.
        template = "{input}\n{choices}" + _escape(prompting.output_prefix) if by_letter else "{input}"
    else:
        metrics = [m for m in task.get("metrics", []) if isinstance(m, str)]
        metric = next((_BIGBENCH_METRICS[m] for m in metrics if m in _BIGBENCH_METRICS), "exact_match")
        extraction, template = "first_line", "{input}"
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
        stop=[stop] if isinstance(stop, str) and stop else ["\n"],
        scoring=scoring if multiple_choice else "generate",
        target_delimiter=TARGET_DELIMITER if by_letter else "",
    )
    rng = np.random.RandomState(seed=BIGBENCH_SEED)
    builder = ItemBuilder(manifest, file, max_items)
    for index, example in enumerate(examples):
        split = hash_split(index, seed=seed, dev_ratio=dev_ratio)
        try:
            fields = _bigbench_fields(example, multiple_choice, prompting, rng, by_letter)
            builder.add(None, id=f"ex-{index + 1:05d}", split=split, **fields)
        except ValueError as exc:  # SuiteError included; the line is only worked out for the failing example
            message = exc.message if isinstance(exc, SuiteError) else str(exc)
            raise SuiteError(f"example {index}: {message}", file=file, line=line_of(index)) from None
    return builder.suite()


def _bigbench_fields(
    example: Any, multiple_choice: bool, prompting: _Prompting, rng: np.random.RandomState, by_letter: bool
) -> dict[str, Any]:
    """Item fields for one BIG-bench example; ValueError says what is wrong."""
    if not isinstance(example, dict):
        raise ValueError("must be a JSON object")
    if not isinstance(example.get("input"), str):
        raise ValueError("needs a string 'input'")
    question = prompting.input_prefix + example["input"]
    if multiple_choice:
        scores = example.get("target_scores")
        if not isinstance(scores, dict) or len(scores) < 2:
            raise ValueError("needs 'target_scores' with at least 2 options like the first example")
        if len(scores) > MAX_OPTIONS:
            raise ValueError(f"has {len(scores)} options; at most {MAX_OPTIONS} are supported")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in scores.values()):
            raise ValueError("'target_scores' values must be numbers")
        if not all(0 <= v <= 1 for v in scores.values()):
            raise ValueError("'target_scores' values must lie in [0, 1]")
        choices, values = list(scores), [float(v) for v in scores.values()]
        if by_letter:
            text = prompting.task_prefix + question
        else:
            if prompting.append_choices:
                shown = [str(c) for c in rng.permutation(sorted(choices))]
                question += prompting.choice_prefix + prompting.choice_prefix.join(shown)
            text = prompting.task_prefix + question + prompting.output_prefix
        # The first of the top-scoring options is gold, as BIG-bench's target is; the scores give the credit.
        return {"input": text, "choices": choices, "gold": values.index(max(values)), "option_scores": values}
    target = example.get("target")
    if isinstance(target, list):
        target = target[0] if target and all(isinstance(t, str) for t in target) else None
    if not isinstance(target, str):
        raise ValueError("needs a string 'target' (or a list of them) like the first example")
    return {"input": prompting.task_prefix + question + prompting.output_prefix, "reference": target}


@FORMATS.register("bigbench", pretty_name="BIG-bench", reference_url="https://github.com/google/BIG-bench")
class BigBench(SuiteFormat):
    summary = "BIG-bench task.json"
    files = (FileKey("task", "BIG-bench task.json", "task.json"),)
    options = ("name", "seed", "scoring")

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
            scoring=cast(Scoring, options.get("scoring") or "loglikelihood"),
            max_bytes=max_bytes,
            max_items=max_items,
        )
