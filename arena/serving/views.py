"""Every entry, single model or blend, served at an OpenAI-compatible endpoint.

`/v1/models` and `/v1/chat/completions` with a team API token as the bearer key, so a team
calls its best blend like one model.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from arena.registry.models import Entry
from arena.serving.queries import servable_entries
from arena.serving.services import generate, serve_blend
from arena.teams.models import ApiToken
from arena.teams.services import authenticate_token
from ensembles.backends import BackendError, DecodingParams
from ensembles.errors import EnsembleError
from ensembles.parsing import load_json


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: str = Field(pattern="^(system|user|assistant|tool)$")
    content: str = Field(max_length=100_000)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send many optional fields we do not use

    model: str = Field(min_length=1, max_length=100)
    messages: list[Message] = Field(min_length=1, max_length=200)
    max_tokens: int = Field(default=128, ge=1, le=2048)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int = Field(default=0, ge=0)
    stop: list[str] | str | None = None
    logprobs: bool = False


def _error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None):
    return JsonResponse({"error": {"message": message, "type": kind, "param": param, "code": None}}, status=status)


def _token(request) -> ApiToken | None:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return None
    return authenticate_token(header.removeprefix("Bearer ").strip())


@require_http_methods(["GET"])
def models(request):
    token = _token(request)
    if token is None:
        return _error(401, "a team API token is required as the bearer key", "authentication_error")
    data = [
        {"id": e.name, "object": "model", "created": int(e.created_at.timestamp()), "owned_by": token.team.slug}
        for e in servable_entries(token.team)
    ]
    return JsonResponse({"object": "list", "data": data})


def _prompt(messages: list[Message]) -> str:
    """One prompt from the conversation; each backend applies its own chat template to it."""
    if len(messages) == 1:
        return messages[0].content
    return "\n\n".join(f"{m.role}: {m.content}" for m in messages) + "\n\nassistant:"


@csrf_exempt  # bearer-token API: no cookies, so no CSRF to forge
@require_http_methods(["POST"])
def chat_completions(request):
    token = _token(request)
    if token is None:
        return _error(401, "a team API token is required as the bearer key", "authentication_error")
    try:
        body = ChatRequest.model_validate(load_json(request.body or b"null"))
    except json.JSONDecodeError as exc:
        return _error(400, f"body is not valid JSON: {exc.msg}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"  # no location: the body itself
        return _error(400, f"{where}: {first['msg']}", param=str(first["loc"][0]) if first["loc"] else None)
    entry = Entry.objects.filter(team=token.team, name=body.model).first()
    if entry is None:
        return _error(404, f"the model {body.model!r} does not exist", param="model")
    stop = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
    params = DecodingParams(
        max_new_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=tuple(stop)
    )
    prompt = _prompt(body.messages)
    started = time.perf_counter()
    try:
        if entry.is_blend:
            text, how, usage = serve_blend(entry, prompt, params)
        else:
            usage, _ = generate(entry, prompt, params)
            text, how = usage.text, None
    except (BackendError, EnsembleError) as exc:
        return _error(422, str(exc), "model_error", param="model")
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if body.logprobs and not entry.is_blend:
        choice["logprobs"] = {"content": [{"token": "", "logprob": lp} for lp in usage.token_logprobs]}
    response: dict[str, Any] = {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": entry.name,
        "choices": [choice],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
        "arena": {"latency_s": round(time.perf_counter() - started, 4), "blend": how},
    }
    return JsonResponse(response)
