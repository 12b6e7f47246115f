"""Thin Celery wrapper: take the search's id, call the service, retry only named transient errors."""

from __future__ import annotations

from celery import shared_task
from django.db import InterfaceError, OperationalError

from arena.evaluations.tasks import _backoff
from arena.search import services

TRANSIENT = (OperationalError, InterfaceError)


@shared_task(bind=True, max_retries=5, acks_late=True, queue="cpu")
def run_search(self, search_id: int) -> None:
    """Search on the cpu queue: it only recombines stored answers (and runs the small encoder on dev inputs)."""
    try:
        services.run_search(search_id)
    except TRANSIENT as exc:
        try:
            services.release(search_id)
        except TRANSIENT:
            pass  # the database is still away: the claim goes stale and the retry takes it over then
        raise self.retry(exc=exc, countdown=_backoff(self.request.retries)) from exc
