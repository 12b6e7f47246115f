"""Shadow comparison: setting an entry's shadow, sampling its live chat requests, answering the samples.

The request path pays one indexed read (the entry's shadow, if any) and, for a sampled request, one
insert; the shadow answers later on a worker (``answer_sample``, queued by name), with the same
``chat.answer`` a client calling the shadow would get, through the same generation cache.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError
from django.utils import timezone
from kombu.exceptions import KombuError
from redis import RedisError

from arena.core.queue import send_on_commit
from arena.core.routing import gpu_queue
from arena.core.states import State
from arena.evaluations import cache
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from arena.serving.models import Preference, ShadowConfig, ShadowSample
from arena.serving.protocol import ChatRequest, Refused, conversation
from arena.serving.queries import servable_entries
from ensembles.answers import vote_key
from ensembles.backends import BackendError, DecodingParams, TransientBackendError, transcript
from ensembles.backends.base import digest_json
from ensembles.errors import EnsembleError
from ensembles.judge import combine_orders, judge_prompt, parse_verdict
from ensembles.metrics import EXTRACTORS

log = logging.getLogger(__name__)

SHADOW_TASK = "arena.serving.tasks.answer_shadow"
# The decoding a run's judge uses: a verdict is a few tokens ("[[A]]"), so each order is cheap.
JUDGE_PARAMS = DecodingParams(max_new_tokens=24, stop=())
# Free text has no task-specific extraction: answers agree when their first lines are the same vote.
first_line = EXTRACTORS.get("first_line")


# Setting the shadow ------------------------------------------------------------------------------


def _team_entry(entry: Entry, field: str, name: str) -> Entry:
    found = servable_entries(entry.team).filter(name=name).first()
    if found is None:
        raise ValidationError({field: f"{name!r} is not an entry of {entry.team.name} served at /v1"})
    return found


def set_shadow(entry: Entry, *, shadow: str, rate: float, judge: str | None = None, user=None) -> ShadowConfig:
    """Name ``shadow`` (an entry of the same team) to also answer ``rate`` of ``entry``'s live chat requests.

    ``judge``, a single model of the team, compares each pair of answers in both orders; none: agreement
    and cost only. Refused with a ValidationError naming the field; nothing is stored then.
    """
    if not servable_entries(entry.team).filter(pk=entry.pk).exists():
        raise ValidationError({"entry": f"{entry.name} is not served at /v1 yet (a merge not built into weights)"})
    if not shadow:
        raise ValidationError({"shadow": "choose the entry that shadows this one"})
    if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0.0 <= rate <= 1.0:
        raise ValidationError({"rate": f"a share of requests between 0 and 1, not {rate!r}"})
    shadow_entry = _team_entry(entry, "shadow", shadow)
    if shadow_entry.pk == entry.pk:
        raise ValidationError({"shadow": "an entry cannot shadow itself: choose another entry"})
    judge_entry = _team_entry(entry, "judge", judge) if judge else None
    if judge_entry is not None and judge_entry.is_blend:
        raise ValidationError({"judge": "the judge must be one of the team's single models, not a blend"})
    config, _ = ShadowConfig.objects.update_or_create(
        entry=entry, defaults={"shadow": shadow_entry, "rate": float(rate), "judge": judge_entry, "updated_by": user}
    )
    return config


def clear_shadow(entry: Entry) -> bool:
    """Stop shadowing ``entry``; the samples stored so far stay. Whether there was a shadow."""
    deleted, _ = ShadowConfig.objects.filter(entry=entry).delete()
    return bool(deleted)


# The request path --------------------------------------------------------------------------------


def sampled(rate: float) -> bool:
    """Whether this request is in the sampled share: always at 1, never at 0."""
    return rate >= 1.0 or (rate > 0.0 and random.random() < rate)  # noqa: S311 - a traffic sample, not a secret


def offer(entry: Entry, body: ChatRequest, data: dict[str, Any]) -> dict[str, Any]:
    """``data``, the client's answer, unchanged; a sampled share of requests is queued for the shadow.

    A broken shadow never fails the client's request: it is logged and the answer goes out.
    """
    try:
        config = ShadowConfig.objects.filter(entry_id=entry.pk).only("shadow_id", "rate", "judge_id").first()
        if config is None or not sampled(config.rate):
            return data
        turns = conversation(body)
        prompt = turns[0]["content"] if len(turns) == 1 and turns[0]["role"] == "user" else transcript(turns)
        sample = ShadowSample.objects.create(
            entry=entry,
            shadow_id=config.shadow_id,
            judge_id=config.judge_id,
            request=body.model_dump(mode="json", exclude_none=True),
            prompt_digest=digest_json(turns),
            prompt=prompt,
            entry_answer=_answer_text(data),
            **{f"entry_{k}": v for k, v in cost_of(data).items()},
        )
    except DatabaseError:
        log.warning("shadow sample of %s not stored; the client's answer is unaffected", entry.name, exc_info=True)
        return data
    try:
        # One shard per shadowed entry, so its worker keeps the shadow's models loaded. Sent without the
        # publish retries: the client waits for nothing the shadow does.
        send_on_commit(SHADOW_TASK, sample.pk, queue=gpu_queue(f"shadow:{entry.pk}"), retry=False)
    except (KombuError, RedisError):
        log.warning("shadow sample %s not queued; the client's answer is unaffected", sample.pk, exc_info=True)
        _failed(sample, "not queued: the task queue was unreachable")
    return data


def _answer_text(data: dict[str, Any]) -> str:
    return data["choices"][0]["message"]["content"] or ""


def cost_of(data: dict[str, Any]) -> dict[str, Any]:
    """One side's cost as its chat answer reports it (``arena.cost``, counted as the boards count):
    tokens, model calls, model seconds, US dollars where priced, and the latency of the answer."""
    arena = data.get("arena") or {}
    cost = arena.get("cost") or {}
    latency = float(arena.get("latency_s") or 0.0)
    usd = cost.get("cost_usd")
    return {
        "tokens": int(data["usage"]["total_tokens"]),
        # An answer without the measures: one call per member of a blend, or one; its wall time as compute.
        "calls": int(cost.get("calls", len((arena.get("blend") or {}).get("members", [])) or 1)),
        "compute_s": float(cost.get("compute_s", latency)),
        "latency_s": latency,
        "usd": None if usd is None else float(usd),
    }


# The worker --------------------------------------------------------------------------------------


def answer_sample(sample_id: int) -> None:
    """The shadow's answer to a sampled request, compared with the entry's; judged where a judge is set.

    Claimed with a conditional update, so a redelivered task finds nothing to do; a transient error of
    the judge puts it back for Celery's retry. A sample whose rows vanished is nothing to answer.
    """
    from arena.serving import chat  # chat sends samples here through offer()

    if not ShadowSample.objects.filter(pk=sample_id, state=State.QUEUED).update(state=State.RUNNING):
        return
    sample = ShadowSample.objects.select_related("shadow__team", "judge").get(pk=sample_id)
    try:
        # What a client calling the shadow gets; a model error comes back as the 4xx that client would read.
        data = chat.answer(sample.shadow, ChatRequest.model_validate(sample.request))
    except Refused as exc:
        _failed(sample, f"the shadow {sample.shadow.name} could not answer: {exc.message}")
        return
    sample.shadow_answer = _answer_text(data)
    for key, value in cost_of(data).items():
        setattr(sample, f"shadow_{key}", value)
    sample.agree = vote_key(first_line(sample.entry_answer)) == vote_key(first_line(sample.shadow_answer))
    if sample.judge is not None and sample.entry_answer == sample.shadow_answer:
        sample.preferred = Preference.TIE  # the same text: nothing for a judge to prefer
    elif sample.judge is not None:
        try:
            _judge(sample, sample.judge)
        except TransientBackendError:
            ShadowSample.objects.filter(pk=sample_id).update(state=State.QUEUED)
            raise
        except (BackendError, EnsembleError) as exc:
            sample.error = f"judge {sample.judge.name} failed: {exc}"
    sample.state, sample.finished_at = State.DONE, timezone.now()
    sample.save()


def _judge(sample: ShadowSample, judge: Entry) -> None:
    """The judge's preference between the two answers, each shown first once (ensembles.judge)."""
    backend = backend_for(judge)
    backend.check()
    forward = judge_prompt(sample.prompt, sample.entry_answer, sample.shadow_answer)
    swapped = judge_prompt(sample.prompt, sample.shadow_answer, sample.entry_answer)
    read = cache.generations(backend.fingerprint(), lambda: backend, [forward, swapped], JUDGE_PARAMS)
    v_forward, v_swapped = (parse_verdict(g.text) for g in read.generations)
    sample.verdict_forward, sample.verdict_swapped = v_forward or "", v_swapped or ""
    outcome = combine_orders(v_forward, v_swapped)
    sample.preferred = {"first": Preference.ENTRY, "second": Preference.SHADOW, "tie": Preference.TIE}.get(
        outcome or "", ""
    )


def _failed(sample: ShadowSample, reason: str) -> None:
    ShadowSample.objects.filter(pk=sample.pk).update(state=State.FAILED, error=reason, finished_at=timezone.now())
