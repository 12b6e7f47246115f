"""Merge entries: checking a recipe against its members, and building its weights on the gpu queue.

A merge entry runs like an hf entry once materialized: ``backend_for`` (arena/registry/backends.py)
gives it a transformers backend over the merged directory, so the merge itself is what runs and what
the leaderboard ranks (kind ``merge``), with its recipe as config and the build's provenance on its row.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F
from django.utils import timezone

from arena.core import queue
from arena.core.routing import gpu_queue
from arena.registry.backends import backend_for, built_dir
from arena.registry.models import Entry, Kind, Materialization, MergeState
from ensembles.backends import BackendError
from ensembles.backends.base import digest_json
from ensembles.errors import EnsembleError
from ensembles.merging import (
    MemberInfo,
    MergeError,
    MergeRecipe,
    check_members,
    describe_directory,
    materialize,
    read_provenance,
)

log = logging.getLogger(__name__)

MATERIALIZE_TASK = "arena.registry.tasks.materialize_merge"


class WaitForMember(Exception):
    """A member is itself a merge still being built: try again later."""


# --- Registration ---------------------------------------------------------------------------


def check_recipe_members(recipe: MergeRecipe, found: dict[str, Entry]) -> None:
    """Refuse members that cannot be merged (architecture, shapes, layers, vocabulary), naming them.

    A member that is a merge not built yet is left to the same check made again when it runs.
    """
    infos = {}
    for name in recipe.entry_names():
        info = _member_info(found[name])
        if info is not None:
            infos[name] = info
    try:
        check_members(recipe, infos)
    except MergeError as exc:
        raise ValidationError({"config": str(exc)}) from None


def _member_info(entry: Entry) -> MemberInfo | None:
    try:
        if entry.kind == Kind.MERGE:
            done = Materialization.objects.filter(entry=entry, state=MergeState.DONE).first()
            if done is None:
                return None
            info = describe_directory(entry.name, Path(done.path))
            return replace(info, location=str(Path(done.path).resolve()))
        backend: Any = backend_for(entry)
        if entry.kind == Kind.GGUF and backend.exported_dir() is None:
            # The header has the shapes; exporting takes a minute, so it waits for the merge itself.
            info = MemberInfo.from_config(entry.name, backend.model_config())
            location = str(backend._file().resolve())
        else:
            info = describe_directory(entry.name, backend.safetensors_dir())
            location = str(backend.safetensors_dir().resolve())
        # Two entries over one set of weights would reach mergekit as duplicate inputs.
        return replace(info, fingerprint=backend.fingerprint(), location=location)
    except (BackendError, EnsembleError, OSError) as exc:
        raise ValidationError({"config": f"member {entry.name!r}: {exc}"}) from None


def start(entry: Entry) -> Materialization:
    """Queue the building of a merge entry's weights (again); the task is sent once the transaction commits."""
    now = timezone.now()
    m, created = Materialization.objects.get_or_create(entry=entry)
    if not created:
        Materialization.objects.filter(pk=m.pk).update(
            state=MergeState.QUEUED,
            reason="",
            attempt=F("attempt") + 1,
            path="",
            provenance={},
            queued_at=now,
            started_at=None,
            finished_at=None,
        )
        m.refresh_from_db()
    # Any GPU worker may build it; with shards, the merge's id picks one queue for good.
    queue.send_on_commit(MATERIALIZE_TASK, m.pk, m.attempt, queue=gpu_queue(f"merge:{m.pk}"))
    return m


def restart(entry: Entry) -> Materialization:
    """Start again a merge whose materialization failed, or has been stuck longer than a task may run.

    Harmless even if the stuck one was alive after all: the new attempt makes the old one's
    message and result count for nothing, and the same inputs find their directory built.
    """
    if entry.kind != Kind.MERGE:
        raise ValidationError({"entry": f"{entry.name!r} is a {entry.kind} entry; only merges are materialized"})
    stuck_since = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    with transaction.atomic():
        m = Materialization.objects.select_for_update().filter(entry=entry).first()
        stuck = m is not None and m.state != MergeState.DONE and (m.started_at or m.queued_at) < stuck_since
        if m is not None and m.state != MergeState.FAILED and not stuck:
            raise ValidationError(
                {
                    "state": f"{entry.name!r} is {m.state}; only a failed materialization, or one stuck for "
                    "longer than a task may run, is started again"
                }
            )
        return start(entry)


def state_of(entry: Entry) -> dict[str, Any]:
    """What the entry's page and the API show of a merge's materialization."""
    m = Materialization.objects.filter(entry=entry).first()
    if m is None:
        return {"state": "not started", "reason": "", "attempt": 0, "path": "", "provenance": {}}
    return {
        "state": m.state,
        "reason": m.reason,
        "attempt": m.attempt,
        "path": m.path,
        "provenance": m.provenance,
        "queued_at": m.queued_at,
        "started_at": m.started_at,
        "finished_at": m.finished_at,
    }


# --- Building (the gpu queue) ---------------------------------------------------------------


def run(materialization_id: int, attempt: int) -> None:
    """Build one merge's weights: claim it, merge with mergekit, record done or failed with the reason.

    The claim takes a queued materialization, or a running one of the same attempt (the message is
    only delivered again once its first worker is gone); a restarted one has a new attempt, so an
    old message finds nothing. The directory is named by the recipe and the members' fingerprints,
    and written whole or not at all, so building it twice changes nothing.
    """
    claimed = Materialization.objects.filter(
        pk=materialization_id, attempt=attempt, state__in=(MergeState.QUEUED, MergeState.RUNNING)
    ).update(state=MergeState.RUNNING, started_at=timezone.now(), reason="")
    if not claimed:
        return
    m = Materialization.objects.select_related("entry__team").get(pk=materialization_id)
    entry = m.entry
    mine = Materialization.objects.filter(pk=m.pk, attempt=attempt, state=MergeState.RUNNING)
    try:
        recipe = MergeRecipe.model_validate(entry.config)
        dirs, fingerprints = _member_dirs(entry, recipe)
        key = digest_json({"recipe": recipe.model_dump(mode="json"), "members": fingerprints})
        target = built_dir(entry.team_id) / f"merge-{entry.pk}-{key[:16]}"
        materialize(recipe, dirs, target, fingerprints=fingerprints)
        provenance = read_provenance(target)
    except (WaitForMember, OperationalError, InterfaceError) as exc:
        mine.update(state=MergeState.QUEUED, started_at=None, reason=str(exc))
        raise
    except Exception as exc:
        # Whatever stops a merge (a mismatch, a missing file, mergekit's own errors, the time limit)
        # is the team's to read on the entry; the worker goes on with other work.
        log.warning("merge %s failed: %s", entry.name, exc, exc_info=not isinstance(exc, EnsembleError))
        mine.update(state=MergeState.FAILED, reason=str(exc)[:4000], finished_at=timezone.now())
        return
    done = mine.update(state=MergeState.DONE, path=str(target), provenance=provenance, finished_at=timezone.now())
    if not done and not Entry.objects.filter(pk=entry.pk).exists():
        # Deleted (its team perhaps with it) while it was built: nothing will ever read these weights.
        shutil.rmtree(target, ignore_errors=True)
        return
    log.info("merge %s materialized at %s", entry.name, target)


def give_up(materialization_id: int, attempt: int, reason: str) -> None:
    """Mark failed a materialization whose retries ran out."""
    Materialization.objects.filter(
        pk=materialization_id, attempt=attempt, state__in=(MergeState.QUEUED, MergeState.RUNNING)
    ).update(state=MergeState.FAILED, reason=reason, finished_at=timezone.now())


def _member_dirs(entry: Entry, recipe: MergeRecipe) -> tuple[dict[str, Path], dict[str, str]]:
    """Each member's safetensors directory (a GGUF exported first) and fingerprint."""
    names = recipe.entry_names()
    found = {e.name: e for e in Entry.objects.filter(team=entry.team, name__in=names)}
    missing = [n for n in names if n not in found]
    if missing:
        raise MergeError(f"the recipe names entries that no longer exist: {', '.join(missing)}")
    dirs: dict[str, Path] = {}
    fingerprints: dict[str, str] = {}
    for name in names:
        member = found[name]
        if member.kind not in (Kind.HF, Kind.GGUF, Kind.MERGE):
            raise MergeError(f"member {name!r} is a {member.kind} entry; only local weights can be merged")
        if member.kind == Kind.MERGE:
            inner = Materialization.objects.filter(entry=member).first()
            if inner is None or inner.state in (MergeState.QUEUED, MergeState.RUNNING):
                raise WaitForMember(f"waiting for member {name!r}, a merge still being built")
            if inner.state == MergeState.FAILED:
                raise MergeError(f"member {name!r} failed to materialize: {inner.reason}")
        backend: Any = backend_for(member)
        dirs[name] = backend.safetensors_dir()
        fingerprints[name] = backend.fingerprint()
    return dirs, fingerprints
