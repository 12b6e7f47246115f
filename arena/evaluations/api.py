"""JSON API for runs: starting one, its snapshot, and retrying its failed entries.

Suites and entries are looked up within the token's team, so other teams' names answer 422 as unknown
and other teams' runs 404.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.http import Http404
from ninja import Field, Router, Schema

from arena.benchmarks.models import Suite
from arena.evaluations import queries, services, snapshots
from arena.evaluations.models import Run
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


@router.get("/runs/{run_id}", response=dict[str, Any])
def get_run(request, run_id: int):
    run = Run.objects.select_related("suite", "team").filter(team=request.auth.team, pk=run_id).first()
    if run is None:
        raise Http404
    # Whether adding members pays: null until the run is done, and where scores are not right/wrong.
    return {**snapshots.run_snapshot(run), "size_curve": queries.size_curve(run)}


@router.post("/runs/{run_id}/retry", response={202: dict[str, Any]})
def retry_run(request, run_id: int):
    """Queue again only the run's failed entries; what finished, and every cached answer, is kept."""
    run = Run.objects.select_related("suite", "team").filter(team=request.auth.team, pk=run_id).first()
    if run is None:
        raise Http404
    require_role(request, Role.MEMBER)
    retried = services.retry_failed(run)
    return 202, {**snapshots.run_snapshot(run), "retried": retried}
