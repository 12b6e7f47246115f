"""The OpenAI API's shapes as /v1 speaks them: requests, answers, errors and the bearer key.

Requests accept what OpenAI's reference and vLLM's server accept, fields clients send by default
included; what the arena cannot honour (tools, images, audio, JSON schemas, penalties) is a 400 that
names the parameter, never silently ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any, Literal, TypeVar

from django.http import HttpRequest, HttpResponse, JsonResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from arena.core.errors import OPENAI_TYPES
from arena.teams.services import TokenRefused, authenticate_request
from ensembles.backends import DecodingParams, Generation, Message
from ensembles.parsing import load_json

# OpenAI's error types by status, beyond the ones every /v1 error page shares (arena.core.errors).
TYPES = {**OPENAI_TYPES, 401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


def error(status: int, message: str, *, param: str | None = None, code: str | None = None) -> JsonResponse:
    """An error in OpenAI's shape; the SDK picks its exception class by the status."""
    kind = TYPES.get(status, "invalid_request_error")
    return JsonResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status=status)


class Refused(Exception):
    """A request the arena answers with an OpenAI error, raised from anywhere in a handler."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JsonResponse:
        return error(self.status, self.message, param=self.param, code=self.code)


View = Callable[..., HttpResponse]


def token_required(view: View) -> View:
    """The team API token as the bearer key, read by the one parser /api/v1 uses too, in ``request.auth``.

    Any role may call /v1: serving answers from the team's entries and changes none of them, so a
    viewer's token serves as a member's does.
    """

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            token = authenticate_request(request)
        except TokenRefused as exc:
            response = error(exc.status, exc.message)
            for name, value in exc.headers.items():
                response[name] = value
            return response
        if token is None:
            return error(401, "a team API token is required as the bearer key (Authorization: Bearer <token>)")
        request.auth = token  # type: ignore[attr-defined]
        try:
            return view(request, *args, **kwargs)
        except Refused as exc:
            return exc.response()

    return wrapped


def allow(*methods: str) -> Callable[[View], View]:
    """Django's require_http_methods, answering a 405 in OpenAI's shape rather than an empty body."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = error(405, f"{request.method} is not allowed here; use {' or '.join(methods)}")
                response["Allow"] = ", ".join(methods)
                return response
            return view(request, *args, **kwargs)

        return wrapped

    return decorate


# Requests ------------------------------------------------------------------------------------------


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")  # image_url, input_audio, file: refused by name below

    type: str = Field(max_length=40)
    text: str | None = Field(default=None, max_length=100_000)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name, refusal, audio: nothing the prompt needs

    role: Literal["system", "developer", "user", "assistant", "tool"]
    # An assistant turn that only called tools has content null.
    content: str | list[ContentPart] | None = Field(default=None, max_length=100_000)
    tool_calls: list[dict[str, Any]] | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=40)


class ChatRequest(BaseModel):
    # Clients send optional fields the arena has no use for (metadata, store, service_tier): ignored,
    # as vLLM ignores them.
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=100)
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    max_tokens: int | None = Field(default=None, ge=1, le=2048)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=2048)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stop: str | list[str] | None = Field(default=None)
    n: int = Field(default=1, ge=1, le=16)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    user: str | None = Field(default=None, max_length=256)
    response_format: ResponseFormat | None = None
    parallel_tool_calls: bool | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None

    @property
    def max_new_tokens(self) -> int:
        # max_tokens is deprecated in favour of max_completion_tokens; either bounds the answer.
        return self.max_completion_tokens or self.max_tokens or 128

    @property
    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


STOP_LIMIT = 16


def parse_json(raw: bytes) -> Any:
    try:
        return load_json(raw or b"null")
    except json.JSONDecodeError as exc:
        raise Refused(400, f"the body is not valid JSON: {exc.msg}") from None


M = TypeVar("M", bound=BaseModel)


def validate(model: type[M], data: Any) -> M:
    """``data`` as ``model``, or a 400 naming the first field that is wrong."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"] if not str(p).startswith(("str", "list[", "function-"))]
        where = ".".join(loc) or "body"  # no location: the body itself
        raise Refused(400, f"{where}: {first['msg']}", param=loc[0] if loc else None) from None


def parse_chat(raw: bytes) -> ChatRequest:
    body = validate(ChatRequest, parse_json(raw))
    refuse_what_cannot_be_honoured(body)
    return body


def refuse_what_cannot_be_honoured(body: ChatRequest) -> None:
    """A 400 naming the first parameter whose meaning the arena would otherwise silently drop."""
    if body.tools:
        raise Refused(400, "tools are not supported: the arena's entries do not call tools", param="tools")
    if body.functions:
        raise Refused(400, "functions are not supported: the arena's entries do not call tools", param="functions")
    if body.tool_choice not in (None, "none"):
        raise Refused(400, "tool_choice: only 'none' is supported (no tools)", param="tool_choice")
    if body.function_call not in (None, "none"):
        raise Refused(400, "function_call: only 'none' is supported (no tools)", param="function_call")
    if body.response_format and body.response_format.type != "text":
        raise Refused(
            400,
            f"response_format: {body.response_format.type!r} is not supported; only 'text'",
            param="response_format",
        )
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(body, name):
            raise Refused(400, f"{name}: only 0 is supported", param=name)
    if body.logit_bias:
        raise Refused(400, "logit_bias is not supported", param="logit_bias")
    if body.modalities and set(body.modalities) != {"text"}:
        raise Refused(400, "modalities: only ['text'] is supported", param="modalities")
    if body.audio:
        raise Refused(400, "audio output is not supported", param="audio")
    if body.top_logprobs and not body.logprobs:
        raise Refused(400, "top_logprobs needs logprobs set to true", param="top_logprobs")
    if len(body.stops) > STOP_LIMIT or any(not s or len(s) > 200 for s in body.stops):
        raise Refused(400, f"stop: at most {STOP_LIMIT} non-empty sequences of up to 200 characters", param="stop")
    for i, message in enumerate(body.messages):
        if message.tool_calls:
            raise Refused(400, "tool calls are not supported", param=f"messages[{i}].tool_calls")
        if message.content is None and message.role != "assistant":
            raise Refused(400, f"messages[{i}].content: a {message.role} message needs content", param="messages")
        for j, part in enumerate(message.content if isinstance(message.content, list) else []):
            if part.type != "text" or part.text is None:
                raise Refused(
                    400,
                    f"messages[{i}].content[{j}]: {part.type!r} content is not supported; only text parts",
                    param=f"messages[{i}].content[{j}].type",
                )


def decoding_params(body: ChatRequest) -> DecodingParams:
    """How ``body`` asks to decode; greedy unless a temperature is given, so answers are reproducible and cached."""
    return DecodingParams(
        max_new_tokens=body.max_new_tokens,
        temperature=body.temperature or 0.0,
        top_p=body.top_p or 1.0,
        seed=body.seed or 0,
        stop=body.stops,
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else 0,
    )


def conversation(body: ChatRequest) -> list[Message]:
    """The turns as every chat template reads them: text content, `developer` as `system`."""
    turns: list[Message] = []
    for m in body.messages:
        if isinstance(m.content, list):
            # vLLM joins text parts with newlines.
            text = "\n".join(p.text or "" for p in m.content)
        else:
            text = m.content or ""
        # OpenAI's newer name for the system turn; chat templates know only `system`.
        turns.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    return turns


# Answers -------------------------------------------------------------------------------------------


def token_logprob(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def chat_logprobs(gen: Generation, top: int) -> dict[str, Any] | None:
    """A choice's `logprobs`: each completion token with its text, bytes and the ``top`` most likely."""
    if gen.completion_tokens and not gen.token_logprobs:
        return None  # an answer with no tokens of its own (a fused blend's) has none to give
    content = []
    for i, lp in enumerate(gen.token_logprobs):
        token = gen.tokens[i] if i < len(gen.tokens) else ""
        entry = token_logprob(token, lp)
        alternatives = gen.top_logprobs[i] if i < len(gen.top_logprobs) else []
        entry["top_logprobs"] = [token_logprob(t, p) for t, p in alternatives[:top]]
        content.append(entry)
    return {"content": content, "refusal": None}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def model_card(name: str, created: int, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owner}
