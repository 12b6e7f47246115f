"""Thin Celery wrappers: take ids, call a service, retry only named transient errors."""

from __future__ import annotations

import random

from celery import shared_task
from django.db import InterfaceError, OperationalError

from arena.core.logs import tags_run
from arena.evaluations import services
from arena.evaluations.models import RunEntry, WorkItem

TRANSIENT = (services.RetryLater, OperationalError, InterfaceError)


def _backoff(retries: int) -> float:
    # Exponential backoff with jitter, so retries of many batches do not arrive together.
    return min(300.0, 5.0 * 2**retries) * random.uniform(0.5, 1.0)  # noqa: S311


def _run_of(model, pk: int) -> int | None:
    """The run a row belongs to, for the logs (None when the row vanished)."""
    return model.objects.filter(pk=pk).values_list("run_id", flat=True).first()


@shared_task(bind=True, max_retries=5, acks_late=True)
@tags_run(lambda run_id: run_id)
def plan_run(self, run_id: int) -> None:
    try:
        services.plan_run(run_id)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(bind=True, max_retries=5, acks_late=True)
@tags_run(lambda work_item_id: _run_of(WorkItem, work_item_id))
def generate_batch(self, work_item_id: int) -> None:
    try:
        services.generate_batch(work_item_id)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(bind=True, max_retries=5, acks_late=True)
@tags_run(lambda run_entry_id: _run_of(RunEntry, run_entry_id))
def combine_blend(self, run_entry_id: int) -> None:
    try:
        services.combine_blend(run_entry_id)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(bind=True, max_retries=5, acks_late=True)
@tags_run(lambda run_id: run_id)
def judge_run(self, run_id: int) -> None:
    try:
        services.judge_run(run_id)
    except TRANSIENT as exc:
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc


@shared_task(acks_late=True)
def requeue_stale() -> int:
    return services.requeue_stale()
