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
def start_firing(self, firing_id: int) -> int | None:
    """A firing asked for by hand ("Run now"); the run's id, or None when nothing started."""
    try:
        firing = services.start_firing(firing_id)
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


# Attempts are counted on the notice (ARENA_NOTICE_ATTEMPTS), across retries and the sweep's resends.
@shared_task(bind=True, max_retries=None, acks_late=True)
def send_notice(self, notice_id: int) -> None:
    try:
        services.send_notice(notice_id)
    except services.NoticeRetry as exc:
        raise self.retry(countdown=exc.countdown) from exc
    except TRANSIENT as exc:
        raise self.retry(countdown=_backoff(min(self.request.retries, 6))) from exc


@shared_task(acks_late=True)
def resend_overdue() -> int:
    return services.resend_overdue()
