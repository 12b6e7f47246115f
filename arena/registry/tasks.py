"""Thin Celery wrappers: take ids, call a service, retry only named transient errors."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from arena.evaluations.tasks import _backoff
from arena.registry import merges

TRANSIENT = (merges.WaitForMember, OperationalError, InterfaceError)


@shared_task(bind=True, max_retries=8, acks_late=True)
def materialize_merge(self, materialization_id: int, attempt: int) -> None:
    """Sent to a gpu queue when a merge entry is registered, updated or started again."""
    try:
        merges.run(materialization_id, attempt)
    except TRANSIENT as exc:
        if self.request.retries >= self.max_retries:
            merges.give_up(materialization_id, attempt, f"gave up after {self.max_retries} tries: {exc}")
            return
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
