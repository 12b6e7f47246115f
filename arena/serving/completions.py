"""`/v1/completions`: raw-text completions, and the log-probabilities of given tokens.

What lm-evaluation-harness's ``local-completions`` model calls: token ids as the prompt, ``echo``
with ``logprobs`` and ``max_tokens`` 0 or 1 to read each prompt token's log-probability, which is how it
scores multiple-choice tasks by log-likelihood. No chat template is applied, as in vLLM's server.
Generations go through the generations cache, keyed by the prompt's token ids; ``stream`` sends the
decided choices as `text_completion` chunks (streaming.py). Every answer says what it cost, as chat does.
A logprob_pool blend scores tokens by the board's pooling where it is defined per option (log_linear).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from pydantic import BaseModel, ConfigDict, Field

from arena.core.export import relay
from arena.evaluations import cache
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from arena.serving.chat import entry_for
from arena.serving.protocol import STOP_LIMIT, Refused, allow, parse_json, token_required, validate
from arena.serving.services import Spent, prices_of, serve_blend
from arena.serving.streaming import Chunks
from ensembles.backends import BackendError, DecodingParams
from ensembles.backends.hf import TokenScore, TransformersBackend, pool_tokens
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
    stream_options: dict[str, Any] | None = None
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


def _complete_model(entry: Entry, body: CompletionRequest, params: DecodingParams) -> tuple[list, Spent]:
    """Choices for every prompt (n each) from one local model, through the generations cache, and their cost."""
    backend = backend_for(entry)
    if not isinstance(backend, TransformersBackend):
        raise Refused(400, "model: only local models (hf, gguf, merges) answer raw-text completions", param="model")
    fingerprint = backend.fingerprint()
    loaded: TransformersBackend = cache.POOL.get(fingerprint, lambda: backend)  # type: ignore[assignment]
    prompts = [_token_ids(loaded, p) for p in _prompts(body.prompt)]
    limit = loaded.context_length
    longest = max(map(len, prompts))
    if limit and longest + body.max_tokens > limit:
        raise Refused(
            400,
            f"prompt: {longest} tokens plus max_tokens {body.max_tokens} exceed this model's context of {limit}",
            param="prompt",
        )
    seqs = [ids for ids in prompts for _ in range(body.n)]
    spent = Spent(calls=len(prompts))
    # n samples of one prompt differ by seed; at temperature 0 they are one greedy answer, generated once.
    if body.max_tokens > 0:
        draws = body.n if params.temperature > 0 else 1
        reads = [
            cache.completions(fingerprint, lambda: loaded, prompts, params.model_copy(update={"seed": params.seed + k}))
            for k in range(draws)
        ]
        outs = [reads[k % draws].generations[i] for i in range(len(prompts)) for k in range(body.n)]
        spent.calls = draws * len(prompts)
        spent.new_calls = sum(read.new for read in reads)
        spent.compute_s = sum(g.latency_s for read in reads for g in read.generations if g.key in read.computed)
    else:
        outs = [None] * len(seqs)
        spent.new_calls = len(prompts)  # scoring given tokens is computed each time
    drawn = [cache.completion_ids(out) if out else [] for out in outs]
    choices = []
    want = body.logprobs is not None
    if want:
        full = [ids + new for ids, new in zip(seqs, drawn, strict=True)]
        starts = [0 if body.echo else len(ids) for ids in seqs]
        scoring = time.perf_counter()
        scored = loaded.score_tokens(full, starts, top_k=body.logprobs or 0)
        spent.compute_s += time.perf_counter() - scoring
    for index, (ids, out, new) in enumerate(zip(seqs, outs, drawn, strict=True)):
        text = out.text if out else ""
        choice: dict[str, Any] = {"index": index, "text": text, "logprobs": None}
        if body.echo:
            choice["text"] = loaded.tokenizer.decode(ids) + text
        if want:
            row: list[TokenScore] = scored[index]
            shown = ids + new if body.echo else new
            lps: list[float | None] = [s.logprob for s in row]
            tops: list[Any] = [s.top for s in row]
            if body.echo:
                lps, tops = [None, *lps], [None, *tops]
            choice["logprobs"] = _logprobs_block(loaded, shown, lps, tops if body.logprobs else None)
        choice["finish_reason"] = out.finish_reason if out else "length"
        choices.append(choice)
    # The prompt counts once however many choices read it, as OpenAI counts it.
    spent.prompt_tokens, spent.completion_tokens = sum(map(len, prompts)), sum(map(len, drawn))
    prices = prices_of(entry)
    spent.usd = prices.cost(spent.prompt_tokens, spent.completion_tokens) if prices else None
    return choices, spent


# The board pools a multiple-choice item's options (ensembles.strategies.pool): each member's option
# log-likelihoods, normalized over the item's options, then pooled. A log-likelihood request names one
# option and none of the others, so a pool is served here only where that normalization cannot change
# the board's choice: log_linear, whose normalized product orders options by the members' summed
# log-likelihoods. A linear pool's choice depends on the other options, which the request does not carry.
SERVED_POOL = "log_linear"


def _pool_blend(blend: Entry, body: CompletionRequest) -> tuple[list, Spent]:
    """Scores of given tokens by a log_linear pool over the members (who share a tokenizer): each token's
    mean member log-probability, so an option's summed score orders options as the board's pool does.

    It scores given tokens and picks at most one next token, the pooled most likely: what a
    log-likelihood request (lm-eval's: echo, max_tokens 1, logprobs 1) asks.
    """
    if body.max_tokens > 1:
        raise Refused(400, "max_tokens: a probability-pool blend scores tokens and picks at most 1", param="max_tokens")
    if body.max_tokens and body.temperature > 0:
        raise Refused(400, "temperature: a pool's next token is its most likely one; send 0", param="temperature")
    if body.n > 1:
        raise Refused(400, "n: a blend gives one combined answer per prompt", param="n")
    backends, members = [], blend.ordered_members()
    for member in members:
        backend = None if member.is_blend else backend_for(member)
        if not isinstance(backend, TransformersBackend):
            raise Refused(
                400,
                f"logprobs: member {member.name!r} is not a local model, so it cannot score tokens",
                param="logprobs",
            )
        backends.append(cache.POOL.get(backend.fingerprint(), lambda b=backend: b))
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
    started = time.perf_counter()
    pooled = pool_tokens(backends, prompts, [0 if body.echo else len(ids) for ids in prompts], k, SERVED_POOL)
    seconds = time.perf_counter() - started
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
    # Every member reads every prompt token: one scoring call each.
    spent = Spent(calls=len(backends), new_calls=len(backends), compute_s=seconds, usd=0.0)
    for member in members:
        member_spent = Spent(
            prompt_tokens=sum(len(ids) for ids in prompts), completion_tokens=body.max_tokens * len(prompts)
        )
        prices = prices_of(member)
        member_spent.usd = prices.cost(member_spent.prompt_tokens, member_spent.completion_tokens) if prices else None
        spent.add(member_spent)
    return choices, spent


def _complete_blend(blend: Entry, body: CompletionRequest, params: DecodingParams) -> tuple[list, Spent, list]:
    """A blend's choices, their cost, and each prompt's account of how the blend decided."""
    if body.echo or body.logprobs is not None:
        asked = "logprobs" if body.logprobs is not None else "echo"
        pool = getattr(STRATEGIES.get(blend.strategy)(blend.params).params, "pool", None)
        if blend.strategy != "logprob_pool":
            raise Refused(
                400,
                f"{asked}: a {blend.strategy} blend defines no log-likelihood of given tokens; "
                f"a logprob_pool blend with pool {SERVED_POOL} does",
                param=asked,
            )
        if pool != SERVED_POOL:
            raise Refused(
                400,
                f"{asked}: a {pool} pool normalizes each member over all of an item's options, which one "
                f"log-likelihood request does not carry; a logprob_pool blend with pool {SERVED_POOL} "
                "orders options as the board does and is served",
                param=asked,
            )
        choices, spent = _pool_blend(blend, body)
        return choices, spent, []
    prompts = _prompts(body.prompt)
    if any(not isinstance(p, str) for p in prompts):
        raise Refused(
            400, "prompt: a blend's members may tokenize differently; give the prompt as text", param="prompt"
        )
    if body.n > 1:
        raise Refused(400, "n: a blend gives one combined answer per prompt", param="n")
    choices, spent, accounts = [], Spent(), []
    for index, prompt in enumerate(prompts):
        text, how, gen, cost = serve_blend(blend, str(prompt), params)
        spent.add(cost)
        accounts.append(how)
        choices.append({"index": index, "text": text, "logprobs": None, "finish_reason": gen.finish_reason or "stop"})
    return choices, spent, accounts


def complete(request: HttpRequest) -> HttpResponse:
    body = validate(CompletionRequest, parse_json(request.body))
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
    accounts: list = []
    try:
        if entry.is_blend:
            choices, spent, accounts = _complete_blend(entry, body, params)
        else:
            choices, spent = _complete_model(entry, body, params)
    except (BackendError, EnsembleError) as exc:
        raise Refused(422, str(exc), param="model", code="model_error") from None
    if body.stream:
        options = body.stream_options or {}
        chunks = Chunks(entry.name, include_usage=bool(options.get("include_usage")), logprobs=False, text=True)
        events = chunks.for_texts(choices, spent)
        # Under ASGI (daphne) a sync iterator would be read whole before the first byte is sent.
        content = relay(events) if isinstance(request, ASGIRequest) else events
        response = StreamingHttpResponse(content, content_type="text/event-stream; charset=utf-8")
        response["Cache-Control"] = "no-cache"
        return response
    arena: dict[str, Any] = {"latency_s": round(time.perf_counter() - started, 4), "cost": spent.measures()}
    if accounts:
        arena["blend"] = accounts
    return JsonResponse(
        {
            "id": "cmpl-" + secrets.token_hex(12),
            "object": "text_completion",
            "created": int(time.time()),
            "model": entry.name,
            "choices": choices,
            "usage": spent.usage(),
            "arena": arena,
        }
    )


# Bearer-token API: no cookies, so no CSRF to forge.
completions = csrf_exempt(allow("POST")(token_required(complete)))
