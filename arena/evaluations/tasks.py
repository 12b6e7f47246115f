"""Thin Celery wrappers: take ids, call a service, retry only named transient errors."""

from __future__ import annotations

import random

from celery import shared_task
from django.db import InterfaceError, OperationalError

from arena.evaluations import services

TRANSIENT = (services.RetryLater, OperationalError, InterfaceError)


def _backoff(retries: int) -> float:
    # Exponential backoff with jitter, so retries of many batches do not arrive together.
    return min(300.0, 5.0 * 2**retries) * random.uniform(0.5, 1.0)  # noqa: S311


@shared_task(bind=True, max_retries=5, acks_late=True)
def plan_run(self, run_id: int) -> None:
    try:
        services.plan_run(run_id)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(bind=True, max_retries=5, acks_late=True)
def generate_batch(self, work_item_id: int) -> None:
    try:
        services.generate_batch(work_item_id)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(bind=True, max_retries=5, acks_late=True)
def combine_blend(self, run_entry_id: int) -> None:
    try:
        services.combine_blend(run_entry_id)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(acks_late=True)
def requeue_stale() -> int:
    return services.requeue_stale()
