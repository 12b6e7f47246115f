"""Queue a Celery task by its name, from the services it calls back.

A service that starts work (a run's next step, a merge, a search) queues the task by name rather
than importing the task module, which imports the service: no import cycle, and routing
(CELERY_TASK_ROUTES) applies as it does to ``task.delay``.
"""

from __future__ import annotations

from typing import Any

from celery import current_app
from django.db import transaction


def send(task: str, *args: Any, queue: str | None = None, retry: bool = True) -> None:
    """Queue ``task`` (its dotted name) now; ``queue`` sends it there instead of where routing would.

    ``retry=False`` raises at once when the broker is unreachable, for a sender that must not wait
    out the publish retry policy (a request whose client is waiting).
    """
    current_app.send_task(task, args=args, retry=retry, **({"queue": queue} if queue else {}))


def send_on_commit(task: str, *args: Any, queue: str | None = None, retry: bool = True) -> None:
    """Queue ``task`` once the current transaction commits: for a task that reads rows written in it."""
    transaction.on_commit(lambda: send(task, *args, queue=queue, retry=retry))
