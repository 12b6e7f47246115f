"""Runs as other apps start and recover them: create a run, retry its failed entries, and send again what a
lost worker or message left.

How a run then moves is arena/evaluations/pipeline.
"""

from __future__ import annotations

import logging
import platform
import subprocess
from collections.abc import Iterable
from datetime import timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from arena.benchmarks.models import Suite, SuiteItem
from arena.evaluations import analysis, events, pipeline
from arena.evaluations.models import EntryState, Run, RunEntry, Score, State, WorkItem
from arena.evaluations.pipeline.state import send, send_on_commit
from arena.registry.models import Entry
from arena.registry.services import not_built
from arena.teams.models import Team
from ensembles.strategies import make_strategy

log = logging.getLogger(__name__)


def provenance() -> dict:
    def pkg(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "-"

    try:
        rev = subprocess.run(  # noqa: S603 - fixed argv, no shell
            ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(settings.BASE_DIR),
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return {
        "git_revision": rev or "unknown",
        "python": platform.python_version(),
        "packages": {n: pkg(n) for n in ("django", "celery", "torch", "transformers", "ensemble-arena")},
    }


def create_run(
    team: Team, suite: Suite, entries: Iterable[Entry], *, splits=None, user=None, judge: Entry | None = None
) -> Run:
    """Record a run of ``entries`` (and their blends' members) on ``suite`` and queue its planning.

    A judge suite needs a ``judge``: a single model of the team that compares the entries' answers.
    """
    entries = list(entries)
    if not entries:
        raise ValidationError({"entries": "choose at least one entry"})
    if suite.team_id != team.id or any(e.team_id != team.id for e in entries):
        raise ValidationError({"entries": "entries and suite must belong to the team"})
    # Archived: off the pickers, and off new runs however they are asked for (a blend's members may be).
    archived = sorted(e.name for e in entries if e.archived_at)
    if archived:
        raise ValidationError({"entries": f"archived entries start no new run: {', '.join(archived)}; unarchive them"})
    if suite.archived_at:
        raise ValidationError({"suite": f"{suite.name} v{suite.version} is archived: unarchive it to run it"})
    if suite.task_type == "judge":
        _check_judged(team, entries, judge)
    elif judge is not None:
        raise ValidationError({"judge": f"only judge suites take a judge; {suite.name} is scored by its metric"})
    manifest_splits = suite.manifest.get("splits", ["test"])
    splits = list(splits or (["test"] if "test" in manifest_splits else manifest_splits[:1]))
    unknown = [s for s in splits if s not in manifest_splits]
    if unknown:
        raise ValidationError({"splits": f"unknown splits {unknown}; the suite has {manifest_splits}"})
    targets = {e.pk: e for e in entries}
    members: dict[int, Entry] = {}
    # Every blend of a hybrid's tree is combined in the run, and every model under it generates.
    blends, walked = [e for e in entries if e.is_blend], set()
    while blends:
        entry = blends.pop()
        if entry.pk in walked:
            continue
        walked.add(entry.pk)
        for member in entry.ordered_members():
            members.setdefault(member.pk, member)
            if member.is_blend:
                blends.append(member)
        if make_strategy(entry.strategy, entry.params).needs_fit and "dev" not in splits:
            splits.append("dev")  # learned strategies fit on dev; the board still reports test
    # A merge whose weights are not built (queued, running or failed) has nothing to run yet.
    unbuilt = not_built([*targets.values(), *members.values()])
    if unbuilt:
        raise ValidationError(
            {"entries": f"merges not built into weights yet cannot run: {'; '.join(unbuilt)}; wait or rebuild them"}
        )
    if judge is not None and (unbuilt_judge := not_built([judge])):
        raise ValidationError({"judge": f"the judge is a merge not built into weights yet: {unbuilt_judge[0]}"})
    total = SuiteItem.objects.filter(suite=suite, split__in=splits).count()
    if total == 0:
        raise ValidationError({"splits": "the suite has no items in these splits"})
    with transaction.atomic():
        run = Run.objects.create(
            team=team, suite=suite, splits=splits, created_by=user, provenance=provenance(), judge=judge
        )
        RunEntry.objects.bulk_create(
            [RunEntry(run=run, entry=e, is_target=True, total_items=total) for e in targets.values()]
            + [
                RunEntry(run=run, entry=m, is_target=False, total_items=total)
                for pk, m in members.items()
                if pk not in targets
            ]
        )
        send_on_commit("plan_run", run.pk)
    return run


def _check_judged(team: Team, entries: list[Entry], judge: Entry | None) -> None:
    if judge is None:
        raise ValidationError({"judge": "a judge suite needs a judge: choose a model to compare the answers"})
    if judge.team_id != team.id or judge.is_blend:
        raise ValidationError({"judge": "the judge must be one of the team's single models"})
    blends = [e.name for e in entries if e.is_blend]
    if blends:
        raise ValidationError(
            {
                "entries": f"judge suites compare single models' free-text answers; blends cannot take part yet: "
                f"{', '.join(blends)}"
            }
        )
    if len(entries) < 2:
        raise ValidationError({"entries": "a judge suite compares answers: choose at least two entries"})


def retry_failed(run: Run) -> int:
    """Queue again only the run's failed entries, and the run with them; how many entries that is.

    What finished stays as it is, and every answer already generated is read from the generations cache,
    so a retry costs only what failed. A failed model's batches that finished keep their scores; a failed
    blend combines again from scratch (from its members' stored answers). The run's analysis is computed
    again once it closes.
    """
    if run.suite.task_type == "judge":
        raise ValidationError(
            {"run": "a judge suite compares every pair of answers at once: start a new run to judge again"}
        )
    with transaction.atomic():
        failed = list(RunEntry.objects.filter(run=run, state=EntryState.FAILED).select_related("entry"))
        if run.state not in (State.PARTIAL, State.FAILED) or not failed:
            raise ValidationError(
                {
                    "run": f"run #{run.pk} is {run.get_state_display().lower()}: only a finished run with failed "
                    "entries has something to retry"
                }
            )
        results = {k: v for k, v in run.results.items() if k != analysis.SIZE_CURVE}
        # The claim: a second retry of the same run, or one racing it, finds it queued and does nothing.
        if not Run.objects.filter(pk=run.pk, state__in=[State.PARTIAL, State.FAILED]).update(
            state=State.QUEUED, error="", finished_at=None, results=results
        ):
            raise ValidationError({"run": f"run #{run.pk} is already being retried"})
        RunEntry.objects.filter(pk__in=[re.pk for re in failed]).update(
            state=EntryState.QUEUED, error="", started_at=None, finished_at=None
        )
        singles = [re.entry_id for re in failed if not re.entry.is_blend]
        WorkItem.objects.filter(run=run, entry_id__in=singles, state=State.FAILED).update(
            state=State.QUEUED, attempts=0, error="", claimed_at=None, finished_at=None
        )
        blends = [re.entry_id for re in failed if re.entry.is_blend]
        Score.objects.filter(run=run, entry_id__in=blends).delete()
        send_on_commit("plan_run", run.pk)
    run.refresh_from_db()
    events.publish(run, "retried", entries=len(failed))
    return len(failed)


# --- Recovery -----------------------------------------------------------------------------


def requeue_stale(stale_after_s: float | None = None) -> int:
    """Send again what a dead worker or a lost message left waiting (beat, every few minutes).

    Batches held longer than a task may run (``stale_after_s``, the task time limit unless told):
    their worker died (the broker would redeliver them after its visibility timeout anyway; this
    only makes the recovery quicker). Runs still waiting for planning and blends still waiting for
    their combine after that long: their message was lost, sent while the broker was away. Every
    step claims its row conditionally, so a step sent twice still runs once.
    """
    if stale_after_s is None:
        stale_after_s = settings.CELERY_TASK_TIME_LIMIT
    stale = timezone.now() - timedelta(seconds=stale_after_s)
    # Batches still queued in a run that has made no progress for that long and holds no batch:
    # their messages went with a broker that keeps nothing on disk. A run that is moving, or whose
    # held batch is sent again just below, is left alone, so a queue is not flooded with copies
    # (and a copy of a batch already claimed does nothing). Read before that batch is put back.
    idle = list(
        Run.objects.filter(state=State.RUNNING, started_at__lt=stale)
        .exclude(work_items__claimed_at__gte=stale)
        .exclude(work_items__finished_at__gte=stale)
        .exclude(work_items__state=State.RUNNING)
        .values_list("pk", flat=True)
    )
    n = 0
    for pk in WorkItem.objects.filter(run__state=State.RUNNING, state=State.RUNNING, claimed_at__lt=stale).values_list(
        "pk", flat=True
    ):
        if WorkItem.objects.filter(pk=pk, state=State.RUNNING, claimed_at__lt=stale).update(state=State.QUEUED):
            send("generate_batch", pk)
            n += 1
    for pk in Run.objects.filter(state=State.QUEUED, created_at__lt=stale).values_list("pk", flat=True):
        send("plan_run", pk)
        n += 1
    for pk in WorkItem.objects.filter(run__in=idle, state=State.QUEUED).values_list("pk", flat=True):
        send("generate_batch", pk)
        n += 1
    # A judging queued that long in an idle run: its message was lost the same way (one under way
    # is left to requeue_unfinished, since a second judge_run would judge beside it).
    for pk in Run.objects.filter(pk__in=idle, judge_state=State.QUEUED).values_list("pk", flat=True):
        send("judge_run", pk)
        n += 1
    blends = RunEntry.objects.filter(
        run__state=State.RUNNING, entry__kind="blend", state=EntryState.RUNNING, started_at__lt=stale
    )
    for pk in blends.values_list("pk", flat=True):
        send("combine_blend", pk)
        n += 1
    # Entries scored whose run was not advanced after (its worker died in between): advance them here.
    for pk in (
        Run.objects.filter(state=State.RUNNING, run_entries__state=EntryState.SCORED)
        .distinct()
        .values_list("pk", flat=True)
    ):
        pipeline.advance(pk)
    if n:
        log.warning("sent again %d steps whose worker or message was lost", n)
    return n


def requeue_unfinished() -> int:
    """After a restart of every worker, put back work that was queued or held by a dead worker."""
    n = 0
    for run in Run.objects.filter(state=State.QUEUED):
        send_on_commit("plan_run", run.pk)
        n += 1
    for wi in WorkItem.objects.filter(run__state=State.RUNNING, state__in=[State.QUEUED, State.RUNNING]):
        WorkItem.objects.filter(pk=wi.pk, state=State.RUNNING).update(state=State.QUEUED)
        send_on_commit("generate_batch", wi.pk)
        n += 1
    for re in RunEntry.objects.filter(run__state=State.RUNNING, entry__kind="blend", state=EntryState.RUNNING):
        send_on_commit("combine_blend", re.pk)
        n += 1
    for run in Run.objects.filter(state=State.RUNNING, judge_state__in=[State.QUEUED, State.RUNNING]):
        Run.objects.filter(pk=run.pk).update(judge_state=State.QUEUED)
        send_on_commit("judge_run", run.pk)
        n += 1
    for pk in Run.objects.filter(state=State.RUNNING).values_list("pk", flat=True):
        pipeline.advance(pk)
    return n
