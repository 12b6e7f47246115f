"""The JSON API (django-ninja: pydantic schemas and an OpenAPI document at /api/v1/docs).

Authenticated by a team API token as a bearer key; every object is looked up within the
token's team, so other teams' ids answer 404.
"""

from __future__ import annotations

from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.db import DataError
from django.http import Http404
from ninja import Field, NinjaAPI, Schema
from ninja.errors import HttpError
from ninja.security import HttpBearer

from arena.benchmarks.models import Suite
from arena.benchmarks.services import UPLOAD_FORMATS, UploadedText, import_suite, upload_suite
from arena.core.middleware import unstorable_reason
from arena.evaluations import services as evaluations
from arena.evaluations.models import Run
from arena.leaderboard import services, snapshots
from arena.registry import services as registry
from arena.registry.api import router as merges_router
from arena.registry.models import Entry
from arena.schedules.api import router as schedules_router
from arena.search.api import router as search_router
from arena.teams.models import ROLE_RANK, ApiToken, Role
from arena.teams.services import authenticate_token
from ensembles.errors import EnsembleError, SuiteError
from ensembles.suites import get_builtin


class TokenAuth(HttpBearer):
    def authenticate(self, request, token: str) -> ApiToken | None:
        return authenticate_token(token)


api = NinjaAPI(title="Ensemble Arena", version="1", auth=TokenAuth(), urls_namespace="api")
# Schedules, regression notifications and the queue: arena/schedules/api.py.
api.add_router("/", schedules_router)
# Merge entries' materialization: arena/registry/api.py.
api.add_router("/", merges_router)
# Blend searches over a finished run: arena/search/api.py.
api.add_router("/", search_router)


@api.exception_handler(ValidationError)
def validation_error(request, exc: ValidationError):
    detail = exc.message_dict if hasattr(exc, "message_dict") else {"__all__": exc.messages}
    return api.create_response(request, {"detail": detail}, status=422)


@api.exception_handler(Http404)
def not_found(request, exc):
    return api.create_response(request, {"detail": "not found"}, status=404)


@api.exception_handler(DataError)
def unstorable(request, exc: DataError):
    # A value the database cannot hold (a NUL character, a number out of range) is the client's to fix.
    return api.create_response(request, {"detail": f"a value cannot be stored: {unstorable_reason(exc)}"}, status=422)


@api.exception_handler(SuiteError)
def suite_error(request, exc: SuiteError):
    detail = {"error": str(exc), "message": exc.message, "file": exc.file, "line": exc.line}
    return api.create_response(request, {"detail": detail}, status=422)


def _require(request, role: str) -> None:
    if ROLE_RANK[Role(request.auth.role)] < ROLE_RANK[Role(role)]:
        raise HttpError(403, f"this token's role cannot do this (needs {role})")


class EntryOut(Schema):
    id: int
    name: str
    kind: str
    strategy: str
    params: dict[str, Any]
    members: list[str]
    config: dict[str, Any]


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


class SuiteOut(Schema):
    id: int
    name: str
    version: str
    content_hash: str
    task_type: str
    items: int


class BuiltinSuiteIn(Schema):
    name: str = Field(..., min_length=1, max_length=64)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    size: int | None = Field(None, ge=2, le=10000)


class SuiteUploadIn(Schema):
    format: Literal["suite", "bigbench", "lm_eval", "csv"] = Field(
        "suite",
        description="suite: manifest (YAML) + items (JSONL); bigbench: task (task.json); "
        "lm_eval: config (task YAML) + validation and/or test (JSONL); csv: csv + columns + name",
    )
    files: dict[str, str] = Field(..., description="file role -> file text (see format)")
    filenames: dict[str, str] = Field({}, description="file role -> file name, for error messages")
    name: str | None = Field(None, max_length=64, description="suite name (bigbench, csv)")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seed of the dev/test split where the data has none")
    columns: dict[str, Any] | None = Field(None, description="csv: column mapping (input, reference or choices+gold)")
    metric: str | None = Field(None, max_length=40)
    prompt_template: str | None = Field(None, max_length=10000)
    answer_extraction: str | None = Field(None, max_length=40)


class RunIn(Schema):
    suite: str = Field(..., min_length=1, max_length=64, description="suite name (latest version) or id")
    entries: list[str] = Field(..., min_length=1, max_length=100)
    splits: list[str] | None = None
    judge: str | None = Field(None, max_length=100, description="judge suites: the model that compares answers")


def _entry_out(e: Entry) -> dict:
    return {
        "id": e.pk,
        "name": e.name,
        "kind": e.kind,
        "strategy": e.strategy,
        "params": e.params,
        "members": [bm.member.name for bm in e.member_links.all()],
        "config": e.config,
    }


@api.get("/entries", response=list[EntryOut])
def list_entries(request):
    qs = Entry.objects.filter(team=request.auth.team).prefetch_related("member_links__member")
    return [_entry_out(e) for e in qs]


@api.post("/entries", response={201: EntryOut})
def create_entry(request, body: ModelIn):
    _require(request, Role.MEMBER)
    entry = registry.register_model(
        request.auth.team,
        name=body.name,
        kind=body.kind,
        config=body.config,
        api_key=body.api_key,
        description=body.description,
    )
    return 201, _entry_out(entry)


class ModelUpdateIn(Schema):
    kind: Literal["hf", "gguf", "openai", "merge"]
    config: dict[str, Any]
    api_key: str = Field("", max_length=500, description="openai: a new key; empty keeps the stored one")
    description: str | None = Field(None, max_length=2000, description="left out: keeps the stored one")


@api.put("/entries/{path:name}", response={200: EntryOut, 201: EntryOut})
def put_entry(request, name: str, body: ModelUpdateIn):
    """Register a model entry under ``name`` (201), or point the existing one at a new checkpoint (200).

    The kind cannot change; earlier runs keep the results they computed. Refused (422) while the
    entry is in a run that has not finished.
    """
    _require(request, Role.MEMBER)
    entry, created = registry.put_model(
        request.auth.team,
        name=name,
        kind=body.kind,
        config=body.config,
        api_key=body.api_key,
        description=body.description,
    )
    return (201 if created else 200), _entry_out(entry)


@api.post("/blends", response={201: EntryOut})
def create_blend(request, body: BlendIn):
    _require(request, Role.MEMBER)
    entry = registry.register_blend(
        request.auth.team,
        name=body.name,
        strategy=body.strategy,
        params=body.params,
        members=body.members,
        description=body.description,
    )
    return 201, _entry_out(entry)


@api.get("/suites", response=list[SuiteOut])
def list_suites(request):
    from django.db.models import Count

    qs = Suite.objects.filter(team=request.auth.team).annotate(n=Count("items"))
    return [
        {
            "id": s.pk,
            "name": s.name,
            "version": s.version,
            "content_hash": s.content_hash,
            "task_type": s.task_type,
            "items": s.n,
        }
        for s in qs
    ]


@api.post("/suites/builtin", response={201: SuiteOut})
def add_builtin_suite(request, body: BuiltinSuiteIn):
    """Add one of the project's generated suites (reproducible from its seed) to the team."""
    _require(request, Role.MEMBER)
    try:
        lib = get_builtin(body.name, seed=body.seed, size=body.size)
    except EnsembleError as exc:
        raise ValidationError({"name" if isinstance(exc, KeyError) else "size": str(exc)}) from None
    s = import_suite(request.auth.team, lib)
    return 201, {
        "id": s.pk,
        "name": s.name,
        "version": s.version,
        "content_hash": s.content_hash,
        "task_type": s.task_type,
        "items": s.items.count(),
    }


def _suite_out(s: Suite) -> dict:
    return {
        "id": s.pk,
        "name": s.name,
        "version": s.version,
        "content_hash": s.content_hash,
        "task_type": s.task_type,
        "items": s.items.count(),
    }


@api.post("/suites", response={200: SuiteOut, 201: SuiteOut})
def upload(request, body: SuiteUploadIn):
    """Upload a suite; it imports whole or not at all. The same content again answers 200 with the same suite.

    Errors answer 422 with the file and line of the first problem.
    """
    _require(request, Role.MEMBER)
    roles = UPLOAD_FORMATS[body.format]
    unknown = sorted(set(body.files) - set(roles))
    if unknown:
        raise ValidationError(
            {"files": f"{body.format} uploads take {', '.join(roles)}; unknown: {', '.join(unknown)}"}
        )
    files = {
        role: UploadedText(body.filenames.get(role) or _default_name(role), text) for role, text in body.files.items()
    }
    options = body.dict(include={"name", "seed", "columns", "metric", "prompt_template", "answer_extraction"})
    suite, created = upload_suite(request.auth.team, body.format, files, options)
    return (201 if created else 200), _suite_out(suite)


def _default_name(role: str) -> str:
    return {
        "manifest": "suite.yaml",
        "items": "items.jsonl",
        "task": "task.json",
        "config": "task.yaml",
        "csv": "items.csv",
    }.get(role, f"{role}.jsonl")


@api.post("/runs", response={201: dict[str, Any]})
def create_run(request, body: RunIn):
    _require(request, Role.MEMBER)
    team = request.auth.team
    suites = Suite.objects.filter(team=team)
    suite = (
        (suites.filter(pk=int(body.suite)) if body.suite.isdigit() else suites.filter(name=body.suite))
        .order_by("-created_at")
        .first()
    )
    if suite is None:
        raise ValidationError({"suite": f"unknown suite {body.suite!r}"})
    entries = list(Entry.objects.filter(team=team, name__in=body.entries))
    missing = sorted(set(body.entries) - {e.name for e in entries})
    if missing:
        raise ValidationError({"entries": f"unknown entries: {', '.join(missing)}"})
    judge = None
    if body.judge:
        judge = Entry.objects.filter(team=team, name=body.judge).first()
        if judge is None:
            raise ValidationError({"judge": f"unknown entry {body.judge!r}"})
    run = evaluations.create_run(team, suite, entries, splits=body.splits, judge=judge)
    return 201, services.run_snapshot(run)


@api.get("/runs/{run_id}", response=dict[str, Any])
def get_run(request, run_id: int):
    run = Run.objects.select_related("suite", "team").filter(team=request.auth.team, pk=run_id).first()
    if run is None:
        raise Http404
    # Whether adding members pays: null until the run is done, and where scores are not right/wrong.
    return {**snapshots.run_snapshot(run), "size_curve": services.run_size_curve(run)}


@api.get("/leaderboard/{suite}", response=dict[str, Any])
def get_leaderboard(request, suite: str):
    return snapshots.board(request.auth.team, suite)
