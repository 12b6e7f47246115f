"""Where a run stands, as the steps read it, and the transitions several steps make."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.utils import timezone

from arena.core import queue
from arena.evaluations import events
from arena.evaluations.models import TERMINAL, EntryState, Run, RunEntry, WorkItem

TASKS = "arena.evaluations.tasks"


@dataclass(frozen=True)
class RunState:
    """A run, its entries (with their Entry rows) and the states of each model's batches, read at once."""

    run: Run
    entries: list[RunEntry]
    batches: dict[int, set[str]]  # entry id -> the states of its batches

    @classmethod
    def read(cls, run_id: int) -> RunState | None:
        run = Run.objects.select_related("suite", "team").filter(pk=run_id).first()
        if run is None:
            return None
        batches: dict[int, set[str]] = defaultdict(set)
        for entry_id, state in WorkItem.objects.filter(run=run).values_list("entry_id", "state").distinct():
            batches[entry_id].add(state)
        return cls(run, list(RunEntry.objects.filter(run=run).select_related("entry")), dict(batches))

    def reread(self) -> RunState:
        return RunState.read(self.run.pk) or self

    @property
    def closed(self) -> bool:
        return self.run.state in TERMINAL

    @property
    def judged(self) -> bool:
        """A judge suite: answers are scored by the run's judge comparing them, not by a metric."""
        return self.run.suite.task_type == "judge"

    @property
    def signature(self) -> tuple:
        """What a step can change: when a pass of every step leaves it alone, the run waits for work."""
        return (self.run.state, self.run.judge_state, tuple((re.pk, re.state) for re in self.entries))

    def singles(self, state: str) -> list[RunEntry]:
        return [re for re in self.entries if not re.entry.is_blend and re.state == state]

    def blends(self, state: str) -> list[RunEntry]:
        return [re for re in self.entries if re.entry.is_blend and re.state == state]


def fail_entry(re: RunEntry, reason: str) -> bool:
    """Mark an entry failed with its reason, unless it already finished; whether it was this call."""
    failed = (
        RunEntry.objects.filter(pk=re.pk)
        .exclude(state__in=TERMINAL)
        .update(state=EntryState.FAILED, error=reason[:2000], finished_at=timezone.now())
    )
    if failed:
        events.publish(re.run, "error", entry=re.entry_id, message=reason[:500])
    return bool(failed)


def send(task: str, *args: int) -> None:
    """Queue one of the run's tasks (arena/evaluations/tasks.py) now."""
    queue.send(f"{TASKS}.{task}", *args)


def send_on_commit(task: str, *args: int) -> None:
    """``send`` once the current transaction commits: for a task that reads rows written in it."""
    queue.send_on_commit(f"{TASKS}.{task}", *args)
