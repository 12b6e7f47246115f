"""`POST /v1/chat/completions`: one entry, single model or blend, answers a conversation.

The whole conversation goes to each model as turns, rendered by that model's own chat template
(a model without one reads a plain transcript); a single user turn is sent as the bare prompt,
which is how runs send items, so serving and the leaderboard share the generation cache.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from redis import RedisError

from arena.registry.models import Entry
from arena.serving import shadows
from arena.serving.protocol import (
    ChatRequest,
    Refused,
    chat_logprobs,
    conversation,
    decoding_params,
    parse_chat,
)
from arena.serving.queries import servable_entries
from arena.serving.services import Spent, reply
from arena.teams.models import ApiToken
from ensembles.backends import BackendError, Generation, Prompt
from ensembles.errors import EnsembleError

log = logging.getLogger(__name__)

# As long as Stripe keeps an Idempotency-Key: a client's retries come within minutes, a day is ample.
IDEMPOTENCY_TTL_S = 24 * 3600
# A first request still being answered holds its key this long at most (a blend's slowest answer).
IDEMPOTENCY_LOCK_S = 600
REPLAYED_HEADER = "Idempotent-Replayed"


def entry_for(token: ApiToken, name: str) -> Entry:
    """The token's team's servable entry called ``name``; a 404 for anyone else's or none."""
    entry = servable_entries(token.team).filter(name=name).first()
    if entry is None:
        raise Refused(404, f"the model {name!r} does not exist", param="model", code="model_not_found")
    return entry


def chat_completions(request: HttpRequest) -> HttpResponse:
    token: ApiToken = request.auth  # type: ignore[attr-defined]
    body = parse_chat(request.body)
    entry = entry_for(token, body.model)
    if body.stream:
        from arena.serving import streaming  # it builds on this module's prompt_of

        return streaming.chat_stream(request, body, entry)
    key = request.headers.get("Idempotency-Key")

    def build() -> dict[str, Any]:
        # A sampled share is also answered by the entry's shadow, on a worker, after this answer is built.
        return shadows.offer(entry, body, answer(entry, body))

    if not key:
        return JsonResponse(build())
    return idempotent(token, key, request.body, build)


def idempotent(token: ApiToken, key: str, raw: bytes, build: Callable[[], dict[str, Any]]) -> HttpResponse:
    """The first answer given under ``key`` for this team, built once; the same key with another body is a 409.

    Kept in the shared cache (Redis), so every web process replays it; when the cache is unreachable
    the request is answered as if it carried no key.
    """
    if len(key) > 255:
        raise Refused(400, "Idempotency-Key: at most 255 characters", param="Idempotency-Key")
    name = hashlib.sha256(key.encode()).hexdigest()
    stored_at, lock_at = f"idempotency:{token.team_id}:{name}", f"idempotency-lock:{token.team_id}:{name}"
    request_digest = hashlib.sha256(raw).hexdigest()
    try:
        stored = cache.get(stored_at)
        if stored is None and not cache.add(lock_at, 1, IDEMPOTENCY_LOCK_S):
            stored = cache.get(stored_at)
            if stored is None:
                raise Refused(409, "a request with this Idempotency-Key is still being answered; retry shortly")
    except RedisError:
        log.warning("cache unreachable: answering without the Idempotency-Key", exc_info=True)
        return JsonResponse(build())
    if stored is not None:
        if stored["request"] != request_digest:
            raise Refused(409, "this Idempotency-Key was used with a different request body", param="Idempotency-Key")
        response = JsonResponse(stored["response"])
        response[REPLAYED_HEADER] = "true"
        return response
    try:
        data = build()
        cache.set(stored_at, {"request": request_digest, "response": data}, IDEMPOTENCY_TTL_S)
    except RedisError:
        log.warning("cache unreachable: the answer is not kept under its Idempotency-Key", exc_info=True)
    finally:
        try:
            cache.delete(lock_at)
        except RedisError:
            pass  # the lock expires by itself
    return JsonResponse(data)


def prompt_of(body: ChatRequest) -> Prompt:
    turns = conversation(body)
    if len(turns) == 1 and turns[0]["role"] == "user":
        return turns[0]["content"]
    return turns


def answer(entry: Entry, body: ChatRequest) -> dict[str, Any]:
    """The chat.completion object for ``body``: ``n`` choices, each with its finish reason and logprobs,
    and what the answer cost (``usage.cost`` in US dollars where the models have prices; ``arena.cost``)."""
    prompt = prompt_of(body)
    params = decoding_params(body)
    started = time.perf_counter()
    runs: list[tuple[Generation, dict[str, Any] | None]] = []
    spent = Spent()
    # Greedy choices are all the same answer: generated once. Samples take seeds seed, seed+1, ...,
    # each its own cached generation, so a repeated request gets the same n answers.
    for i in range(body.n if params.temperature > 0 else 1):
        run_params = params.model_copy(update={"seed": params.seed + i}) if i else params
        try:
            gen, how, cost = reply(entry, prompt, run_params)
        except (BackendError, EnsembleError) as exc:
            raise Refused(422, str(exc), param="model", code="model_error") from None
        runs.append((gen, how))
        spent.add(cost)
    choices = []
    for index in range(body.n):
        gen, _ = runs[index % len(runs)]
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": gen.text, "refusal": None, "tool_calls": []},
                "logprobs": chat_logprobs(gen, params.top_logprobs) if body.logprobs else None,
                "finish_reason": gen.finish_reason,
            }
        )
    return {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": entry.name,
        "system_fingerprint": None,
        "choices": choices,
        "usage": spent.usage(),
        "arena": {"latency_s": round(time.perf_counter() - started, 4), "blend": runs[0][1], "cost": spent.measures()},
    }
