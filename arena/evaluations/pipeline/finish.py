"""Finish: once every entry is done or failed, the run closes and the apps that listen to run_finished
(regression alerts, schedules, search) hear of it. A run where some entries failed and others finished
closes as partial ("finished with errors"): what finished is a result; only a run where nothing finished fails."""

from __future__ import annotations

from django.utils import timezone

from arena.evaluations import events, signals
from arena.evaluations.models import TERMINAL, EntryState, Run, State
from arena.evaluations.pipeline.state import RunState


def step(state: RunState) -> RunState:
    run = state.run
    if run.state != State.RUNNING or any(re.state not in TERMINAL for re in state.entries):
        return state
    failed = [re for re in state.entries if re.state == EntryState.FAILED]
    if not failed:
        closed = State.DONE
    elif any(re.state == EntryState.DONE for re in state.entries):
        closed = State.PARTIAL
    else:
        closed = State.FAILED
    error = "; ".join(f"{re.entry.name}: {re.error}" for re in failed)
    if Run.objects.filter(pk=run.pk, state=State.RUNNING).update(
        state=closed, error=error[:4000], finished_at=timezone.now()
    ):
        events.publish(run, "finished", state=closed)
        signals.run_finished.send(sender=Run, run=run)
    return state.reread()
