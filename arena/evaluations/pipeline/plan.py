"""Plan: check each queued model of a queued run, split the items into batches, queue one generate task per
batch. A retried run comes back here queued with only its failed entries queued; the rest stay as they are."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from arena.benchmarks.models import SuiteItem
from arena.evaluations import events
from arena.evaluations.models import EntryState, Run, RunEntry, State, WorkItem
from arena.evaluations.pipeline.state import RunState, fail_entry, send
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from ensembles.backends import BackendError
from ensembles.errors import EnsembleError
from ensembles.strategies import make_strategy


def step(state: RunState) -> RunState:
    run = state.run
    if run.state != State.QUEUED:
        return state
    # One planner per run, however often its task is delivered.
    if not Run.objects.filter(pk=run.pk, state=State.QUEUED).update(state=State.RUNNING, started_at=timezone.now()):
        return state.reread()
    items = list(
        SuiteItem.objects.filter(suite=run.suite, split__in=run.splits)
        .order_by("position")
        .values_list("pk", flat=True)
    )
    size = settings.ARENA_BATCH_SIZE
    batches = [items[i : i + size] for i in range(0, len(items), size)]
    for re in state.entries:
        if re.entry.is_blend or re.state != EntryState.QUEUED:
            continue
        try:
            backend = backend_for(re.entry)
            backend.check()
            re.fingerprint = backend.fingerprint()
        except (BackendError, EnsembleError, OSError) as exc:
            fail_entry(re, str(exc))
            continue
        with transaction.atomic():
            re.state = EntryState.RUNNING
            re.started_at = timezone.now()
            re.save(update_fields=["fingerprint", "state", "started_at"])
            WorkItem.objects.bulk_create(
                [WorkItem(run=run, entry=re.entry, batch_index=i, item_ids=b) for i, b in enumerate(batches)],
                ignore_conflicts=True,
            )
    _record_called_models(run)
    for pk in WorkItem.objects.filter(run=run, state=State.QUEUED).values_list("pk", flat=True):
        send("generate_batch", pk)
    events.publish(run, "planned")
    return state.reread()


def _record_called_models(run: Run) -> None:
    """Write into the run's provenance the model each calling blend, and the judge, calls first.

    Routing reads it to send that blend's combine (or the judging) to the GPU shard of that model
    (arena/evaluations/routing.py). A model that cannot be checked is left out: its caller then
    runs on the cpu queue and fails there with the reason.
    """
    known = dict(RunEntry.objects.filter(run=run).exclude(fingerprint="").values_list("entry__name", "fingerprint"))

    def fingerprint(name: str) -> str | None:
        if name not in known:
            entry = Entry.objects.filter(team_id=run.team_id, name=name).exclude(kind="blend").first()
            try:
                backend = backend_for(entry) if entry else None
                if backend is not None:
                    backend.check()
                known[name] = backend.fingerprint() if backend else None
            except (BackendError, EnsembleError, OSError):
                known[name] = None
        return known[name]

    called = {}
    for re in RunEntry.objects.filter(run=run, entry__kind="blend").select_related("entry"):
        try:
            strategy = make_strategy(re.entry.strategy, re.entry.params)
        except EnsembleError:
            continue  # its combine reports the bad strategy
        if not strategy.calls_models:
            continue
        first = next(iter(strategy.called_models([m.name for m in re.entry.ordered_members()])), None)
        if first and fingerprint(first):
            called[re.entry.name] = {"model": first, "fingerprint": fingerprint(first)}
    extra: dict = {"called_models": called} if called else {}
    if run.judge is not None and fingerprint(run.judge.name):
        extra["judge"] = {"model": run.judge.name, "fingerprint": fingerprint(run.judge.name)}
    if extra:
        run.provenance = {**run.provenance, **extra}
        Run.objects.filter(pk=run.pk).update(provenance=run.provenance)
