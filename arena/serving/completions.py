"""`/v1/completions`: raw-text completions, and the log-probabilities of given tokens.

What lm-evaluation-harness's ``local-completions`` model calls: token ids as the prompt, ``echo``
with ``logprobs`` and ``max_tokens`` 0 or 1 to read each prompt token's log-probability, which is how it
scores multiple-choice tasks by log-likelihood. No chat template is applied, as in vLLM's server.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from pydantic import BaseModel, ConfigDict, Field

from arena.evaluations.cache import POOL
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from arena.serving.chat import entry_for
from arena.serving.protocol import STOP_LIMIT, Refused, allow, parse_json, token_required, usage, validate
from arena.serving.services import serve_blend
from ensembles.backends import BackendError, DecodingParams
from ensembles.backends.hf import TokenScore, TransformersBackend, linear_pool
from ensembles.errors import EnsembleError
from ensembles.strategies import STRATEGIES

MAX_PROMPTS = 64


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send optional fields (user, stream_options) we need not read

    model: str = Field(min_length=1, max_length=100)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = Field(default=16, ge=0, le=2048)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int = Field(default=0, ge=0)
    stop: list[str] | str | None = None
    n: int = Field(default=1, ge=1, le=16)
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=20)
    stream: bool = False
    suffix: str | None = None


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[str | list[int]]:
    """The request's prompts, each a string or a list of token ids."""
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise Refused(400, "prompt: give a string, a list of strings or a list of token ids", param="prompt")
    if isinstance(prompt[0], int):
        return [prompt]  # type: ignore[list-item]  # one list of token ids
    prompts: list[str | list[int]] = list(prompt)  # type: ignore[arg-type]
    if len(prompts) > MAX_PROMPTS:
        raise Refused(400, f"prompt: at most {MAX_PROMPTS} prompts in one request", param="prompt")
    if any(isinstance(p, list) and not p for p in prompts):
        raise Refused(400, "prompt: a list of token ids may not be empty", param="prompt")
    return prompts


def _token_ids(backend: TransformersBackend, prompt: str | list[int]) -> list[int]:
    if isinstance(prompt, str):
        ids = backend.encode(prompt)
        if not ids:
            raise Refused(400, "prompt: the text has no tokens; a completion needs at least one", param="prompt")
        return ids
    size = backend.vocab_size
    bad = next((t for t in prompt if not 0 <= t < size), None)
    if bad is not None:
        raise Refused(
            400, f"prompt: token id {bad} is outside this model's vocabulary (0 to {size - 1})", param="prompt"
        )
    return prompt


def _logprobs_block(
    backend: TransformersBackend, ids: list[int], scores: list[float | None], tops: list[Any] | None
) -> dict[str, Any]:
    """OpenAI's legacy ``logprobs`` object: tokens, their log-probabilities, top alternatives, character offsets."""
    tokens = backend.token_text(ids)
    offsets, at = [], 0
    for text in tokens:
        offsets.append(at)
        at += len(text)
    top_logprobs = None
    if tops is not None:
        # The first prompt token has no context, hence no distribution: None there, as OpenAI returns it.
        top_logprobs = [
            None if top is None else {backend.token_text([t])[0]: round(lp, 6) for t, lp in top} for top in tops
        ]
    return {
        "tokens": tokens,
        "token_logprobs": [None if lp is None else round(lp, 6) for lp in scores],
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }


def _complete_model(backend: TransformersBackend, body: CompletionRequest, params: DecodingParams) -> tuple[list, dict]:
    """Choices for every prompt (n each) from one local model, and the prompt tokens counted."""
    prompts = [_token_ids(backend, p) for p in _prompts(body.prompt)]
    limit = backend.context_length
    longest = max(map(len, prompts))
    if limit and longest + body.max_tokens > limit:
        raise Refused(
            400,
            f"prompt: {longest} tokens plus max_tokens {body.max_tokens} exceed this model's context of {limit}",
            param="prompt",
        )
    seqs = [ids for ids in prompts for _ in range(body.n)]
    # n samples of one prompt differ by seed; at temperature 0 they are one greedy answer, generated once.
    if body.max_tokens > 0:
        draws = body.n if params.temperature > 0 else 1
        completions = [
            backend.generate_ids(prompts, params.model_copy(update={"seed": params.seed + k})) for k in range(draws)
        ]
        completions *= body.n // draws
        outs = [completions[k][i] for i in range(len(prompts)) for k in range(body.n)]
    else:
        outs = [None] * len(seqs)
    choices = []
    want = body.logprobs is not None
    if want:
        full = [ids + (out.ids if out else []) for ids, out in zip(seqs, outs, strict=True)]
        starts = [0 if body.echo else len(ids) for ids in seqs]
        scored = backend.score_tokens(full, starts, top_k=body.logprobs or 0)
    for index, (ids, out) in enumerate(zip(seqs, outs, strict=True)):
        text = out.text if out else ""
        choice: dict[str, Any] = {"index": index, "text": text, "logprobs": None}
        if body.echo:
            choice["text"] = backend.tokenizer.decode(ids) + text
        if want:
            row: list[TokenScore] = scored[index]
            shown = ids + (out.ids if out else []) if body.echo else (out.ids if out else [])
            lps: list[float | None] = [s.logprob for s in row]
            tops: list[Any] = [s.top for s in row]
            if body.echo:
                lps, tops = [None, *lps], [None, *tops]
            choice["logprobs"] = _logprobs_block(backend, shown, lps, tops if body.logprobs else None)
        choice["finish_reason"] = out.finish_reason if out else "length"
        choices.append(choice)
    spent = {"prompt": sum(len(ids) for ids in prompts), "completion": sum(len(o.ids) for o in outs if o)}
    return choices, spent


def _pool_blend(blend: Entry, body: CompletionRequest) -> tuple[list, dict]:
    """A linear probability pool over the members' next-token distributions (members share a tokenizer).

    It scores given tokens and picks at most one next token, the pooled most likely: what a
    log-likelihood request (lm-eval's: echo, max_tokens 1, logprobs 1) asks.
    """
    if body.max_tokens > 1:
        raise Refused(400, "max_tokens: a probability-pool blend scores tokens and picks at most 1", param="max_tokens")
    if body.max_tokens and body.temperature > 0:
        raise Refused(400, "temperature: a pool's next token is its most likely one; send 0", param="temperature")
    if body.n > 1:
        raise Refused(400, "n: a blend gives one combined answer per prompt", param="n")
    backends = []
    for member in blend.ordered_members():
        backend = None if member.is_blend else backend_for(member)
        if not isinstance(backend, TransformersBackend):
            raise Refused(
                400,
                f"logprobs: member {member.name!r} is not a local model, so it cannot score tokens",
                param="logprobs",
            )
        backends.append(POOL.get(backend.fingerprint(), lambda b=backend: b))
    vocabularies = [b.tokenizer.get_vocab() for b in backends]
    if any(v != vocabularies[0] for v in vocabularies[1:]):
        raise Refused(
            400,
            "logprobs: the blend's members have different tokenizers, so token probabilities do not pool",
            param="logprobs",
        )
    first = backends[0]
    prompts = [_token_ids(first, p) for p in _prompts(body.prompt)]
    limit = min((n for n in (b.context_length for b in backends) if n), default=None)
    if limit and max(map(len, prompts)) + body.max_tokens > limit:
        raise Refused(400, f"prompt: longer than the members' context of {limit} tokens", param="prompt")
    k = body.logprobs or 0
    pooled = linear_pool(backends, prompts, [0 if body.echo else len(ids) for ids in prompts], k)
    specials = set(first.tokenizer.all_special_ids)
    choices = []
    for index, (ids, got) in enumerate(zip(prompts, pooled, strict=True)):
        shown: list[int] = list(ids) if body.echo else []
        lps: list[float | None] = [None, *(s.logprob for s in got.scores)] if body.echo else []
        tops: list[Any] = [None, *(s.top for s in got.scores)] if body.echo else []
        text, finish = (first.tokenizer.decode(ids) if body.echo else ""), "length"
        if body.max_tokens:
            token, logprob = got.following[0]
            shown.append(token)
            lps.append(logprob)
            tops.append(got.following[:k])
            if token in specials:
                finish = "stop"
            else:
                text += first.tokenizer.decode([token])
        block = _logprobs_block(first, shown, lps, tops if k else None) if body.logprobs is not None else None
        choices.append({"index": index, "text": text, "logprobs": block, "finish_reason": finish})
    # Every member reads every prompt token.
    spent = {"prompt": sum(len(ids) for ids in prompts) * len(backends), "completion": body.max_tokens * len(prompts)}
    return choices, spent


def _complete_blend(blend: Entry, body: CompletionRequest, params: DecodingParams) -> tuple[list, dict]:
    if body.echo or body.logprobs is not None:
        pool = STRATEGIES.get(blend.strategy)(blend.params).params
        if blend.strategy != "logprob_pool" or getattr(pool, "pool", None) != "linear":
            raise Refused(
                400,
                f"{'logprobs' if body.logprobs is not None else 'echo'}: a {blend.strategy} blend defines no token "
                "log-probabilities; a logprob_pool blend with pool linear does",
                param="logprobs" if body.logprobs is not None else "echo",
            )
        return _pool_blend(blend, body)
    prompts = _prompts(body.prompt)
    if any(not isinstance(p, str) for p in prompts):
        raise Refused(
            400, "prompt: a blend's members may tokenize differently; give the prompt as text", param="prompt"
        )
    if body.n > 1:
        raise Refused(400, "n: a blend gives one combined answer per prompt", param="n")
    choices, prompt_tokens, completion_tokens = [], 0, 0
    for index, prompt in enumerate(prompts):
        text, _, spent = serve_blend(blend, str(prompt), params)
        prompt_tokens += spent.prompt_tokens
        completion_tokens += spent.completion_tokens
        choices.append({"index": index, "text": text, "logprobs": None, "finish_reason": "stop"})
    return choices, {"prompt": prompt_tokens, "completion": completion_tokens}


def complete(request: HttpRequest) -> HttpResponse:
    body = validate(CompletionRequest, parse_json(request.body))
    if body.stream:
        raise Refused(400, "stream: /v1/completions does not stream; use /v1/chat/completions", param="stream")
    if body.suffix:
        raise Refused(400, "suffix: insertion (fill-in-the-middle) is not supported", param="suffix")
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if len(stop) > STOP_LIMIT or any(not s or len(s) > 200 for s in stop):
        raise Refused(400, f"stop: at most {STOP_LIMIT} non-empty sequences of up to 200 characters", param="stop")
    entry = entry_for(request.auth, body.model)  # type: ignore[attr-defined]
    # max_tokens 0 generates nothing; the params still need a positive bound.
    params = DecodingParams(
        max_new_tokens=max(body.max_tokens, 1),
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=stop,
    )
    started = time.perf_counter()
    try:
        if entry.is_blend:
            choices, spent = _complete_blend(entry, body, params)
        else:
            backend = backend_for(entry)
            if not isinstance(backend, TransformersBackend):
                raise Refused(
                    400, "model: only local models (hf, gguf, merges) answer raw-text completions", param="model"
                )
            loaded = POOL.get(backend.fingerprint(), lambda: backend)
            choices, spent = _complete_model(loaded, body, params)  # type: ignore[arg-type]
    except (BackendError, EnsembleError) as exc:
        raise Refused(422, str(exc), param="model", code="model_error") from None
    return JsonResponse(
        {
            "id": "cmpl-" + secrets.token_hex(12),
            "object": "text_completion",
            "created": int(time.time()),
            "model": entry.name,
            "choices": choices,
            "usage": usage(spent["prompt"], spent["completion"]),
            "arena": {"latency_s": round(time.perf_counter() - started, 4)},
        }
    )


# Bearer-token API: no cookies, so no CSRF to forge.
completions = csrf_exempt(allow("POST")(token_required(complete)))
