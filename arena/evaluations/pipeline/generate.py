"""Generate: one batch of one model's answers through the generations cache (a task on the model's gpu queue).

A batch is claimed with a conditional update, so a redelivered task or a second worker does nothing;
a batch that keeps failing for a transient reason is given up after ARENA_MAX_ATTEMPTS, and an
entry whose batches failed fails with the first reason.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from arena.benchmarks.models import SuiteItem
from arena.benchmarks.services import library_item, library_suite
from arena.evaluations import cache, events
from arena.evaluations.models import TERMINAL, EntryState, Run, RunEntry, Score, State, WorkItem
from arena.evaluations.pipeline import score
from arena.evaluations.pipeline.state import RunState, fail_entry
from arena.registry.backends import backend_for
from ensembles.backends import BackendError, DecodingParams, LoglikelihoodUnsupported, TransientBackendError
from ensembles.errors import EnsembleError

log = logging.getLogger(__name__)


def step(state: RunState) -> RunState:
    """Fail each model whose batches failed, once none of them is still queued or running."""
    changed = False
    for re in state.singles(EntryState.RUNNING):
        batches = state.batches.get(re.entry_id, set())
        if State.FAILED in batches and not batches & {State.QUEUED, State.RUNNING}:
            errors = WorkItem.objects.filter(run=state.run, entry=re.entry, state=State.FAILED).values_list(
                "error", flat=True
            )
            changed |= fail_entry(re, next(iter(errors), "failed"))
    return state.reread() if changed else state


def decoding_for(run: Run) -> DecodingParams:
    m = run.suite.manifest
    return DecodingParams(max_new_tokens=m.get("max_new_tokens", 16), stop=tuple(m.get("stop", ["\n"])))


def claim(pk: int) -> bool:
    """Take a batch for this worker: queued, or running under a claim older than the task limit."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
    claimable = Q(state=State.QUEUED) | Q(state=State.RUNNING, claimed_at__lt=stale)
    return bool(
        WorkItem.objects.filter(claimable, pk=pk, attempts__lt=settings.ARENA_MAX_ATTEMPTS).update(
            state=State.RUNNING, attempts=F("attempts") + 1, claimed_at=now
        )
    )


def batch(work_item_id: int) -> int | None:
    """Generate and score one batch of one model; safe to run twice. The run's id when it stored something."""
    if not claim(work_item_id):
        return _fail_exhausted(work_item_id)
    wi = WorkItem.objects.select_related("run__suite", "entry").get(pk=work_item_id)
    run = wi.run
    re = RunEntry.objects.get(run=run, entry=wi.entry)
    try:
        new_calls = _answer(wi, re)
    except TransientBackendError as exc:
        if wi.attempts >= settings.ARENA_MAX_ATTEMPTS:
            _fail(wi, f"gave up after {wi.attempts} attempts: {exc}")
            return run.pk
        WorkItem.objects.filter(pk=wi.pk, state=State.RUNNING).update(state=State.QUEUED, error=str(exc)[:2000])
        raise
    except (BackendError, EnsembleError) as exc:
        _fail(wi, str(exc))
        return run.pk
    except Exception as exc:
        # An unexpected error is a poison item: record it and let the run go on.
        log.exception("batch %s of run %s failed", wi.batch_index, run.pk)
        _fail(wi, f"internal error: {type(exc).__name__}: {exc}")
        return run.pk
    with transaction.atomic():
        WorkItem.objects.filter(pk=wi.pk, state=State.RUNNING).update(state=State.DONE, finished_at=timezone.now())
        done = Score.objects.filter(run=run, entry=wi.entry).count()
        RunEntry.objects.filter(pk=re.pk).update(done_items=done, new_calls=F("new_calls") + new_calls)
    events.publish(run, "progress", entry=wi.entry_id, done=done)
    return run.pk


def _answer(wi: WorkItem, re: RunEntry) -> int:
    """The batch's answers, from the cache or the model, scored; how many the model computed now."""
    run = wi.run
    suite = library_suite(run.suite)
    rows = list(SuiteItem.objects.filter(pk__in=wi.item_ids).order_by("position"))
    items = [library_item(row) for row in rows]

    def load():
        return backend_for(wi.entry)

    note = None
    if suite.by_loglikelihood:
        try:
            read = cache.loglikelihoods(re.fingerprint, load, [suite.option_requests(item) for item in items])
        except LoglikelihoodUnsupported as exc:
            # The result says how it was scored: by generation with letter extraction instead.
            note = str(exc)
        else:
            score.options(run, wi.entry, suite, rows, read.generations)
            return read.new
    read = cache.generations(re.fingerprint, load, [suite.render_prompt(item) for item in items], decoding_for(run))
    score.answers(run, wi.entry, suite, rows, read.generations, fallback=note)
    return read.new


def _fail(wi: WorkItem, reason: str) -> None:
    WorkItem.objects.filter(pk=wi.pk).exclude(state=State.DONE).update(
        state=State.FAILED, error=reason[:2000], finished_at=timezone.now()
    )
    events.publish(wi.run, "error", entry=wi.entry_id, message=reason[:500])


def _fail_exhausted(work_item_id: int) -> int | None:
    """A batch nobody could claim: fail it when it used up its attempts, else leave it be."""
    wi = WorkItem.objects.select_related("run__suite").filter(pk=work_item_id).first()
    if wi is None or wi.state in TERMINAL:
        return None
    if wi.attempts >= settings.ARENA_MAX_ATTEMPTS:
        last = f": {wi.error}" if wi.error else ""
        _fail(wi, f"gave up after {wi.attempts} attempts{last}")
        return wi.run_id
    return None
