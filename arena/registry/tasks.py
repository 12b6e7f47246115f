"""Thin Celery wrappers: take ids, call a service; retries are Celery's own (arena/core/retry.py)."""

from __future__ import annotations

from celery import Task, shared_task

from arena.core.retry import retry_policy
from arena.registry import merges


class MaterializeTask(Task):
    """A merge whose retries ran out on a transient error (a member still building) is marked failed."""

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        if isinstance(exc, self.autoretry_for):
            merges.give_up(*args, **kwargs, reason=f"gave up after {self.max_retries} tries: {exc}")


# A member that is a merge still being built is worth waiting for: more tries than other work gets.
@shared_task(base=MaterializeTask, **retry_policy(merges.WaitForMember, max_retries=8))
def materialize_merge(materialization_id: int, attempt: int) -> None:
    """Sent to a gpu queue when a merge entry is registered, updated or started again."""
    merges.run(materialization_id, attempt)
