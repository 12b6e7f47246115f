"""Thin Celery wrappers: take ids, call a service, retry only named transient errors."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from arena.core.logs import tags_run
from arena.evaluations.tasks import _backoff
from arena.schedules import services

TRANSIENT = (OperationalError, InterfaceError)


@shared_task(bind=True, max_retries=5, acks_late=True)
def fire_schedule(self, schedule_id: int) -> int | None:
    """Sent by beat at each slot of a schedule; the run's id, or None when nothing started."""
    try:
        firing = services.fire(schedule_id)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
    return firing.run_id if firing else None


@shared_task(bind=True, max_retries=5, acks_late=True)
@tags_run(lambda run_id: run_id)
def check_regressions(self, run_id: int) -> None:
    try:
        services.check_regressions(run_id)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
