"""Importing suites into the database and turning rows back into library suites."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import yaml
from django.conf import settings
from django.db import IntegrityError, transaction

from arena.benchmarks.models import Suite, SuiteItem
from arena.teams.models import Team
from ensembles.errors import SuiteError
from ensembles.parsing import load_yaml
from ensembles.suites import Item, SuiteManifest, import_bigbench, import_csv, import_lm_eval, load_suite
from ensembles.suites import Suite as LibSuite

# What each upload format reads: {role: what the file is}. Roles are the form/API field names.
UPLOAD_FORMATS: dict[str, dict[str, str]] = {
    "suite": {"manifest": "suite manifest (YAML)", "items": "items (JSONL)"},
    "bigbench": {"task": "BIG-bench task.json"},
    "lm_eval": {
        "config": "lm-evaluation-harness task (YAML)",
        "validation": "dev documents (JSONL)",
        "test": "test documents (JSONL)",
    },
    "csv": {"csv": "items (CSV with a header row)"},
}


@dataclass(frozen=True)
class UploadedText:
    """One uploaded file: the name it came with and its text."""

    name: str
    text: str


def decode_upload(name: str, data: bytes, max_bytes: int | None = None) -> UploadedText:
    """Check the size and decode UTF-8 (a BOM is dropped); errors name the file."""
    limit = max_bytes or settings.ARENA_SUITE_MAX_BYTES
    if len(data) > limit:
        raise SuiteError(f"file is larger than the limit of {limit:,} bytes", file=name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SuiteError(f"not UTF-8 text (byte {exc.start})", file=name, line=line) from None
    return UploadedText(name, text)


def parse_upload(fmt: str, files: Mapping[str, UploadedText], options: Mapping[str, Any] | None = None) -> LibSuite:
    """Build a library Suite from uploaded files in one of UPLOAD_FORMATS; SuiteError names file and line.

    ``options``: ``name`` (bigbench, csv), ``seed`` (dev/test split of formats without splits),
    ``columns``/``metric``/``prompt_template``/``answer_extraction`` (csv).
    """
    if fmt not in UPLOAD_FORMATS:
        raise SuiteError(f"unknown format {fmt!r}; choose one of {', '.join(UPLOAD_FORMATS)}")
    opts = dict(options or {})
    limits = {"max_bytes": settings.ARENA_SUITE_MAX_BYTES, "max_items": settings.ARENA_SUITE_MAX_ITEMS}
    required = {"suite": ["manifest", "items"], "bigbench": ["task"], "lm_eval": ["config"], "csv": ["csv"]}[fmt]
    missing = [role for role in required if role not in files]
    if missing:
        raise SuiteError(f"a {fmt} upload needs {' and '.join(UPLOAD_FORMATS[fmt][r] for r in missing)}")
    seed = int(opts.get("seed") or 0)
    if fmt == "suite":
        suite = load_suite(
            files["manifest"].text,
            files["items"].text,
            manifest_file=files["manifest"].name,
            items_file=files["items"].name,
            **limits,
        )
    elif fmt == "bigbench":
        suite = import_bigbench(
            files["task"].text, file=files["task"].name, name=opts.get("name") or None, seed=seed, **limits
        )
    elif fmt == "lm_eval":
        docs = {role: files[role] for role in ("validation", "test") if role in files}
        if not docs:
            raise SuiteError("an lm_eval upload needs its documents: a validation and/or a test JSONL file")
        if sum(len(f.text) for f in docs.values()) > limits["max_bytes"]:
            raise SuiteError(f"documents are larger than the limit of {limits['max_bytes']:,} bytes")
        split_name = _lm_eval_split_names(files["config"].text)
        suite = import_lm_eval(
            files["config"].text,
            {split_name[role]: f.text for role, f in docs.items()},
            yaml_file=files["config"].name,
            data_files={split_name[role]: f.name for role, f in docs.items()},
            seed=seed,
            **limits,
        )
    else:
        if not opts.get("name"):
            raise SuiteError("a CSV upload needs a suite name")
        columns = opts.get("columns")
        if not isinstance(columns, Mapping) or not columns.get("input"):
            raise SuiteError("a CSV upload needs a column mapping naming at least the input column")
        extra = {k: opts[k] for k in ("prompt_template", "answer_extraction") if opts.get(k)}
        suite = import_csv(
            files["csv"].text,
            columns,
            name=str(opts["name"]),
            file=files["csv"].name,
            seed=seed,
            metric=str(opts.get("metric") or "exact_match"),
            **extra,
            **limits,
        )
    _refuse_nul(suite)
    return suite


def _lm_eval_split_names(config_text: str) -> dict[str, str]:
    """The split names the task YAML gives its dev and test documents (validation_split, test_split)."""
    try:
        config = load_yaml(config_text)
    except yaml.YAMLError:
        config = None  # import_lm_eval reports the YAML error with its line
    config = config if isinstance(config, dict) else {}
    return {
        "validation": str(config.get("validation_split") or "validation"),
        "test": str(config.get("test_split") or "test"),
    }


def _refuse_nul(suite: LibSuite) -> None:
    # PostgreSQL text and jsonb cannot hold U+0000; refuse it here rather than fail on insert.
    for item in suite.items:
        if "\\u0000" in json.dumps(item.model_dump(mode="json"), ensure_ascii=True):
            raise SuiteError(f"item {item.id!r} contains a NUL character")
    if "\\u0000" in json.dumps(suite.manifest.model_dump(mode="json"), ensure_ascii=True):
        raise SuiteError("the manifest contains a NUL character")


def upload_suite(
    team: Team, fmt: str, files: Mapping[str, UploadedText], options: Mapping[str, Any] | None = None
) -> tuple[Suite, bool]:
    """Parse and store an upload whole, or nothing; returns (row, created). Same content twice: same row."""
    suite = parse_upload(fmt, files, options)
    existed = Suite.objects.filter(team=team, content_hash=suite.content_hash()).exists()
    return import_suite(team, suite), not existed


def import_suite(team: Team, suite: LibSuite) -> Suite:
    """Store ``suite`` for ``team`` whole, or nothing; the same content twice gives the same row."""
    digest = suite.content_hash()
    for _ in range(3):
        existing = Suite.objects.filter(team=team, content_hash=digest).first()
        if existing is not None:
            return existing
        version = suite.manifest.version
        if Suite.objects.filter(team=team, name=suite.manifest.name, version=version).exists():
            # Other content under a version already used: a new version, so earlier results stay
            # attached to the content they were computed on.
            version = f"{version}+{digest[:8]}"
        try:
            return _store(team, suite, version, digest)
        except IntegrityError:
            continue  # a concurrent upload stored this content or took this version first: look again
    raise SuiteError(f"could not store suite {suite.name!r}: it is being changed concurrently; try again")


def _store(team: Team, suite: LibSuite, version: str, digest: str) -> Suite:
    manifest = suite.manifest
    with transaction.atomic():
        row = Suite.objects.create(
            team=team,
            name=manifest.name,
            version=version,
            content_hash=digest,
            task_type=manifest.task_type,
            description=manifest.description,
            manifest=manifest.model_dump(mode="json"),
        )
        SuiteItem.objects.bulk_create(
            (
                SuiteItem(
                    suite=row,
                    key=item.id,
                    split=item.split,
                    position=i,
                    data=item.model_dump(mode="json", exclude={"id", "split"}),
                )
                for i, item in enumerate(suite.items)
            ),
            batch_size=2000,
        )
    return row


def library_item(row: SuiteItem) -> Item:
    return Item(id=row.key, split=row.split, **row.data)


@lru_cache(maxsize=32)
def _library_suite(suite_id: int, content_hash: str) -> LibSuite:
    row = Suite.objects.get(pk=suite_id)
    items = [library_item(i) for i in row.items.order_by("position")]
    return LibSuite(SuiteManifest.model_validate(row.manifest), items)


def library_suite(row: Suite) -> LibSuite:
    """The ensembles Suite for a stored row, cached per process (rows never change)."""
    return _library_suite(row.pk, row.content_hash)
