"""JSON API for merge entries' materialization (mounted on /api/v1 by arena/leaderboard/api.py).

Every merge is looked up within the token's team, so other teams' names answer 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import Http404
from ninja import Router, Schema
from ninja.errors import HttpError

from arena.registry import merges
from arena.registry.models import Entry, Kind
from arena.teams.models import ROLE_RANK, Role

router = Router(tags=["merges"])


def _require(request, role: str) -> None:
    if ROLE_RANK[Role(request.auth.role)] < ROLE_RANK[Role(role)]:
        raise HttpError(403, f"this token's role cannot do this (needs {role})")


class MergeOut(Schema):
    name: str
    recipe: dict[str, Any]
    state: str
    reason: str
    attempt: int
    path: str
    provenance: dict[str, Any]
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


def _merge(request, name: str) -> Entry:
    entry = Entry.objects.filter(team=request.auth.team, name=name, kind=Kind.MERGE).select_related("team").first()
    if entry is None:
        raise Http404("not found")
    return entry


def merge_out(entry: Entry) -> dict[str, Any]:
    return {"name": entry.name, "recipe": entry.config, **merges.state_of(entry)}


@router.get("/merges", response=list[MergeOut])
def list_merges(request):
    """The team's merge entries and where the building of their weights stands."""
    return [merge_out(e) for e in Entry.objects.filter(team=request.auth.team, kind=Kind.MERGE)]


# Before GET /merges/{merge}: a merge name may hold slashes, so the longer route must match first.
@router.post("/merges/{path:merge}/materialize", response={202: MergeOut})
def materialize(request, merge: str):
    """Start again the materialization of a merge that failed (422 while it is queued, running or done)."""
    _require(request, Role.MEMBER)
    entry = _merge(request, merge)
    merges.restart(entry)
    return 202, merge_out(entry)


@router.get("/merges/{path:merge}", response=MergeOut)
def merge_detail(request, merge: str):
    """A merge's state (queued, running, done, failed), the reason it failed, its directory and provenance."""
    return merge_out(_merge(request, merge))
