"""The request's edges: its id, its size, the characters it may hold, and values the database refuses."""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.db import DataError

from arena.core import logs
from arena.core.errors import API_PREFIX, OPENAI_PREFIX, error_body, error_response, too_large_message
from arena.core.text import control_problem, first_control, may_hold_control
from ensembles.parsing import load_json

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# A JSON body's `files` holds files' contents, which their importer checks and reports by file and
# line, as it does an uploaded file's.
FILE_CONTENTS = ("files",)


def unstorable_reason(exc: DataError) -> str:
    """The database's one-line reason (e.g. "PostgreSQL text fields cannot contain NUL (0x00) bytes")."""
    return (str(exc).strip().splitlines() or ["the database refused a value"])[0]


class RequestIdMiddleware:
    """Give every request an id, sent back as X-Request-ID and carried by every log record made while
    it is served, the traceback of a 500 among them, so the id on an error page finds its log lines."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = uuid.uuid4().hex
        bound = logs.request_id.set(request.request_id)
        try:
            response = self.get_response(request)
        finally:
            logs.request_id.reset(bound)
        response[REQUEST_ID_HEADER] = request.request_id
        return response


class ControlCharacterMiddleware:
    """Refuse a control character (arena.core.text) in the path, the query string, a form field or a
    JSON body's strings: 422 on the API, 400 elsewhere, naming the field, before any view runs."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        found = self._find(request)
        if found is None:
            return self.get_response(request)
        field, problem = found
        log.warning("refused %s %s: %s %s", request.method, ascii(request.path), ascii(field), problem)
        status = 422 if request.path.startswith(API_PREFIX) else 400
        return error_response(request, status, {field: [problem]}, param=field)

    def _find(self, request) -> tuple[str, str] | None:
        if problem := control_problem(request.path):
            return "path", problem
        if found := _in_fields(request.GET):
            return found
        if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
            return None
        if request.content_type in FORM_TYPES:
            return _in_fields(request.POST)  # uploaded files' contents are their importer's to check
        elif request.path.startswith((API_PREFIX, OPENAI_PREFIX)) and may_hold_control(request.body):
            try:
                return first_control(load_json(request.body), skip=FILE_CONTENTS)
            except (ValueError, RecursionError):
                return None  # not JSON: the view says so
        return None


def _in_fields(fields) -> tuple[str, str] | None:
    for key, values in fields.lists():
        for text in (key, *values):
            if problem := control_problem(text):
                return key, problem
    return None


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
        log.warning("refused %s %s: %s", request.method, ascii(request.path), reason)
        return error_response(request, 400, f"This request holds a value that cannot be stored: {reason}")


class BodyLimit:
    """ASGI: a body over DATA_UPLOAD_MAX_MEMORY_SIZE (uploads included) is a 413 that Django never reads.

    Django's ASGI handler copies a whole body (to disk past FILE_UPLOAD_MAX_MEMORY_SIZE) before any
    middleware sees it; this answers from Content-Length, and counts a chunked body as it comes.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            if length.strip().isdigit() and int(length) > limit:
                return await self._refuse(scope, send, limit)
            return await self.app(scope, receive, send)
        # No length given: hold the messages, at most the limit's worth, then hand them on.
        held, size = [], 0
        while True:
            message = await receive()
            held.append(message)
            size += len(message.get("body", b""))
            if size > limit:
                return await self._refuse(scope, send, limit)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay():
            return held.pop(0) if held else await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, send, limit: int) -> None:
        log.warning("refused %s %s: body over %d bytes", scope.get("method"), scope.get("path"), limit)
        content_type, body = error_body(scope.get("path", ""), 413, too_large_message(limit))
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
