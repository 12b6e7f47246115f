"""`stream: true` at /v1/chat/completions: the answer as Server-Sent Events, the way OpenAI and vLLM send it.

A role delta first, then content deltas, a chunk with each choice's `finish_reason`, with
`stream_options.include_usage` a last chunk carrying `usage` and no choices, then `data: [DONE]`.
A single model streams its tokens as they are generated and the finished answer goes into the
generation cache, as a non-streamed one does; a cached answer is replayed as one delta. A blend decides
before the first byte (its members' answers are cached one by one) and streams its answer as one delta.
A client that goes away stops the generation at its next token. The usage chunk carries the answer's
cost (``usage.cost`` and ``arena.cost``), as a non-streamed answer does.

`/v1/completions` streams its `text_completion` chunks through the same ``Chunks``: each choice's text
once it is decided (through the generation cache), its finish reason, the usage chunk, `data: [DONE]`.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Generator, Iterator
from contextlib import closing
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse

from arena.core.export import relay
from arena.evaluations import cache
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from arena.serving.chat import prompt_of
from arena.serving.protocol import ChatRequest, Refused, chat_logprobs, decoding_params
from arena.serving.services import Spent, generate, reply
from ensembles.backends import BackendError, DecodingParams, Generation, Prompt
from ensembles.errors import EnsembleError

log = logging.getLogger(__name__)


def chat_stream(request: HttpRequest, body: ChatRequest, entry: Entry) -> StreamingHttpResponse:
    """The streamed answer to ``body``; what can fail before the first byte (a blend's decision, loading
    the model) is a Refused, answered with its status like a non-streamed request."""
    params = decoding_params(body)
    prompt = prompt_of(body)
    options = body.stream_options or {}
    chunks = Chunks(entry.name, include_usage=bool(options.get("include_usage")), logprobs=bool(body.logprobs))
    # Greedy choices are all the same answer, generated once; samples take seeds seed, seed+1, ...
    runs = [params.model_copy(update={"seed": params.seed + i}) for i in range(body.n if params.temperature else 1)]
    try:
        if entry.is_blend:
            decided = [reply(entry, prompt, run) for run in runs]
            events = chunks.for_blend(body.n, decided, params.top_logprobs)
        else:
            events = chunks.for_model(body.n, _ModelAnswers(entry, prompt, runs), params.top_logprobs)
    except (BackendError, EnsembleError) as exc:
        raise Refused(422, str(exc), param="model", code="model_error") from None
    # Under ASGI (daphne) a sync iterator would be read whole before the first byte is sent.
    content = relay(events) if isinstance(request, ASGIRequest) else events
    response = StreamingHttpResponse(content, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx would otherwise hold the chunks back
    return response


class _ModelAnswers:
    """A single model's answer for each run: the cached one, or a stream whose finished text is cached.

    Made before the response starts, so that a model that cannot load is a 422 and not a broken stream.
    """

    def __init__(self, entry: Entry, prompt: Prompt, runs: list[DecodingParams]) -> None:
        self.entry, self.prompt, self.runs = entry, prompt, runs
        backend = backend_for(entry)
        self.fingerprint = backend.fingerprint()
        self.found = [cache.cached(self.fingerprint, prompt, run) is not None for run in runs]
        if not all(self.found):
            self.model = cache.POOL.get(self.fingerprint, lambda: backend)

    def answer(self, i: int) -> Generator[str | Generation, None, None]:
        """Run ``i``'s text in pieces, then its Generation."""
        if self.found[i]:
            gen = generate(self.entry, self.prompt, self.runs[i])[0]
            if gen.text:
                yield gen.text
            yield gen
            return
        out = yield from self.model.stream(self.prompt, self.runs[i])
        cache.store(self.fingerprint, self.prompt, self.runs[i], out)
        yield out


class Chunks:
    """The event stream of one chat completion: every chunk shares its id, creation time and model."""

    def __init__(self, model: str, *, include_usage: bool, logprobs: bool, text: bool = False) -> None:
        # ``text``: the chunks of /v1/completions (`text_completion`), else of a chat completion.
        self.text = text
        self.id = ("cmpl-" if text else "chatcmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model
        self.include_usage = include_usage
        self.logprobs = logprobs
        self.started = time.perf_counter()

    def event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion" if self.text else "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if not self.text:
            chunk["system_fingerprint"] = None
        if self.include_usage:
            chunk["usage"] = None  # as OpenAI sends it: null on every chunk but the last
        chunk.update(extra)
        return b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n"

    def delta(self, indexes: range, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> bytes:
        return self.event(
            [{"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish} for i in indexes]
        )

    def end(self, spent: Spent, how: dict[str, Any] | None) -> Iterator[bytes]:
        if self.include_usage:
            # The arena's extension (latency, how a blend decided, its cost measures) rides on the usage chunk.
            arena = {"latency_s": round(time.perf_counter() - self.started, 4), "blend": how, "cost": spent.measures()}
            yield self.event([], usage=spent.usage(), arena=arena)
        yield b"data: [DONE]\n\n"

    def for_texts(self, choices: list[dict[str, Any]], spent: Spent) -> Generator[bytes, None, None]:
        """/v1/completions' decided choices: each one's text (with its logprobs), then its finish reason."""
        for choice in choices:
            index = choice["index"]
            if choice["text"] or choice["logprobs"]:
                yield self.event(
                    [{"index": index, "text": choice["text"], "logprobs": choice["logprobs"], "finish_reason": None}]
                )
            yield self.event([{"index": index, "text": "", "logprobs": None, "finish_reason": choice["finish_reason"]}])
        yield from self.end(spent, None)

    def error(self, exc: Exception) -> Iterator[bytes]:
        """A failure after the first byte: the status is sent already, so the error is an event (as vLLM sends it)."""
        log.warning("stream %s of %s failed: %s", self.id, self.model, exc)
        error = {"message": str(exc), "type": "model_error", "param": "model", "code": "model_error"}
        yield b"data: " + json.dumps({"error": error}, ensure_ascii=False).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    def finish(self, indexes: range, gen: Generation, top: int) -> bytes:
        # A choice's logprobs ride on its finish chunk: a client joins every chunk's tokens in order.
        logprobs = chat_logprobs(gen, top) if self.logprobs else None
        return self.delta(indexes, {}, gen.finish_reason, logprobs)

    def for_model(self, n: int, answers: _ModelAnswers, top: int) -> Generator[bytes, None, None]:
        yield self.delta(range(n), {"role": "assistant", "content": ""})
        spent = Spent()
        try:
            for i in range(len(answers.runs)):
                # One run answers every choice when decoding is greedy, else choice i.
                indexes = range(n) if len(answers.runs) == 1 else range(i, i + 1)
                # Closed with this stream, so a client that leaves stops the model's generation at once.
                with closing(answers.answer(i)) as pieces:
                    for piece in pieces:
                        if isinstance(piece, Generation):
                            spent.add(Spent.of(answers.entry, piece, answers.found[i]))
                            yield self.finish(indexes, piece, top)
                        else:
                            yield self.delta(indexes, {"content": piece})
        except (BackendError, EnsembleError) as exc:
            yield from self.error(exc)
            return
        yield from self.end(spent, None)

    def for_blend(
        self, n: int, decided: list[tuple[Generation, dict[str, Any] | None, Spent]], top: int
    ) -> Generator[bytes, None, None]:
        yield self.delta(range(n), {"role": "assistant", "content": ""})
        spent = Spent()
        for i, (gen, _, cost) in enumerate(decided):
            indexes = range(n) if len(decided) == 1 else range(i, i + 1)
            if gen.text:
                yield self.delta(indexes, {"content": gen.text})
            yield self.finish(indexes, gen, top)
            spent.add(cost)
        yield from self.end(spent, decided[0][1])
