"""A value the database cannot hold is the request's fault: the page answers 400, not 500."""

from __future__ import annotations

import logging

from django.db import DataError
from django.http import HttpResponseBadRequest

log = logging.getLogger(__name__)


def unstorable_reason(exc: DataError) -> str:
    """The database's one-line reason (e.g. "PostgreSQL text fields cannot contain NUL (0x00) bytes")."""
    return (str(exc).strip().splitlines() or ["the database refused a value"])[0]


class DataErrorMiddleware:
    """Turn a DataError (a NUL character, a number out of range, text too long) into a 400.

    Views validate what they know of; the database has the last word on what it can store. A
    statement that fails stores nothing, and every multi-row write runs in a transaction.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, DataError):
            return None
        reason = unstorable_reason(exception)
        log.warning("refused %s %s: %s", request.method, request.path, reason)
        return HttpResponseBadRequest(f"This request holds a value that cannot be stored: {reason}\n")
