"""The generations cache: the only code that reads and writes model outputs by content key.

A generation is keyed by a hash of (model fingerprint, prompt, decoding parameters), the way
lm-evaluation-harness's ``CachingLM`` keys its requests; a sample carries its seed in the parameters,
so each seed is its own generation. Every caller asks here: a run's member batches, log-likelihood
scoring, the judge, strategies' own model calls and the OpenAI endpoint. What is cached is never
computed twice, in this run or a later one, and a prompt asked for twice in one call is generated once.

Two workers that compute the same key at once both store it; the first row stays (the key is unique)
and both read that one back, so every reader sees the same text.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.conf import settings

from arena.evaluations.models import Generation
from ensembles.backends import Backend, DecodingParams, ModelPool, Prompt
from ensembles.backends import Generation as LibGeneration
from ensembles.backends.base import digest_json

# Models stay loaded in the worker process between batches (see ModelPool).
POOL = ModelPool(max_models=settings.ARENA_MAX_LOADED_MODELS)

LoadBackend = Callable[[], Backend]


def generation_key(fingerprint: str, prompt: Prompt, params: DecodingParams) -> str:
    return digest_json({"fingerprint": fingerprint, "prompt": prompt, "params": params.model_dump(mode="json")})


def loglikelihood_key(fingerprint: str, requests: Sequence[tuple[str, str]]) -> str:
    """The key of one item's option scores: every (context, continuation) pair, in order."""
    return digest_json({"fingerprint": fingerprint, "loglikelihood": [list(r) for r in requests]})


@dataclass(frozen=True)
class Read:
    """What a cache read returns: one generation per request, in order, and the keys computed now."""

    generations: list[Generation]
    computed: frozenset[str]

    @property
    def new(self) -> int:
        """How many generations the model computed for this read."""
        return len(self.computed)


def generations(fingerprint: str, load: LoadBackend, prompts: Sequence[Prompt], params: DecodingParams) -> Read:
    """Each prompt's generation by ``fingerprint``'s model: read by key, the missing ones generated in one batch.

    ``load`` makes the backend when the model is not loaded in this process yet. Backend errors are
    raised as they are (a TransientBackendError is retried by the task that asked, see arena.core.retry).
    """
    keys = [generation_key(fingerprint, p, params) for p in prompts]
    found = _read(keys)
    missing = {k: p for k, p in zip(keys, prompts, strict=True) if k not in found}
    if missing:
        outputs = POOL.get(fingerprint, load).generate(list(missing.values()), params)
        Generation.objects.bulk_create(
            [
                _row(key, fingerprint, prompt, params, out)
                for (key, prompt), out in zip(missing.items(), outputs, strict=True)
            ],
            ignore_conflicts=True,
        )
        found = _read(keys)
    return Read([found[k] for k in keys], frozenset(missing))


def cached(fingerprint: str, prompt: Prompt, params: DecodingParams) -> Generation | None:
    """The stored generation for this request, or None when the model has not made it yet."""
    return Generation.objects.filter(key=generation_key(fingerprint, prompt, params)).first()


def store(fingerprint: str, prompt: Prompt, params: DecodingParams, out: LibGeneration) -> Generation:
    """Keep one generation made outside :func:`generations` (an answer streamed as it was generated).

    Only a finished generation belongs here: a stream cut short by its client is not the answer to
    the request. Should another process have stored the key meanwhile, its row stays and is returned.
    """
    key = generation_key(fingerprint, prompt, params)
    Generation.objects.bulk_create([_row(key, fingerprint, prompt, params, out)], ignore_conflicts=True)
    return Generation.objects.get(key=key)


def _row(key: str, fingerprint: str, prompt: Prompt, params: DecodingParams, out: LibGeneration) -> Generation:
    return Generation(
        key=key,
        fingerprint=fingerprint,
        # A conversation is kept as its JSON (the prompt column holds text).
        prompt=prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False),
        params=params.model_dump(mode="json"),
        text=out.text,
        token_logprobs=out.token_logprobs,
        prompt_tokens=out.prompt_tokens,
        completion_tokens=out.completion_tokens,
        latency_s=out.latency_s,
        finish_reason=out.finish_reason,
        tokens=out.tokens,
        top_logprobs=out.top_logprobs,
    )


def loglikelihoods(fingerprint: str, load: LoadBackend, requests: Sequence[Sequence[tuple[str, str]]]) -> Read:
    """Each item's option log-likelihoods (one per (context, continuation) pair, in its ``token_logprobs``).

    The items missing from the cache are scored in one backend call; each stores an equal share of its
    wall time, which is what the run reports as the item's compute.
    """
    keys = [loglikelihood_key(fingerprint, reqs) for reqs in requests]
    found = _read(keys)
    missing = {k: reqs for k, reqs in zip(keys, requests, strict=True) if k not in found}
    if missing:
        started = time.perf_counter()
        logliks = POOL.get(fingerprint, load).loglikelihood([r for reqs in missing.values() for r in reqs])
        share = (time.perf_counter() - started) / len(missing)
        rows, at = [], 0
        for key, reqs in missing.items():
            rows.append(
                Generation(
                    key=key,
                    fingerprint=fingerprint,
                    prompt=reqs[0][0],
                    params={"kind": "loglikelihood", "continuations": [c for _, c in reqs]},
                    text="",
                    token_logprobs=[round(x, 6) for x in logliks[at : at + len(reqs)]],  # one per option
                    latency_s=share,
                )
            )
            at += len(reqs)
        Generation.objects.bulk_create(rows, ignore_conflicts=True)
        found = _read(keys)
    return Read([found[k] for k in keys], frozenset(missing))


def completion_key(fingerprint: str, ids: Sequence[int], params: DecodingParams) -> str:
    """The key of a raw continuation of token ids (no chat template), apart from any chat prompt's."""
    return digest_json({"fingerprint": fingerprint, "completion": list(ids), "params": params.model_dump(mode="json")})


def completion_ids(generation: Generation) -> list[int]:
    """The token ids a raw continuation drew (its end-of-sequence token included when it stopped there)."""
    return list(generation.params.get("completion_ids", []))


def completions(fingerprint: str, load: LoadBackend, sequences: Sequence[list[int]], params: DecodingParams) -> Read:
    """Each token sequence's raw continuation (``/v1/completions``): read by key, the missing ones in one batch.

    A row keeps the ids it drew in its params (as a log-likelihood row keeps its continuations), so
    their log-probabilities can be read again without generating.
    """
    keys = [completion_key(fingerprint, ids, params) for ids in sequences]
    found = _read(keys)
    missing = {k: ids for k, ids in zip(keys, sequences, strict=True) if k not in found}
    if missing:
        started = time.perf_counter()
        backend = POOL.get(fingerprint, load)
        outs = backend.generate_ids(list(missing.values()), params)  # type: ignore[attr-defined]
        share = (time.perf_counter() - started) / len(missing)
        Generation.objects.bulk_create(
            [
                Generation(
                    key=key,
                    fingerprint=fingerprint,
                    prompt=json.dumps(ids),
                    params={
                        "kind": "completion",
                        **params.model_dump(mode="json"),
                        "completion_ids": out.ids,
                    },
                    text=out.text,
                    prompt_tokens=len(ids),
                    completion_tokens=len(out.ids),
                    latency_s=share,
                    finish_reason=out.finish_reason,
                )
                for (key, ids), out in zip(missing.items(), outs, strict=True)
            ],
            ignore_conflicts=True,
        )
        found = _read(keys)
    return Read([found[k] for k in keys], frozenset(missing))


def _read(keys: Sequence[str]) -> dict[str, Generation]:
    return {g.key: g for g in Generation.objects.filter(key__in=set(keys))}
