"""Thin Celery wrapper: take the search's id, call the service; retries are Celery's own (arena/core/retry.py)."""

from __future__ import annotations

from celery import shared_task

from arena.core.retry import retry_policy
from arena.search import services


@shared_task(**retry_policy(queue="cpu"))
def run_search(search_id: int) -> None:
    """Search on the cpu queue: it only recombines stored answers (and runs the small encoder on dev inputs)."""
    services.run_search(search_id)
