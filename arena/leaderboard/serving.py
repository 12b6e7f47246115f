"""Every entry, single model or blend, served at an OpenAI-compatible endpoint.

`/v1/models` and `/v1/chat/completions` with a team API token as the bearer key, so a team
calls its best blend like one model. Generation runs in the web process through the same
backends and model pool the workers use, and every member output goes through the same
content-addressed generation cache, so a repeated request costs no model call.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from django.db.models import Q
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from arena.evaluations.models import Generation
from arena.evaluations.services import POOL, fitted_for_serving, generation_key
from arena.registry.models import Entry, Kind, MergeState
from arena.registry.services import backend_for
from arena.teams.models import ApiToken
from arena.teams.services import authenticate_token
from ensembles.backends import BackendError, DecodingParams
from ensembles.backends import Generation as LibGeneration
from ensembles.errors import EnsembleError
from ensembles.metrics import EXTRACTORS
from ensembles.parsing import load_json
from ensembles.strategies import STRATEGIES, MemberAnswer


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
        # A merge is a model once its weights are built; before that it has nothing to serve.
        for e in Entry.objects.filter(team=token.team).exclude(
            Q(kind=Kind.MERGE) & ~Q(materialization__state=MergeState.DONE)
        )
    ]
    return JsonResponse({"object": "list", "data": data})


def _prompt(messages: list[Message]) -> str:
    """One prompt from the conversation; each backend applies its own chat template to it."""
    if len(messages) == 1:
        return messages[0].content
    return "\n\n".join(f"{m.role}: {m.content}" for m in messages) + "\n\nassistant:"


def _generate(entry: Entry, prompt: str, params: DecodingParams) -> tuple[LibGeneration, bool]:
    """One member's output, from the generation cache when it has it; (output, was_cached)."""
    backend = backend_for(entry)
    fingerprint = backend.fingerprint()
    key = generation_key(fingerprint, prompt, params)
    cached = Generation.objects.filter(key=key).first()
    if cached is not None:
        return (
            LibGeneration(
                text=cached.text,
                token_logprobs=cached.token_logprobs,
                prompt_tokens=cached.prompt_tokens,
                completion_tokens=cached.completion_tokens,
            ),
            True,
        )
    out = POOL.get(fingerprint, lambda: backend).generate([prompt], params)[0]
    Generation.objects.get_or_create(
        key=key,
        defaults={
            "fingerprint": fingerprint,
            "prompt": prompt,
            "params": params.model_dump(mode="json"),
            "text": out.text,
            "token_logprobs": out.token_logprobs,
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens,
            "latency_s": out.latency_s,
        },
    )
    return out, False


def _serve_blend(
    blend: Entry, prompt: str, params: DecodingParams, outputs: dict[int, LibGeneration] | None = None
) -> tuple[str, dict[str, Any], LibGeneration]:
    """A blend's reply; a member that is a blend is served first the same way (registration bounds the depth).

    ``outputs`` holds each model's output for this request, so a model reached by two branches of a
    hybrid generates, and counts in the usage, once.
    """
    cls = STRATEGIES.get(blend.strategy)
    strategy = cls(blend.params)
    fitted = None
    if strategy.needs_fit:
        # A learned blend answers as fitted on the dev split of its latest finished run, and reads
        # members' answers the way that suite does.
        fitted = fitted_for_serving(blend)
        strategy = fitted.strategy
    outputs = {} if outputs is None else outputs
    # Otherwise free text has no task-specific extraction here: members vote on their first lines.
    first_line = EXTRACTORS.get(fitted.extraction if fitted else "first_line")
    answers, served = [], {}
    for member in blend.ordered_members():
        if member.is_blend:
            text, served[member.name], _ = _serve_blend(member, prompt, params, outputs)
            answers.append(MemberAnswer(member=member.name, answer=first_line(text), text=text))
            continue
        if member.pk not in outputs:
            outputs[member.pk] = _generate(member, prompt, params)[0]
        out = outputs[member.pk]
        answers.append(
            MemberAnswer(member=member.name, answer=first_line(out.text), text=out.text, logprob=out.mean_logprob)
        )
    if strategy.calls_models:
        # The fuser, aggregator or pipeline steps are the team's models, called through the generation cache.
        from arena.evaluations.calls import ArenaCaller

        decision = strategy.combine(answers, item_input=prompt, caller=ArenaCaller(blend.team, params, first_line))
    else:
        decision = strategy.combine(answers, item_input=prompt)
    # Reply with the full text of the first member whose answer won (a fused answer is its own text).
    winner = next((a for a in answers if a.answer.strip().lower() == decision.answer.strip().lower()), None)
    text = winner.text if winner else decision.answer
    usage = LibGeneration(
        text=text,
        prompt_tokens=sum(o.prompt_tokens for o in outputs.values()),
        completion_tokens=sum(o.completion_tokens for o in outputs.values()),
    )
    how = {"strategy": blend.strategy, "members": [a.member for a in answers], **decision.details}
    if fitted:
        how["fitted_on"] = {"run": fitted.run_id, "suite": fitted.suite, "split": "dev"}
    if served:
        how["inner"] = served  # how each inner blend decided
    return text, how, usage


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
            text, how, usage = _serve_blend(entry, prompt, params)
        else:
            usage, _ = _generate(entry, prompt, params)
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
