"""JSON API for schedules and the queue (mounted on /api/v1 by arena/api.py).

Every object is looked up within the token's team, so other teams' ids answer 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.core.paginator import Paginator
from django.db.models import Prefetch
from django.http import Http404
from ninja import Field, Query, Router, Schema

from arena.schedules import queries, services
from arena.schedules.models import NIGHTLY, Firing, Refresh, Schedule
from arena.teams.access import require_role
from arena.teams.models import Role

router = Router(tags=["schedules"])


class ScheduleIn(Schema):
    name: str = Field(..., min_length=1, max_length=100)
    suite: str = Field(..., min_length=1, max_length=64, description="suite name: each firing uses its latest version")
    entries: list[str] = Field(..., min_length=1, max_length=100)
    cron: str = Field(NIGHTLY, max_length=120, description="minute hour day-of-month month day-of-week")
    timezone: str = Field("UTC", max_length=64, description="IANA time zone the cron expression is read in")
    refresh: Literal["changed", "all"] = Field(
        Refresh.CHANGED, description="changed: only entries whose model or suite version changed; all: every entry"
    )
    enabled: bool = True
    judge: str | None = Field(None, max_length=100, description="judge suites: the model that compares answers")
    splits: list[str] = Field(
        [],
        max_length=10,
        description='the suite\'s splits each run evaluates, e.g. ["dev", "test"]; empty: the default (test)',
    )


class FiringOut(Schema):
    id: int
    slot: datetime
    outcome: str = Field(..., description="pending (waiting for a worker), started, skipped or failed")
    run: int | None
    note: str
    manual: bool = Field(..., description="asked for by hand (run now) rather than by the cron expression")


class BusyOut(Schema):
    detail: str
    firing: FiringOut


class ScheduleOut(Schema):
    id: int
    name: str
    suite: str
    entries: list[str]
    cron: str
    timezone: str
    refresh: str
    enabled: bool
    judge: str | None
    splits: list[str]
    next_run_at: datetime | None
    recent_firings: list[FiringOut]


def schedule_out(s: Schedule) -> dict[str, Any]:
    return {
        "id": s.pk,
        "name": s.name,
        "suite": s.suite_name,
        "entries": sorted(e.name for e in s.entries.all()),
        "cron": s.cron,
        "timezone": s.timezone,
        "refresh": s.refresh,
        "enabled": s.enabled,
        "judge": s.judge.name if s.judge else None,
        "splits": s.splits,
        "next_run_at": services.next_fire(s),
        "recent_firings": [firing_out(f) for f in s.recent_firings],
    }


def firing_out(f: Firing) -> dict[str, Any]:
    return {"id": f.pk, "slot": f.slot, "outcome": f.outcome, "run": f.run_id, "note": f.note, "manual": f.manual}


def _schedules(team):
    recent = Prefetch("firings", queryset=Firing.objects.order_by("-slot")[:10], to_attr="recent_firings")
    return Schedule.objects.filter(team=team).select_related("judge").prefetch_related("entries", recent)


def _schedule(request, schedule_id: int) -> Schedule:
    found = _schedules(request.auth.team).filter(pk=schedule_id).first()
    if found is None:
        raise Http404
    return found


def _save(request, body: ScheduleIn, schedule: Schedule | None = None) -> Schedule:
    return services.save_schedule(
        request.auth.team,
        name=body.name,
        suite=body.suite,
        entries=body.entries,
        cron=body.cron,
        timezone_name=body.timezone,
        refresh=body.refresh,
        enabled=body.enabled,
        judge=body.judge,
        splits=body.splits,
        schedule=schedule,
    )


@router.get("/schedules", response=list[ScheduleOut])
def list_schedules(request):
    return [schedule_out(s) for s in _schedules(request.auth.team)]


@router.post("/schedules", response={201: ScheduleOut})
def create_schedule(request, body: ScheduleIn):
    """Schedule evaluations of ``entries`` on ``suite``: nightly at 02:00 UTC unless ``cron`` says otherwise.

    Bad input answers 422 naming the field (``cron``, ``timezone``, ``suite``, ``entries``...), and stores nothing.
    """
    require_role(request, Role.MEMBER)
    schedule = _save(request, body)
    return 201, schedule_out(_schedule(request, schedule.pk))


@router.get("/schedules/{schedule_id}", response=ScheduleOut)
def get_schedule(request, schedule_id: int):
    return schedule_out(_schedule(request, schedule_id))


@router.put("/schedules/{schedule_id}", response=ScheduleOut)
def update_schedule(request, schedule_id: int, body: ScheduleIn):
    require_role(request, Role.MEMBER)
    schedule = _save(request, body, _schedule(request, schedule_id))
    return schedule_out(_schedule(request, schedule.pk))


@router.delete("/schedules/{schedule_id}", response={204: None})
def delete_schedule(request, schedule_id: int):
    require_role(request, Role.MEMBER)
    services.delete_schedule(_schedule(request, schedule_id))
    return 204, None


@router.post("/schedules/{schedule_id}/run", response={202: FiringOut, 409: BusyOut})
def run_schedule_now(request, schedule_id: int):
    """Fire the schedule now, by the rules of its cron firings (its refresh, splits, the suite's latest
    version), even while it is paused: 202 with the firing, which a worker turns into a run (see the
    schedule's ``recent_firings``). 409 with the unfinished firing while an earlier one waits for a
    worker or its run is queued or running: a schedule has one run going at a time."""
    require_role(request, Role.MEMBER)
    try:
        firing = services.run_now(_schedule(request, schedule_id))
    except services.ScheduleBusy as exc:
        return 409, {"detail": str(exc), "firing": firing_out(exc.firing)}
    return 202, firing_out(firing)


class QueueFilter(Schema):
    state: Literal["waiting", "running", "done", "partial", "failed"] | None = None
    page: int = Field(1, ge=1, le=100000)


@router.get("/queue", response=dict[str, Any])
def get_queue(request, filters: Query[QueueFilter]):
    """The team's runs, newest first, 50 a page: waiting, running, done or failed, with the reasons;
    the schedules' next firings; and recent firings that started nothing, with why."""
    team = request.auth.team
    page = Paginator(queries.queue_runs(team, filters.state), 50).get_page(filters.page)
    return {
        "counts": queries.queue_counts(team),
        "page": page.number,
        "pages": page.paginator.num_pages,
        "runs": [queries.queue_row(r) for r in page],
        "upcoming": [{**u, "next_run_at": u["next_run_at"].isoformat()} for u in queries.upcoming(team)],
        "not_started": [
            {"schedule": f.schedule.name, "slot": f.slot.isoformat(), "outcome": f.outcome, "note": f.note}
            for f in queries.recent_firings_without_run(team)
        ],
    }
