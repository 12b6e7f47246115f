"""JSON API for the registry: model entries, blends, and merge entries' materialization.

Every entry is looked up within the token's team, so other teams' names answer 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.http import Http404
from ninja import Field, Router, Schema

from arena.registry import lifecycle, merges, services
from arena.registry.models import Entry, Kind
from arena.teams.access import require_role
from arena.teams.models import Role

router = Router()
merges_router = Router(tags=["merges"])
router.add_router("/", merges_router)


class EntryOut(Schema):
    id: int
    name: str
    kind: str
    strategy: str
    params: dict[str, Any]
    members: list[str]
    config: dict[str, Any]
    archived_at: datetime | None = None


class ModelIn(Schema):
    name: str = Field(..., min_length=1, max_length=100)
    kind: Literal["hf", "gguf", "openai", "merge"]
    config: dict[str, Any]
    api_key: str = Field("", max_length=500)
    description: str = Field("", max_length=2000)


class BlendIn(Schema):
    name: str = Field(..., min_length=1, max_length=100)
    strategy: str = Field(..., min_length=1, max_length=60)
    params: dict[str, Any] = {}
    # How many a strategy takes is checked by register_blend (self-consistency samples one member).
    members: list[str] = Field(..., min_length=1, max_length=16)
    description: str = Field("", max_length=2000)


def _entry_out(e: Entry) -> dict:
    return {
        "id": e.pk,
        "name": e.name,
        "kind": e.kind,
        "strategy": e.strategy,
        "params": e.params,
        "members": [bm.member.name for bm in e.member_links.all()],
        "config": e.config,
        "archived_at": e.archived_at,
    }


@router.get("/entries", response=list[EntryOut])
def list_entries(request):
    qs = Entry.objects.filter(team=request.auth.team).prefetch_related("member_links__member")
    return [_entry_out(e) for e in qs]


@router.post("/entries", response={201: EntryOut})
def create_entry(request, body: ModelIn):
    """Register a model entry, once it is probed: a local model's config or GGUF header is read (never its
    weights), an endpoint answers a one-token request. An encoder, a truncated or corrupt file, or an
    endpoint that fails its test call is a 422 saying why, and nothing is stored."""
    require_role(request, Role.MEMBER)
    entry = services.register_model(
        request.auth.team,
        name=body.name,
        kind=body.kind,
        config=body.config,
        api_key=body.api_key,
        description=body.description,
    )
    return 201, _entry_out(entry)


def _entry(request, name: str) -> Entry:
    entry = Entry.objects.filter(team=request.auth.team, name=name).first()
    if entry is None:
        raise Http404("not found")
    return entry


# Before PUT and DELETE /entries/{name}: a name may hold slashes, so the longer routes must match first.
@router.post("/entries/{path:name}/archive", response=EntryOut)
def archive_entry(request, name: str):
    """Take an entry off the boards, the run pickers and /v1's list; its runs keep showing it."""
    require_role(request, Role.MEMBER)
    entry = _entry(request, name)
    lifecycle.archive(entry)
    return _entry_out(entry)


@router.post("/entries/{path:name}/unarchive", response=EntryOut)
def unarchive_entry(request, name: str):
    require_role(request, Role.MEMBER)
    entry = _entry(request, name)
    lifecycle.unarchive(entry)
    return _entry_out(entry)


class ModelUpdateIn(Schema):
    kind: Literal["hf", "gguf", "openai", "merge"]
    config: dict[str, Any]
    api_key: str = Field("", max_length=500, description="openai: a new key; empty keeps the stored one")
    description: str | None = Field(None, max_length=2000, description="left out: keeps the stored one")


@router.put("/entries/{path:name}", response={200: EntryOut, 201: EntryOut})
def put_entry(request, name: str, body: ModelUpdateIn):
    """Register a model entry under ``name`` (201), or point the existing one at a new checkpoint (200).

    The kind cannot change; earlier runs keep the results they computed. Refused (422) while the
    entry is in a run that has not finished.
    """
    require_role(request, Role.MEMBER)
    entry, created = services.put_model(
        request.auth.team,
        name=name,
        kind=body.kind,
        config=body.config,
        api_key=body.api_key,
        description=body.description,
    )
    return (201 if created else 200), _entry_out(entry)


@router.delete("/entries/{path:name}", response=dict[str, Any])
def delete_entry(request, name: str):
    """Delete an entry with its results in every run; 409 while a blend or a merge recipe uses it, or
    while it is in an unfinished run. Answers what went with it, and what was kept."""
    require_role(request, Role.MEMBER)
    return {"deleted": lifecycle.delete(_entry(request, name)).as_dict()}


@router.post("/blends", response={201: EntryOut})
def create_blend(request, body: BlendIn):
    require_role(request, Role.MEMBER)
    entry = services.register_blend(
        request.auth.team,
        name=body.name,
        strategy=body.strategy,
        params=body.params,
        members=body.members,
        description=body.description,
    )
    return 201, _entry_out(entry)


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


@merges_router.get("/merges", response=list[MergeOut])
def list_merges(request):
    """The team's merge entries and where the building of their weights stands."""
    return [merge_out(e) for e in Entry.objects.filter(team=request.auth.team, kind=Kind.MERGE)]


# Before GET /merges/{merge}: a merge name may hold slashes, so the longer route must match first.
@merges_router.post("/merges/{path:merge}/materialize", response={202: MergeOut})
def materialize(request, merge: str):
    """Start again the materialization of a merge that failed (422 while it is queued, running or done)."""
    require_role(request, Role.MEMBER)
    entry = _merge(request, merge)
    merges.restart(entry)
    return 202, merge_out(entry)


@merges_router.get("/merges/{path:merge}", response=MergeOut)
def merge_detail(request, merge: str):
    """A merge's state (queued, running, done, failed), the reason it failed, its directory and provenance."""
    return merge_out(_merge(request, merge))
