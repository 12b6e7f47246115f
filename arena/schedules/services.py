"""Scheduled evaluations, regression alerts, and the team's view of its queue.

A schedule owns a django-celery-beat PeriodicTask with its own CrontabSchedule; beat sends
`fire_schedule` at every slot the cron expression names. A firing claims its slot with a unique
row before it creates the run, so a trigger delivered twice makes one run.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import smtplib
import uuid
import zoneinfo
from collections.abc import Iterable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from celery.schedules import ParseException, crontab
from croniter import croniter
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Prefetch, Q, QuerySet, Sum
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from arena.benchmarks.models import Suite
from arena.evaluations import regressions
from arena.evaluations.models import TERMINAL, Run, RunEntry, State, WorkItem
from arena.evaluations.services import create_run
from arena.registry.models import Entry, Kind
from arena.registry.services import backend_for
from arena.schedules.models import (
    NIGHTLY,
    Channel,
    Delivery,
    Firing,
    Notice,
    Outcome,
    Refresh,
    Regression,
    RegressionAlert,
    Schedule,
    TeamNotifications,
)
from arena.teams.models import Role, Team
from ensembles.backends import BackendError
from ensembles.errors import EnsembleError

log = logging.getLogger(__name__)

FIRE_TASK = "arena.schedules.tasks.fire_schedule"
CRON_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
CRON_LABELS = dict(zip(CRON_FIELDS, ("minute", "hour", "day-of-month", "month", "day-of-week"), strict=True))
# Beat's and a worker's clocks may differ a little: a firing a few seconds early still belongs
# to the slot it was sent for, not to the one before.
CLOCK_SKEW = timedelta(seconds=5)
WEBHOOK_TIMEOUT_S = 10.0
# What a webhook receives of each regression: names and numbers, never a model's config or key.
WEBHOOK_FIELDS = ("entry", "score", "previous_score", "previous_run_id", "delta", "delta_low", "delta_high", "method")
# Webhook answers worth trying again besides 5xx (timeout, too early, too many requests); any other
# non-2xx is a refusal.
RETRY_STATUSES = (408, 425, 429)
# A notice or manual firing still waiting this long after it was due lost its message (beat's sweep).
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
    elif len(name) > 100:
        errors["name"] = "at most 100 characters"
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
    from arena.schedules.tasks import start_firing

    with transaction.atomic():
        Schedule.objects.select_for_update().filter(pk=schedule.pk).first()
        busy = busy_firing(schedule)
        if busy is not None:
            raise ScheduleBusy(busy)
        firing = Firing.objects.create(
            schedule=schedule, slot=timezone.now(), manual=True, outcome=Outcome.PENDING, requested_by=user
        )
        transaction.on_commit(lambda: start_firing.delay(firing.pk))
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


# --- Regressions --------------------------------------------------------------------------


def notifications_for(team: Team) -> TeamNotifications:
    return TeamNotifications.objects.filter(team=team).first() or TeamNotifications(team=team)


def set_webhook(team: Team, url: str) -> TeamNotifications:
    _refuse_nul(webhook_url=url)
    url = (url or "").strip()
    if url:
        try:
            URLValidator(schemes=["http", "https"])(url)
        except ValidationError:
            raise ValidationError({"webhook_url": f"not an http(s) URL: {url[:200]!r}"}) from None
        if len(url) > 500:
            raise ValidationError({"webhook_url": "at most 500 characters"})
    settings_row, _ = TeamNotifications.objects.update_or_create(team=team, defaults={"webhook_url": url})
    return settings_row


def check_regressions(run_id: int) -> RegressionAlert | None:
    """Check a closed run once; store each regressed entry, and a notice for each way the team hears.

    The alert row is the claim: a second delivery stores nothing again, and only sends once more
    what the first recorded but did not deliver (its worker may have died in between).
    """
    run = Run.objects.select_related("suite", "team").filter(pk=run_id).first()
    if run is None or run.state not in TERMINAL:
        return None
    found = [r for r in regressions.for_run(run) if r["regressed"]]
    run_entries = dict(RunEntry.objects.filter(run=run).values_list("entry_id", "pk"))
    try:
        with transaction.atomic():
            alert = RegressionAlert.objects.create(run=run, regressed=len(found))
            Regression.objects.bulk_create(
                Regression(
                    alert=alert,
                    run_entry_id=run_entries[r["entry_id"]],
                    previous_run_id=r["previous_run_id"],
                    score=r["score"],
                    previous_score=r["previous_score"],
                    delta=r["delta"],
                    delta_low=r["delta_low"],
                    delta_high=r["delta_high"],
                    method=r["method"],
                )
                for r in found
            )
            notices = _record_notices(alert) if found else []
            transaction.on_commit(lambda: _send([n.pk for n in notices]))
    except IntegrityError:
        now = timezone.now()
        _send(Notice.objects.filter(_due(now), alert__run_id=run_id).values_list("pk", flat=True))
        return None
    return alert


def _record_notices(alert: RegressionAlert) -> list[Notice]:
    """One notice per channel the team has: its owners' addresses and its webhook, as they are now."""
    team = alert.run.team
    owners = sorted(
        get_user_model()
        .objects.filter(memberships__team=team, memberships__role=Role.OWNER, is_active=True)
        .exclude(email="")
        .values_list("email", flat=True)
    )
    webhook = notifications_for(team).webhook_url
    now = timezone.now()
    notices = [
        Notice(alert=alert, channel=channel, target=target, key=uuid.uuid4().hex, next_attempt_at=now)
        for channel, target in ((Channel.EMAIL, owners), (Channel.WEBHOOK, webhook))
        if target
    ]
    return Notice.objects.bulk_create(notices)


def _send(notice_ids: Iterable[int]) -> None:
    from arena.schedules.tasks import send_notice

    for pk in notice_ids:
        send_notice.delay(pk)


def _due(now: datetime) -> Q:
    """Notices a worker may send at ``now``: not delivered, not being sent, their next attempt due."""
    return (
        Q(state=Delivery.PENDING)
        & (Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + CLOCK_SKEW))
    )


class NoticeRetry(Exception):
    """A notice the channel did not take this time: try again in ``countdown`` seconds."""

    def __init__(self, message: str, countdown: float):
        super().__init__(message)
        self.countdown = countdown


class _Refused(Exception):
    """The channel answered that it will not take this notice: trying again cannot help."""


def notice_backoff(attempts: int) -> float:
    # Doubling from ARENA_NOTICE_RETRY_S, at most an hour, with jitter so retries do not arrive together.
    return min(3600.0, settings.ARENA_NOTICE_RETRY_S * 2 ** max(0, attempts - 1)) * random.uniform(0.5, 1.0)  # noqa: S311


def send_notice(notice_id: int) -> Notice | None:
    """Deliver one notice unless it was delivered, is being sent, or waits for its next attempt.

    Raises NoticeRetry when it failed in a way worth trying again; gives up (state failed) when the
    channel refuses it, or after ARENA_NOTICE_ATTEMPTS attempts. A worker that dies while sending
    leaves its claim to expire (ARENA_NOTICE_LEASE_S); the beat's sweep then sends it again.
    """
    now = timezone.now()
    lease = timedelta(seconds=settings.ARENA_NOTICE_LEASE_S)
    if not Notice.objects.filter(_due(now), pk=notice_id).update(claimed_until=now + lease, attempts=F("attempts") + 1):
        return None
    notice = Notice.objects.select_related("alert__run__team", "alert__run__suite").get(pk=notice_id)
    row = Notice.objects.filter(pk=notice_id)
    try:
        status = _deliver(notice)
    except _Refused as exc:
        row.update(
            state=Delivery.FAILED, error=str(exc)[:2000], status=getattr(exc, "status", None), claimed_until=None
        )
        log.warning("regression %s notice of run %s refused: %s", notice.channel, notice.alert.run_id, exc)
    except NoticeRetry as exc:
        status = getattr(exc, "status", None)
        if notice.attempts >= settings.ARENA_NOTICE_ATTEMPTS:
            error = f"gave up after {notice.attempts} attempts: {exc}"
            row.update(state=Delivery.FAILED, error=error[:2000], status=status, claimed_until=None)
            log.warning("regression %s notice of run %s: %s", notice.channel, notice.alert.run_id, error)
        else:
            exc.countdown = notice_backoff(notice.attempts)
            row.update(
                error=str(exc)[:2000],
                status=status,
                claimed_until=None,
                next_attempt_at=timezone.now() + timedelta(seconds=exc.countdown),
            )
            log.warning(
                "regression %s notice of run %s failed (attempt %d, again in %.0f s): %s",
                notice.channel,
                notice.alert.run_id,
                notice.attempts,
                exc.countdown,
                exc,
            )
            raise
    else:
        row.update(state=Delivery.SENT, sent_at=timezone.now(), status=status, error="", claimed_until=None)
    notice.refresh_from_db()
    return notice


def _run_url(run: Run) -> str:
    path = reverse("run", kwargs={"team": run.team.slug, "run_id": run.pk})
    return settings.ARENA_PUBLIC_URL.rstrip("/") + path


def _regression_rows(alert: RegressionAlert) -> list[dict]:
    rows = Regression.objects.filter(alert=alert).select_related("run_entry__entry").order_by("run_entry__entry__name")
    return [
        {
            "entry": r.run_entry.entry.name,
            "score": r.score,
            "previous_score": r.previous_score,
            "previous_run_id": r.previous_run_id,
            "delta": r.delta,
            "delta_low": r.delta_low,
            "delta_high": r.delta_high,
            "method": r.method,
        }
        for r in rows
    ]


def _deliver(notice: Notice) -> int | None:
    """Send ``notice`` once: the webhook's HTTP status (None for email); NoticeRetry or _Refused."""
    run = notice.alert.run
    found = _regression_rows(notice.alert)
    url = _run_url(run)
    if notice.channel == Channel.EMAIL:
        lines = [
            f"{r['entry']}: {r['previous_score']:.3f} -> {r['score']:.3f} "
            f"(change {r['delta']:+.3f}, 95% interval [{r['delta_low']:+.3f}, {r['delta_high']:+.3f}], "
            f"previous run #{r['previous_run_id']})"
            for r in found
        ]
        subject = (
            f"[Ensemble Arena] {run.team.name}: {len(found)} "
            f"{'entry' if len(found) == 1 else 'entries'} regressed on {run.suite.name}"
        )
        body = (
            f"Run #{run.pk} on {run.suite.name} v{run.suite.version} finished, and these entries scored lower than "
            f"their previous result by more than the 95% interval allows:\n\n" + "\n".join(lines) + f"\n\n{url}\n"
        )
        host = urlsplit(settings.ARENA_PUBLIC_URL).hostname or "ensemble-arena.localhost"
        # The same Message-ID on every attempt: a mail system that got the first can drop a repeat.
        message = EmailMessage(
            subject, body, settings.DEFAULT_FROM_EMAIL, notice.target, headers={"Message-ID": f"<{notice.key}@{host}>"}
        )
        try:
            message.send()
        except (OSError, smtplib.SMTPException) as exc:  # connection refused, timeouts, the server's 4xx/5xx
            raise NoticeRetry(f"{type(exc).__name__}: {exc}", 0) from exc
        return None
    payload = {
        "event": "regression",
        "team": run.team.slug,
        "run": run.pk,
        "suite": run.suite.name,
        "suite_version": run.suite.version,
        "url": url,
        "regressions": [{k: r[k] for k in WEBHOOK_FIELDS} for r in found],
    }
    try:
        response = httpx.post(
            notice.target,
            json=payload,
            headers={"Idempotency-Key": notice.key},
            timeout=WEBHOOK_TIMEOUT_S,
            follow_redirects=False,
        )
    except httpx.HTTPError as exc:
        raise NoticeRetry(f"{type(exc).__name__}: {exc}", 0) from exc
    if response.status_code in RETRY_STATUSES or response.status_code >= 500:
        failure = NoticeRetry(f"the webhook answered {response.status_code}", 0)
    elif response.status_code >= 300:
        failure = _Refused(f"the webhook answered {response.status_code}")
    else:
        return response.status_code
    failure.status = response.status_code
    raise failure


def resend_overdue(grace_s: float = SWEEP_GRACE_S, now: datetime | None = None) -> int:
    """Send again what a lost message left waiting (beat, every minute): notices whose attempt is overdue
    by ``grace_s`` and whose sender's claim expired, and firings asked for by hand that no worker took.

    Each one is claimed when it is done, so sending it twice still does it once.
    """
    from arena.schedules.tasks import start_firing

    cutoff = (now or timezone.now()) - timedelta(seconds=grace_s)
    overdue = list(
        Notice.objects.filter(_due(now or timezone.now()), next_attempt_at__lte=cutoff).values_list("pk", flat=True)
    )
    _send(overdue)
    waiting = list(Firing.objects.filter(outcome=Outcome.PENDING, created_at__lte=cutoff).values_list("pk", flat=True))
    for pk in waiting:
        start_firing.delay(pk)
    if overdue or waiting:
        log.info("sent again %d regression notices and %d firings asked for by hand", len(overdue), len(waiting))
    return len(overdue) + len(waiting)


# --- The queue ----------------------------------------------------------------------------

QUEUE_STATES = {"waiting": State.QUEUED, "running": State.RUNNING, "done": State.DONE, "failed": State.FAILED}


def queue_runs(team: Team, state: str | None = None) -> QuerySet[Run]:
    """The team's runs, newest first, with what a person needs to see why one waits or failed."""
    singles = ~Q(run_entries__entry__kind=Kind.BLEND)
    troubled = WorkItem.objects.filter(Q(state=State.FAILED) | Q(state=State.QUEUED, attempts__gt=0)).exclude(error="")
    qs = (
        Run.objects.filter(team=team)
        .select_related("suite", "firing__schedule", "created_by")
        .annotate(
            done_items=Sum("run_entries__done_items", filter=singles),
            total_items=Sum("run_entries__total_items", filter=singles),
        )
        .prefetch_related(
            Prefetch(
                "run_entries",
                queryset=RunEntry.objects.filter(state=State.FAILED).select_related("entry"),
                to_attr="failed_entries",
            ),
            Prefetch("work_items", queryset=troubled.select_related("entry"), to_attr="troubled_batches"),
        )
        .order_by("-created_at", "-pk")
    )
    if state:
        qs = qs.filter(state=QUEUE_STATES[state])
    return qs


def queue_counts(team: Team) -> dict[str, int]:
    by_state = {r["state"]: r["n"] for r in Run.objects.filter(team=team).values("state").annotate(n=Count("pk"))}
    return {label: by_state.get(state, 0) for label, state in QUEUE_STATES.items()}


def queue_row(run: Run) -> dict:
    """One run as the queue page and API show it."""
    reasons = [f"{re.entry.name}: {re.error}" for re in run.failed_entries if re.error]
    for wi in run.troubled_batches:
        if wi.state == State.FAILED:
            reasons.append(f"{wi.entry.name} batch {wi.batch_index} failed: {wi.error}")
        else:
            reasons.append(f"{wi.entry.name} batch {wi.batch_index} waits to retry (attempt {wi.attempts}): {wi.error}")
    firing = getattr(run, "firing", None)
    return {
        "id": run.pk,
        "suite": run.suite.name,
        "suite_version": run.suite.version,
        "state": run.state,
        "error": run.error,
        "reasons": reasons,
        "done_items": run.done_items or 0,
        "total_items": run.total_items or 0,
        "schedule": firing.schedule.name if firing else None,
        "started_by": run.created_by.username if run.created_by else None,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
    }


def upcoming(team: Team, now: datetime | None = None) -> list[dict]:
    """The team's enabled schedules by their next firing, soonest first."""
    rows = []
    for s in Schedule.objects.filter(team=team, enabled=True).prefetch_related("entries"):
        rows.append(
            {
                "schedule_id": s.pk,
                "schedule": s.name,
                "suite": s.suite_name,
                "entries": [e.name for e in s.entries.all()],
                "cron": s.cron,
                "timezone": s.timezone,
                "next_run_at": next_fire(s, now),
            }
        )
    rows.sort(key=lambda r: r["next_run_at"])
    return rows


def recent_firings_without_run(team: Team, limit: int = 20) -> QuerySet[Firing]:
    """Firings that started nothing: skipped because nothing changed, or failed with the reason."""
    return (
        Firing.objects.filter(schedule__team=team)
        .exclude(outcome__in=[Outcome.STARTED, Outcome.PENDING])
        .select_related("schedule")
        .order_by("-created_at")[:limit]
    )
