"""Importing suites into the database and turning rows back into library suites."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from arena.benchmarks.models import Suite, SuiteItem
from arena.teams.models import Team
from ensembles.errors import SuiteError
from ensembles.suites import Item, SuiteManifest
from ensembles.suites import Suite as LibSuite
from ensembles.suites.importers import parse_files


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
    """Build a library Suite from uploaded files in the upload format ``fmt``; SuiteError names file and line.

    ``files`` are keyed as the format's ``files`` say; ``options`` are those its ``options`` name
    (a suite ``name``, the split ``seed``, CSV ``columns``, ...). The arena's limits apply.
    """
    suite = parse_files(
        fmt,
        files,
        options,
        max_bytes=settings.ARENA_SUITE_MAX_BYTES,
        max_items=settings.ARENA_SUITE_MAX_ITEMS,
    )
    _refuse_nul(suite)
    return suite


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
