"""Thin Celery wrappers: take ids, call a service; transient errors are retried by the policy in arena/core/retry.py."""

from __future__ import annotations

from celery import shared_task

from arena.core.retry import RETRY
from arena.schedules import services


@shared_task(**RETRY)
def fire_schedule(schedule_id: int) -> int | None:
    """Sent by beat at each slot of a schedule; the run's id, or None when nothing started."""
    firing = services.fire(schedule_id)
    return firing.run_id if firing else None


@shared_task(**RETRY)
def start_firing(firing_id: int) -> int | None:
    """A firing asked for by hand ("Run now"); the run's id, or None when nothing started."""
    firing = services.start_firing(firing_id)
    return firing.run_id if firing else None


@shared_task(**RETRY)
def start_overdue_firings() -> int:
    return services.start_overdue_firings()
