"""The team's view of its queue: its runs with why one waits or failed, what fires next, what started nothing."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, Prefetch, Q, QuerySet, Sum

from arena.evaluations.models import Run, RunEntry, State, WorkItem
from arena.registry.models import Kind
from arena.schedules import services
from arena.schedules.models import Firing, Outcome, Schedule
from arena.teams.models import Team

QUEUE_STATES = {
    "waiting": State.QUEUED,
    "running": State.RUNNING,
    "done": State.DONE,
    "partial": State.PARTIAL,  # finished with errors
    "failed": State.FAILED,
}


def queue_runs(team: Team, state: str | None = None) -> QuerySet[Run]:
    """The team's runs, newest first, with what a person needs to see why one waits or failed."""
    singles = ~Q(run_entries__entry__kind=Kind.BLEND)
    troubled = WorkItem.objects.filter(Q(state=State.FAILED) | Q(state=State.QUEUED, attempts__gt=0)).exclude(error="")
    qs = (
        Run.objects.filter(team=team)
        .select_related("suite", "firing__schedule", "created_by")
        .annotate(
            done_items=Sum("run_entries__done_items", filter=singles),
            total_items=Sum("run_entries__total_items", filter=singles),
        )
        .prefetch_related(
            Prefetch(
                "run_entries",
                queryset=RunEntry.objects.filter(state=State.FAILED).select_related("entry"),
                to_attr="failed_entries",
            ),
            Prefetch("work_items", queryset=troubled.select_related("entry"), to_attr="troubled_batches"),
        )
        .order_by("-created_at", "-pk")
    )
    if state:
        qs = qs.filter(state=QUEUE_STATES[state])
    return qs


def queue_counts(team: Team) -> dict[str, int]:
    by_state = {r["state"]: r["n"] for r in Run.objects.filter(team=team).values("state").annotate(n=Count("pk"))}
    return {label: by_state.get(state, 0) for label, state in QUEUE_STATES.items()}


def queue_row(run: Run) -> dict:
    """One run as the queue page and API show it."""
    reasons = [f"{re.entry.name}: {re.error}" for re in run.failed_entries if re.error]
    for wi in run.troubled_batches:
        if wi.state == State.FAILED:
            reasons.append(f"{wi.entry.name} batch {wi.batch_index} failed: {wi.error}")
        else:
            reasons.append(f"{wi.entry.name} batch {wi.batch_index} waits to retry (attempt {wi.attempts}): {wi.error}")
    firing = getattr(run, "firing", None)
    return {
        "id": run.pk,
        "suite": run.suite.name,
        "suite_version": run.suite.version,
        "state": run.state,
        "error": run.error,
        "reasons": reasons,
        "done_items": run.done_items or 0,
        "total_items": run.total_items or 0,
        "schedule": firing.schedule.name if firing else None,
        "started_by": run.created_by.username if run.created_by else None,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }


def upcoming(team: Team, now: datetime | None = None) -> list[dict]:
    """The team's enabled schedules by their next firing, soonest first."""
    rows = []
    for s in Schedule.objects.filter(team=team, enabled=True).prefetch_related("entries"):
        rows.append(
            {
                "schedule_id": s.pk,
                "schedule": s.name,
                "suite": s.suite_name,
                "entries": [e.name for e in s.entries.all()],
                "cron": s.cron,
                "timezone": s.timezone,
                "next_run_at": services.next_fire(s, now),
            }
        )
    rows.sort(key=lambda r: r["next_run_at"])
    return rows


def recent_firings_without_run(team: Team, limit: int = 20) -> QuerySet[Firing]:
    """Firings that started nothing: skipped because nothing changed, or failed with the reason."""
    return (
        Firing.objects.filter(schedule__team=team)
        .exclude(outcome__in=[Outcome.STARTED, Outcome.PENDING])
        .select_related("schedule")
        .order_by("-created_at")[:limit]
    )
