"""Structured logs: every record carries the Celery task and the run it works on, or the web request.

ARENA_LOG_FORMAT=json writes one JSON object a line (for a log collector); the default, text,
writes the same fields as key=value pairs. The task comes from Celery's current task. The run is
bound before a task starts (task_prerun), from the task's arguments by the finder its definition
names with `tags_run`, so Celery's own lines (received, retry, succeeded, failed) carry it too.
A web request's id is bound by arena.core.middleware.RequestIdMiddleware for as long as it is served.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime

from celery import current_task

FIELDS = ("request_id", "run_id", "task", "task_id")
_run_id: ContextVar[int | None] = ContextVar("arena_run_id", default=None)
request_id: ContextVar[str | None] = ContextVar("arena_request_id", default=None)
# Task name → finder of the run from the task's arguments.
_finders: dict[str, Callable[..., int | None]] = {}


def tags_run(finder: Callable[..., int | None]):
    """Decorate a task function (under @shared_task): its log records carry ``finder(*args)``."""

    def register(fn):
        _finders[f"{fn.__module__}.{fn.__name__}"] = finder
        return fn

    return register


def bind_run(sender=None, args=None, kwargs=None, **extra) -> None:
    """task_prerun: find and bind the run of the task about to run."""
    finder = _finders.get(getattr(sender, "name", ""))
    _run_id.set(finder(*(args or ()), **(kwargs or {})) if finder else None)


def unbind_run(**extra) -> None:
    """task_postrun: the process's next records belong to no run."""
    _run_id.set(None)


class ContextFilter(logging.Filter):
    """Adds request_id (None outside a web request), run_id, task and task_id (None outside a task)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        request = getattr(current_task, "request", None)
        record.run_id = _run_id.get()
        record.task = getattr(current_task, "name", None) if request is not None else None
        record.task_id = getattr(request, "id", None)
        return True


def _context(record: logging.LogRecord) -> dict:
    return {name: getattr(record, name, None) for name in FIELDS if getattr(record, name, None) is not None}


class TextFormatter(logging.Formatter):
    """`time LEVEL logger key=value … message`, a field only where it has a value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(context)s%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        pairs = " ".join(f"{k}={v}" for k, v in _context(record).items())
        record.context = f"{pairs} " if pairs else ""
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, the context, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)
