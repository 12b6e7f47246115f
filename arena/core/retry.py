"""The one retry policy of the arena's Celery tasks: named transient errors, exponential backoff, jitter.

A task retries only what may pass by itself (a model server that is busy, a database that is away for a
moment); every other error is the task's result. Celery's own ``autoretry_for`` does the retrying, so
a task body is one service call: ``@shared_task(**RETRY)``.
"""

from __future__ import annotations

from django.db import InterfaceError, OperationalError

from ensembles.backends import TransientBackendError

# A model server busy or away (timeouts, 429, 5xx), and a database away for a moment.
TRANSIENT: tuple[type[BaseException], ...] = (TransientBackendError, OperationalError, InterfaceError)

# Backoff 5 s, 10 s, 20 s ... at most 5 minutes, each drawn at random below that (full jitter), so the
# retries of many batches that failed together do not arrive together.
RETRY = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 5,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 5,
    "acks_late": True,
}


def retry_policy(*transient: type[BaseException], **overrides) -> dict:
    """``RETRY`` for a task that has transient errors of its own, or another number of attempts."""
    return {**RETRY, "autoretry_for": (*TRANSIENT, *transient), **overrides}
