"""Importing suites into the database and turning rows back into library suites."""

from __future__ import annotations

from functools import lru_cache

from django.db import transaction

from arena.benchmarks.models import Suite, SuiteItem
from arena.teams.models import Team
from ensembles.suites import Item, SuiteManifest
from ensembles.suites import Suite as LibSuite


def import_suite(team: Team, suite: LibSuite) -> Suite:
    """Store ``suite`` for ``team`` whole, or nothing; the same content twice gives the same row."""
    digest = suite.content_hash()
    existing = Suite.objects.filter(team=team, content_hash=digest).first()
    if existing is not None:
        return existing
    manifest = suite.manifest
    version = manifest.version
    if Suite.objects.filter(team=team, name=manifest.name, version=version).exists():
        # Other content under a version already used: a new version, so earlier results stay
        # attached to the content they were computed on.
        version = f"{manifest.version}+{digest[:8]}"
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
            SuiteItem(
                suite=row,
                key=item.id,
                split=item.split,
                position=i,
                data=item.model_dump(mode="json", exclude={"id", "split"}),
            )
            for i, item in enumerate(suite.items)
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
