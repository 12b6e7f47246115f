"""Scheduled evaluations: cron expressions, the beat tasks that fire them, and firings by hand.

A schedule owns a django-celery-beat PeriodicTask with its own CrontabSchedule; beat sends
`fire_schedule` at every slot the cron expression names. A firing claims its slot with a unique
row before it creates the run, so a trigger delivered twice makes one run.
"""

from __future__ import annotations

import functools
import json
import logging
import zoneinfo
from collections.abc import Iterable
from datetime import datetime, timedelta

from celery.schedules import ParseException, crontab
from croniter import croniter
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from arena.benchmarks.models import Suite
from arena.core import queue
from arena.core.text import name_problem
from arena.evaluations.models import RunEntry, State
from arena.evaluations.services import create_run
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from arena.schedules.models import NIGHTLY, Firing, Outcome, Refresh, Schedule
from arena.teams.models import Team
from ensembles.backends import BackendError
from ensembles.errors import EnsembleError

log = logging.getLogger(__name__)

FIRE_TASK = "arena.schedules.tasks.fire_schedule"
START_TASK = "arena.schedules.tasks.start_firing"
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
CRON_LABELS = dict(zip(CRON_FIELDS, ("minute", "hour", "day-of-month", "month", "day-of-week"), strict=True))
# Beat's and a worker's clocks may differ a little: a firing a few seconds early still belongs
# to the slot it was sent for, not to the one before.
CLOCK_SKEW = timedelta(seconds=5)
# A manual firing still waiting this long after it was asked for lost its message (beat's sweep).
SWEEP_GRACE_S = 60.0


# --- Validation ---------------------------------------------------------------------------


def parse_cron(expression: str) -> dict[str, str]:
    """The five fields of a cron expression as beat's crontab takes them; ValidationError on ``cron``."""
    fields = (expression or "").split()
    if len(fields) != 5:
        raise ValidationError(
            {
                "cron": f"a cron expression has five fields (minute hour day-of-month month day-of-week), "
                f"for example {NIGHTLY!r} for every night at 02:00; {expression!r} has {len(fields)}"
            }
        )
    named = dict(zip(CRON_FIELDS, fields, strict=True))
    for field, value in named.items():
        longest = CrontabSchedule._meta.get_field(field).max_length
        if len(value) > longest:
            raise ValidationError({"cron": f"{CRON_LABELS[field]} field: at most {longest} characters"})
        try:
            # Beat runs celery's crontab, so its parser decides what is valid.
            crontab(**{field: value})
        except (ValueError, ParseException) as exc:
            hint = " (Sunday is 0)" if field == "day_of_week" and "7" in value else ""
            raise ValidationError({"cron": f"{CRON_LABELS[field]} field {value!r}: {exc}{hint}"}) from None
    if not croniter.is_valid(" ".join(fields)):
        raise ValidationError({"cron": f"{expression!r} is not a cron expression"})
    return named


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_time_zone(name: str) -> zoneinfo.ZoneInfo:
    if name not in _time_zones():
        raise ValidationError({"timezone": f"unknown time zone {name!r}; use an IANA name such as Europe/Paris"})
    return zoneinfo.ZoneInfo(name)


def latest_suite(team: Team, name: str) -> Suite | None:
    return Suite.objects.filter(team=team, name=name).order_by("-created_at", "-pk").first()


# --- Schedules ----------------------------------------------------------------------------


def save_schedule(
    team: Team,
    *,
    name: str,
    suite: str,
    entries: Iterable[str],
    cron: str = NIGHTLY,
    timezone_name: str = "UTC",
    refresh: str = Refresh.CHANGED,
    enabled: bool = True,
    judge: str | None = None,
    splits: Iterable[str] | None = None,
    user=None,
    schedule: Schedule | None = None,
) -> Schedule:
    """Create a schedule (or change ``schedule``) with its beat task; every problem at once, per field."""
    entries = list(entries)
    splits = list(dict.fromkeys(s.strip() for s in splits or [] if s and s.strip()))  # in order, once each
    _refuse_nul(
        name=name,
        suite=suite,
        entries="".join(entries),
        cron=cron,
        timezone=timezone_name,
        judge=judge,
        splits="".join(splits),
    )
    name = (name or "").strip()
    cron = " ".join((cron or "").split())
    entry_names = sorted({n.strip() for n in entries if n and n.strip()})
    errors: dict[str, str] = {}
    if not name:
        errors["name"] = "give the schedule a name"
    elif problem := name_problem(name):
        errors["name"] = problem
    elif Schedule.objects.filter(team=team, name=name).exclude(pk=getattr(schedule, "pk", None)).exists():
        errors["name"] = f"the team already has a schedule named {name!r}"
    the_suite = latest_suite(team, suite or "")
    if the_suite is None:
        known = sorted(set(Suite.objects.filter(team=team).values_list("name", flat=True)))
        errors["suite"] = f"unknown suite {suite!r}" + (f"; the team has {', '.join(known)}" if known else "")
    found = list(Entry.objects.filter(team=team, name__in=entry_names))
    missing = sorted(set(entry_names) - {e.name for e in found})
    if not entry_names:
        errors["entries"] = "choose at least one entry"
    elif missing:
        errors["entries"] = f"unknown entries: {', '.join(missing)}"
    judge_entry = None
    if judge:
        judge_entry = Entry.objects.filter(team=team, name=judge).first()
        if judge_entry is None or judge_entry.is_blend:
            errors["judge"] = f"the judge must be one of the team's single models; {judge!r} is not"
    if the_suite is not None and "judge" not in errors:
        if the_suite.task_type == "judge" and judge_entry is None:
            errors["judge"] = f"{the_suite.name} is a judge suite: choose the model that compares the answers"
        elif the_suite.task_type != "judge" and judge_entry is not None:
            errors["judge"] = f"only judge suites take a judge; {the_suite.name} is scored by its metric"
    fields: dict[str, str] = {}
    try:
        fields = parse_cron(cron)
    except ValidationError as exc:
        errors.update({k: v[0] for k, v in exc.message_dict.items()})
    tz = None
    try:
        tz = check_time_zone(timezone_name)
    except ValidationError as exc:
        errors.update({k: v[0] for k, v in exc.message_dict.items()})
    if refresh not in Refresh.values:
        errors["refresh"] = f"refresh is one of {', '.join(Refresh.values)}"
    if splits and the_suite is not None:
        if problem := split_problem(the_suite, splits):
            errors["splits"] = problem
    if errors:
        raise ValidationError(errors)

    try:
        with transaction.atomic():
            tab = schedule.periodic_task.crontab if schedule else CrontabSchedule()
            for field, value in fields.items():
                setattr(tab, field, value)
            tab.timezone = tz
            tab.save()
            if schedule is None:
                task = PeriodicTask.objects.create(
                    name=_task_name(team, name), task=FIRE_TASK, crontab=tab, enabled=False, kwargs="{}"
                )
                schedule = Schedule(team=team, periodic_task=task, created_by=user)
            schedule.name = name
            schedule.suite_name = the_suite.name
            schedule.judge = judge_entry
            schedule.cron = cron
            schedule.timezone = timezone_name
            schedule.refresh = refresh
            schedule.splits = splits
            schedule.enabled = enabled
            schedule.save()
            schedule.entries.set(found)
            task = schedule.periodic_task
            task.name = _task_name(team, name)
            task.kwargs = json.dumps({"schedule_id": schedule.pk})
            task.description = f"{team.name}: {', '.join(entry_names)} on {the_suite.name}"
            task.enabled = enabled
            # A changed expression counts from now, so beat does not catch up on a slot that passed.
            task.last_run_at = None
            task.save()
    except IntegrityError:
        # Another request took the name between the check above and this write.
        raise ValidationError({"name": f"the team already has a schedule named {name!r}"}) from None
    return schedule


def split_problem(suite: Suite, splits: list[str]) -> str | None:
    """Why ``suite`` cannot be evaluated on ``splits`` (checked again at each firing, on the version it uses)."""
    known = suite.manifest.get("splits", ["test"])
    unknown = [s for s in splits if s not in known]
    if unknown:
        return f"{suite.name} v{suite.version} has no split {', '.join(map(repr, unknown))}; it has {', '.join(known)}"
    if not suite.items.filter(split__in=splits).exists():
        return f"{suite.name} v{suite.version} has no items in {', '.join(splits)}"
    return None


def _refuse_nul(**fields: str | None) -> None:
    # The database cannot store a NUL character in text; say so instead of failing on the query.
    bad = {field: "must not contain NUL characters" for field, value in fields.items() if value and "\x00" in value}
    if bad:
        raise ValidationError(bad)


def _task_name(team: Team, name: str) -> str:
    return f"arena: {team.slug} / {name}"


def delete_schedule(schedule: Schedule) -> None:
    """Remove the schedule; its beat task and crontab go with it (arena/schedules/receivers.py)."""
    schedule.delete()


def next_fire(schedule: Schedule, now: datetime | None = None) -> datetime | None:
    if not schedule.enabled:
        return None
    start = (now or timezone.now()).astimezone(zoneinfo.ZoneInfo(schedule.timezone))
    # day_or=False: beat's crontab needs both day fields to match, unlike classic cron.
    return croniter(schedule.cron, start, day_or=False).get_next(datetime)


def slot_at(schedule: Schedule, now: datetime) -> datetime:
    """The slot a firing at ``now`` belongs to: the latest time the expression names, up to now."""
    start = (now + CLOCK_SKEW).astimezone(zoneinfo.ZoneInfo(schedule.timezone))
    return croniter(schedule.cron, start, day_or=False).get_prev(datetime)


# --- Firing -------------------------------------------------------------------------------


def fire(schedule_id: int, now: datetime | None = None) -> Firing | None:
    """Start the run the schedule asks for at this slot; None when the slot already fired.

    The slot's Firing row is inserted before the run, in one transaction: a second delivery of
    the same trigger, at once or later, meets the unique constraint and does nothing.
    """
    schedule = Schedule.objects.select_related("team", "judge").filter(pk=schedule_id).first()
    if schedule is None or not schedule.enabled:
        return None
    slot = slot_at(schedule, now or timezone.now())
    if Firing.objects.filter(schedule=schedule, slot=slot, manual=False).exists():
        log.info("schedule %s already fired for %s", schedule.pk, slot.isoformat())
        return None
    suite, chosen, outcome, note = _what_to_run(schedule)
    with transaction.atomic():
        try:
            with transaction.atomic():
                firing = Firing.objects.create(schedule=schedule, slot=slot, outcome=outcome, note=note)
        except IntegrityError:
            log.info("schedule %s already fired for %s", schedule.pk, slot.isoformat())
            return None
        if outcome == Outcome.STARTED:
            _start_run(firing, suite, chosen)
    log.info("schedule %s fired for %s: %s %s", schedule.pk, slot.isoformat(), firing.outcome, firing.note)
    return firing


def _what_to_run(schedule: Schedule) -> tuple[Suite | None, list[Entry], str, str]:
    """The suite version and entries a firing now runs, its outcome, and the note that says why."""
    suite = latest_suite(schedule.team, schedule.suite_name)
    entries = list(schedule.entries.all())
    chosen, outcome, note = entries, Outcome.STARTED, ""
    if suite is None:
        outcome, note = Outcome.FAILED, f"the team has no suite named {schedule.suite_name!r} any more"
    elif not entries:
        outcome, note = Outcome.FAILED, "none of the schedule's entries exist any more"
    elif schedule.refresh == Refresh.CHANGED and suite.task_type != "judge":
        # Judge suites are left whole: a score there is a record against the run's other entries.
        unchanged = unchanged_entries(entries, suite, schedule.splits)
        chosen = [e for e in entries if e.pk not in unchanged]
        left_out = sorted(e.name for e in entries if e.pk in unchanged)
        if not chosen:
            outcome = Outcome.SKIPPED
            note = f"nothing changed since the last results on {suite.name} v{suite.version}"
        elif left_out:
            note = f"unchanged since their last result on v{suite.version}, left out: {', '.join(left_out)}"
    return suite, chosen, outcome, note


def _start_run(firing: Firing, suite: Suite, chosen: list[Entry], user=None) -> None:
    """Create the firing's run (in the caller's transaction), or record why it could not start."""
    schedule = firing.schedule
    try:
        with transaction.atomic():
            firing.run = create_run(
                schedule.team, suite, chosen, judge=schedule.judge, splits=schedule.splits or None, user=user
            )
    except ValidationError as exc:
        firing.outcome, firing.run = Outcome.FAILED, None
        firing.note = "; ".join(exc.messages)
    firing.save(update_fields=["run", "outcome", "note"])


class ScheduleBusy(Exception):
    """A schedule's earlier firing is still waiting for a worker, or its run has not finished."""

    def __init__(self, firing: Firing):
        self.firing = firing
        doing = f"run #{firing.run_id} is still {firing.run.state}" if firing.run_id else "a firing waits for a worker"
        super().__init__(f"{firing.schedule.name}: {doing}; run it again once that is done")


def busy_firing(schedule: Schedule) -> Firing | None:
    """The schedule's firing that still waits for a worker or whose run is queued or running."""
    return (
        Firing.objects.filter(schedule=schedule)
        .filter(Q(outcome=Outcome.PENDING) | Q(run__state__in=[State.QUEUED, State.RUNNING]))
        .select_related("run", "schedule")
        .order_by("-created_at")
        .first()
    )


def run_now(schedule: Schedule, user=None) -> Firing:
    """Fire ``schedule`` now, by the rules of its cron firings (a worker picks the entries and starts
    the run); ScheduleBusy while an earlier firing of it is waiting or its run is unfinished.

    The schedule's row is locked while the check and the new firing are written, so two clicks at
    once make one firing; even a paused schedule can be run by hand.
    """
    with transaction.atomic():
        Schedule.objects.select_for_update().filter(pk=schedule.pk).first()
        busy = busy_firing(schedule)
        if busy is not None:
            raise ScheduleBusy(busy)
        firing = Firing.objects.create(
            schedule=schedule, slot=timezone.now(), manual=True, outcome=Outcome.PENDING, requested_by=user
        )
        queue.send_on_commit(START_TASK, firing.pk)
    return firing


def start_firing(firing_id: int) -> Firing | None:
    """Do what a firing asked for by hand waits for, once: a second delivery finds it done."""
    firing = (
        Firing.objects.select_related("schedule__team", "schedule__judge", "requested_by")
        .filter(pk=firing_id, outcome=Outcome.PENDING)
        .first()
    )
    if firing is None:
        return None
    # Models' fingerprints (their weights hashed) are computed before the row is locked.
    suite, chosen, outcome, note = _what_to_run(firing.schedule)
    with transaction.atomic():
        if not Firing.objects.select_for_update().filter(pk=firing_id, outcome=Outcome.PENDING).exists():
            return None
        firing.outcome, firing.note = outcome, note
        if outcome == Outcome.STARTED:
            _start_run(firing, suite, chosen, user=firing.requested_by)
        else:
            firing.save(update_fields=["outcome", "note"])
    log.info("schedule %s run by hand: %s %s", firing.schedule_id, firing.outcome, firing.note)
    return firing


def start_overdue_firings(grace_s: float = SWEEP_GRACE_S, now: datetime | None = None) -> int:
    """Send again the firings asked for by hand that a lost message left waiting (beat, every minute):
    those still pending ``grace_s`` after they were asked for.

    start_firing claims each one, so sending it twice still starts one run.
    """
    cutoff = (now or timezone.now()) - timedelta(seconds=grace_s)
    waiting = list(Firing.objects.filter(outcome=Outcome.PENDING, created_at__lte=cutoff).values_list("pk", flat=True))
    for pk in waiting:
        queue.send(START_TASK, pk)
    if waiting:
        log.info("sent again %d firings asked for by hand", len(waiting))
    return len(waiting)


def unchanged_entries(entries: list[Entry], suite: Suite, splits: list[str] | None = None) -> set[int]:
    """Entries whose latest finished result on ``suite`` came from the very models they use now
    (and, when ``splits`` are named, covered them all).

    A model is the same when its fingerprint (weights hash, or endpoint and model name) equals
    the one recorded in that run; one that cannot be checked counts as changed, so the run
    reports why it fails.
    """
    fingerprints: dict[int, str | None] = {}

    def current(model: Entry) -> str | None:
        if model.pk not in fingerprints:
            try:
                backend = backend_for(model)
                backend.check()
                fingerprints[model.pk] = backend.fingerprint()
            except (BackendError, EnsembleError, OSError):
                fingerprints[model.pk] = None
        return fingerprints[model.pk]

    out = set()
    for entry in entries:
        previous = (
            RunEntry.objects.filter(entry=entry, run__suite=suite, state=State.DONE)
            .select_related("run")
            .order_by("-run__created_at", "-run_id")
            .first()
        )
        if previous is None or not set(splits or ()) <= set(previous.run.splits):
            continue
        models = entry.ordered_members() if entry.is_blend else [entry]
        recorded = dict(
            RunEntry.objects.filter(run_id=previous.run_id, entry__in=models).values_list("entry_id", "fingerprint")
        )
        if all(recorded.get(m.pk) and recorded[m.pk] == current(m) for m in models):
            out.add(entry.pk)
    return out
