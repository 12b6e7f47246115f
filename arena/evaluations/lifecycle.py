"""Deleting runs: what goes with one (arena/core/lifecycle.py); a run still working is cancelled first."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from arena.core.lifecycle import Account, Refused, counted, names
from arena.evaluations.models import TERMINAL, EntryState, Run, RunEntry, State, WorkItem

CANCELLED = "cancelled: the run was deleted"


def account(run: Run) -> Account:
    """What deleting ``run`` takes with it."""
    out = Account(f"run #{run.pk} on {run.suite.name} v{run.suite.version}")
    if run.state not in TERMINAL:
        out.changes.append(
            f"it is {run.get_state_display().lower()}: it is cancelled first, and its queued work dropped"
        )
    entries = list(run.run_entries.order_by("entry__name").values_list("entry__name", flat=True))
    out.goes.append(f"the results of {counted(len(entries), 'entry', 'entries')} ({names(entries)})")
    out.goes.append(counted(run.scores.count(), "scored answer"))
    comparisons = run.comparisons.count()
    if comparisons:
        out.goes.append(counted(comparisons, "judged comparison"))
    searches = run.blend_searches.count()
    if searches:
        out.goes.append(counted(searches, "blend search", "blend searches"))
    out.changes.append("its entries and suite stay; so do the answers it generated, in the generations cache")
    return out


def cancel(run: Run) -> bool:
    """Close an unfinished run as failed, with its queued and running work: a worker that claims a batch
    of it now finds nothing to do. Whether it was unfinished."""
    now = timezone.now()
    with transaction.atomic():
        if (
            not Run.objects.filter(pk=run.pk)
            .exclude(state__in=TERMINAL)
            .update(state=State.FAILED, error=CANCELLED, finished_at=now)
        ):
            return False
        WorkItem.objects.filter(run_id=run.pk).exclude(state__in=TERMINAL).update(
            state=State.FAILED, error=CANCELLED, finished_at=now
        )
        RunEntry.objects.filter(run_id=run.pk).exclude(state__in=[EntryState.DONE, EntryState.FAILED]).update(
            state=EntryState.FAILED, error=CANCELLED, finished_at=now
        )
    return True


def delete(run: Run) -> Account:
    """Cancel ``run`` if it is still working (committed, so workers see it closed), then delete it with
    everything it stored, all or nothing."""
    out = account(run)
    cancel(run)
    with transaction.atomic():
        locked = Run.objects.select_for_update().filter(pk=run.pk).first()
        if locked is None:
            raise Refused(f"run #{run.pk} was already deleted")
        locked.delete()
    return out
