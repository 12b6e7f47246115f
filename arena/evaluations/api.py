"""JSON API for runs: starting one, listing them, its snapshot, its files, and retrying its failed entries.

Suites and entries are looked up within the token's team, so other teams' names answer 422 as unknown
and other teams' runs 404. A run's results and its items come as JSON (the default) or, with
``?format=csv``, as a CSV attachment: the same files as the run page's download links.
"""

# No `from __future__ import annotations`: ninja reads the paginated operation's annotations through
# paginate's wrapper, in ninja's module, where string annotations would not resolve.
from datetime import UTC, datetime
from typing import Any, Literal

from django.core.exceptions import ValidationError
from django.db.models import Prefetch
from django.http import Http404
from django.utils import timezone
from ninja import Field, Query, Router, Schema
from ninja.pagination import LimitOffsetPagination, paginate

from arena.benchmarks.models import Suite
from arena.evaluations import exports, lifecycle, queries, services, snapshots
from arena.evaluations.models import Run, RunEntry, State
from arena.registry.models import Entry
from arena.teams.access import require_role
from arena.teams.models import Role

router = Router()


class RunIn(Schema):
    suite: str = Field(..., min_length=1, max_length=64, description="suite name (latest version) or id")
    entries: list[str] = Field(..., min_length=1, max_length=100)
    splits: list[str] | None = None
    judge: str | None = Field(None, max_length=100, description="judge suites: the model that compares answers")


@router.post("/runs", response={201: dict[str, Any]})
def create_run(request, body: RunIn):
    require_role(request, Role.MEMBER)
    team = request.auth.team
    suites = Suite.objects.filter(team=team)
    suite = (
        (suites.filter(pk=int(body.suite)) if body.suite.isdecimal() else suites.filter(name=body.suite))
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
    run = services.create_run(team, suite, entries, splits=body.splits, judge=judge)
    return 201, queries.run_snapshot(run)


class RunFilters(Schema):
    suite: str | None = Field(None, min_length=1, max_length=64, description="runs of this suite (name or id)")
    state: State | None = Field(None, description="runs in this state")
    entry: str | None = Field(None, min_length=1, max_length=100, description="runs that evaluated this entry")
    since: datetime | None = Field(None, description="runs created at or after this time (ISO 8601; UTC if naive)")


class RunSummary(Schema):
    id: int
    suite: str
    suite_version: str
    splits: list[str]
    state: State
    error: str
    entries: list[str] = Field(..., description="the entries chosen for the run")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_suite(run: Run) -> str:
        return run.suite.name

    @staticmethod
    def resolve_suite_version(run: Run) -> str:
        return run.suite.version

    @staticmethod
    def resolve_entries(run: Run) -> list[str]:
        return [re.entry.name for re in run.chosen]


@router.get("/runs", response=list[RunSummary])
@paginate(LimitOffsetPagination, max_limit=1000)
def list_runs(request, filters: Query[RunFilters]):
    """The team's runs, newest first, ``limit`` (100 unless told) at a time from ``offset``."""
    team = request.auth.team
    runs = Run.objects.filter(team=team)
    if filters.suite:
        suites = Suite.objects.filter(team=team)
        suites = (
            suites.filter(pk=int(filters.suite)) if filters.suite.isdecimal() else suites.filter(name=filters.suite)
        )
        if not suites.exists():
            raise ValidationError({"suite": f"unknown suite {filters.suite!r}"})
        runs = runs.filter(suite__in=suites)
    if filters.state:
        runs = runs.filter(state=filters.state)
    if filters.entry:
        if not Entry.objects.filter(team=team, name=filters.entry).exists():
            raise ValidationError({"entry": f"unknown entry {filters.entry!r}"})
        runs = runs.filter(run_entries__entry__name=filters.entry, run_entries__is_target=True)
    if filters.since:
        since = filters.since if timezone.is_aware(filters.since) else filters.since.replace(tzinfo=UTC)
        runs = runs.filter(created_at__gte=since)
    chosen = RunEntry.objects.filter(is_target=True).select_related("entry").order_by("entry__name")
    return (
        runs.select_related("suite")
        .prefetch_related(Prefetch("run_entries", queryset=chosen, to_attr="chosen"))
        .order_by("-created_at", "-pk")
    )


# What a format=csv answer looks like, for the API docs (the JSON one is the operation's response schema).
CSV_RESPONSE = {"responses": {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}}


@router.get("/runs/{run_id}", response=dict[str, Any], openapi_extra=CSV_RESPONSE)
def get_run(request, run_id: int, format: Literal["json", "csv"] = "json"):
    """The run's snapshot; with ``format=csv``, one row per entry: score and interval, lift, costs."""
    run = Run.objects.select_related("suite", "team").filter(team=request.auth.team, pk=run_id).first()
    if run is None:
        raise Http404
    if format == "csv":
        return exports.run_csv(request, run, snapshots.run_snapshot(run))
    # Whether adding members pays: null until the run is done, and where scores are not right/wrong.
    return {**snapshots.run_snapshot(run), "size_curve": queries.size_curve(run)}


class ItemScore(Schema):
    entry: str
    prediction: str | None = Field(..., description="null where the entry has no answer to the item")
    score: float | None


class ItemOut(Schema):
    item_id: int
    item: str = Field(..., description="the item's id in the suite")
    split: str
    position: int
    data: dict[str, Any] = Field(..., description="the item as the suite holds it: input, reference, choices")
    scores: list[ItemScore]


@router.get("/runs/{run_id}/items", response=list[ItemOut], openapi_extra=CSV_RESPONSE)
def get_run_items(request, run_id: int, format: Literal["json", "csv"] = "json"):
    """Every item of the run's splits, in suite order, with each entry's prediction and score; with
    ``format=csv``, one row per item and entry. Streamed, however large the run."""
    run = Run.objects.select_related("suite", "team").filter(team=request.auth.team, pk=run_id).first()
    if run is None:
        raise Http404
    return exports.items_file(request, run, format)


@router.post("/runs/{run_id}/retry", response={202: dict[str, Any]})
def retry_run(request, run_id: int):
    """Queue again only the run's failed entries; what finished, and every cached answer, is kept."""
    run = Run.objects.select_related("suite", "team").filter(team=request.auth.team, pk=run_id).first()
    if run is None:
        raise Http404
    require_role(request, Role.MEMBER)
    retried = services.retry_failed(run)
    return 202, {**snapshots.run_snapshot(run), "retried": retried}


@router.delete("/runs/{run_id}", response=dict[str, Any])
def delete_run(request, run_id: int):
    """Delete a run with everything it stored; a run still working is cancelled first. Answers what went."""
    require_role(request, Role.MEMBER)
    run = Run.objects.select_related("suite").filter(team=request.auth.team, pk=run_id).first()
    if run is None:
        raise Http404
    return {"deleted": lifecycle.delete(run).as_dict()}
