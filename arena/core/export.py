"""Downloads built row by row: CSV through the csv module, JSON as an array, both streamed.

A large run's items are read and written in chunks, so neither the rows nor the whole file sit in
memory. Under ASGI (daphne) Django would read a sync iterator whole before sending its first byte,
so there each chunk is read in the request's own thread through an async iterator instead.
"""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, StreamingHttpResponse

CSV_TYPE = "text/csv; charset=utf-8"
JSON_TYPE = "application/json"


class _Line:
    """What csv.writer writes to: each row comes back as the string it would have written."""

    def write(self, value: str) -> str:
        return value


def csv_lines(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    writer = csv.writer(_Line())
    yield writer.writerow(header)
    for row in rows:
        yield writer.writerow(row)


def json_array(values: Iterable[Any]) -> Iterator[str]:
    """``values`` as one JSON array, an element at a time."""
    yield "["
    for i, value in enumerate(values):
        yield ("," if i else "") + json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False)
    yield "]"


def download(request: HttpRequest, parts: Iterator[str], content_type: str, filename: str) -> StreamingHttpResponse:
    """A streamed attachment named ``filename`` (a name the caller built from ids and slugs)."""
    chunks = _chunked(parts)
    content = relay(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _chunked(parts: Iterator[str], size: int = 64 * 1024) -> Iterator[bytes]:
    """Small strings gathered into chunks of about ``size`` bytes: one write per chunk, not per row."""
    buffer: list[str] = []
    held = 0
    for part in parts:
        buffer.append(part)
        held += len(part)
        if held >= size:
            yield "".join(buffer).encode()
            buffer, held = [], 0
    if buffer:
        yield "".join(buffer).encode()


async def relay(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """``chunks`` read in the request's own thread (models and the database are sync), one at a time.

    When the client disconnects Django cancels the response and this generator is closed, which
    closes ``chunks`` too (a model's stream stops generating).
    """
    try:
        while (chunk := await sync_to_async(_next)(chunks)) is not None:
            yield chunk
    finally:
        if close := getattr(chunks, "close", None):
            await sync_to_async(close)()


def _next(chunks: Iterator[bytes]) -> bytes | None:
    return next(chunks, None)
