"""Thin Celery wrappers: take ids, do one piece of a run's work (arena/evaluations/pipeline), advance the run.

Retries are Celery's own, on the named transient errors of arena.core.retry only.
"""

from __future__ import annotations

from celery import shared_task

from arena.core.logs import tags_run
from arena.core.retry import RETRY
from arena.evaluations import pipeline, services
from arena.evaluations.models import RunEntry, WorkItem


def _run_of(model, pk: int) -> int | None:
    """The run a row belongs to, for the logs (None when the row vanished)."""
    return model.objects.filter(pk=pk).values_list("run_id", flat=True).first()


@shared_task(**RETRY)
@tags_run(lambda run_id: run_id)
def plan_run(run_id: int) -> None:
    pipeline.plan_run(run_id)


@shared_task(**RETRY)
@tags_run(lambda work_item_id: _run_of(WorkItem, work_item_id))
def generate_batch(work_item_id: int) -> None:
    pipeline.generate_batch(work_item_id)


@shared_task(**RETRY)
@tags_run(lambda run_entry_id: _run_of(RunEntry, run_entry_id))
def combine_blend(run_entry_id: int) -> None:
    pipeline.combine_blend(run_entry_id)


@shared_task(**RETRY)
@tags_run(lambda run_id: run_id)
def judge_run(run_id: int) -> None:
    pipeline.judge_run(run_id)


@shared_task(acks_late=True)
def requeue_stale() -> int:
    return services.requeue_stale()
