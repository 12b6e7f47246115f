"""Error answers in the shape of the part of the site that gives them, and Django's error handlers.

`/api/v1/` answers `{"detail": ...}` (as its own validation errors do), `/v1/` answers OpenAI's
`{"error": {...}}`, and pages a plain page. None shows a traceback or the URL patterns; a 500
names the request id that the log line with the traceback carries.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

API_PREFIX = "/api/v1/"
OPENAI_PREFIX = "/v1/"
TITLES = {
    400: "Bad request",
    403: "Forbidden",
    404: "Not found",
    413: "Request too large",
    422: "Unprocessable request",
    500: "Server error",
}
OPENAI_TYPES = {404: "not_found_error", 500: "server_error"}


def error_body(
    path: str, status: int, message: Any, *, request_id: str | None = None, param: str | None = None
) -> tuple[str, bytes]:
    """(content type, body) of an error for ``path``; ``message`` may be a {field: [problems]} mapping."""
    text = "; ".join(f"{k}: {' '.join(v)}" for k, v in message.items()) if isinstance(message, dict) else message
    if path.startswith(API_PREFIX):
        body: dict[str, Any] = {"detail": message}
    elif path.startswith(OPENAI_PREFIX):
        kind = OPENAI_TYPES.get(status, "invalid_request_error")
        body = {"error": {"message": text, "type": kind, "param": param, "code": None}}
    else:
        page = render_to_string(
            "error.html",
            {"status": status, "title": TITLES.get(status, "Error"), "message": text, "request_id": request_id},
        )
        return "text/html; charset=utf-8", page.encode()
    if request_id:
        body["request_id"] = request_id
    return "application/json", json.dumps(body).encode()


def error_response(
    request: HttpRequest, status: int, message: Any, *, param: str | None = None, with_id: bool = False
) -> HttpResponse:
    request_id = getattr(request, "request_id", None) if with_id else None
    content_type, body = error_body(request.path, status, message, request_id=request_id, param=param)
    return HttpResponse(body, status=status, content_type=content_type)


def too_large_message(limit: int) -> str:
    return f"the request body is larger than this arena accepts ({limit:,} bytes)"


# Django's handlers (handler400, handler404, handler500 in arena.urls); none of them reads the database.


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if isinstance(exception, RequestDataTooBig):
        # Django refuses a body over DATA_UPLOAD_MAX_MEMORY_SIZE before reading it; that is a 413.
        return error_response(request, 413, too_large_message(settings.DATA_UPLOAD_MAX_MEMORY_SIZE))
    return error_response(request, 400, "the request could not be understood")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(request, 403, "you may not do this")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return error_response(request, 404, "not found")


def server_error(request: HttpRequest) -> HttpResponse:
    return error_response(request, 500, "the arena failed on this request; it is logged", with_id=True)
