"""Regression alerts: check a closed run once, record a notice per channel, deliver each at least once.

A notice is claimed with a conditional update before it is sent, so a second delivery of its task,
or the beat's sweep, sends it once; a send that worked but was not recorded is repeated under the
same key, which the receiver can drop.
"""

from __future__ import annotations

import logging
import random
import smtplib
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.mail import EmailMessage
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone

from arena.alerts import queries
from arena.alerts.models import Channel, Delivery, Notice, Regression, RegressionAlert, TeamNotifications
from arena.core import queue
from arena.core.outbound import outbound_policy
from arena.evaluations.models import TERMINAL, Run, RunEntry
from arena.evaluations.regressions import regressions_for
from arena.teams.models import Role, Team
from ensembles.net import OutboundRefused, post_json

log = logging.getLogger(__name__)

SEND_TASK = "arena.alerts.tasks.send_notice"
WEBHOOK_TIMEOUT_S = 10.0
# What a webhook receives of each regression: names and numbers, never a model's config or key.
WEBHOOK_FIELDS = ("entry", "score", "previous_score", "previous_run_id", "delta", "delta_low", "delta_high", "method")
# Webhook answers worth trying again besides 5xx (timeout, too early, too many requests); any other
# non-2xx is a refusal.
RETRY_STATUSES = (408, 425, 429)
# A notice still waiting this long after it was due lost its message (beat's sweep).
SWEEP_GRACE_S = 60.0
# Beat's and a worker's clocks may differ a little: a notice due a few seconds from now is due.
CLOCK_SKEW = timedelta(seconds=5)


def set_webhook(team: Team, url: str) -> TeamNotifications:
    url = (url or "").strip()
    if "\x00" in url:  # the database cannot store it; say so instead of failing on the query
        raise ValidationError({"webhook_url": "must not contain NUL characters"})
    if url:
        try:
            URLValidator(schemes=["http", "https"])(url)
        except ValidationError:
            raise ValidationError({"webhook_url": f"not an http(s) URL: {url[:200]!r}"}) from None
        if len(url) > 500:
            raise ValidationError({"webhook_url": "at most 500 characters"})
        try:
            outbound_policy().check_url(url)
        except OutboundRefused as exc:
            raise ValidationError({"webhook_url": f"{url} is refused: {exc}"}) from None
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
    found = [r for r in regressions_for(run) if r["regressed"]]
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
    webhook = queries.notifications_for(team).webhook_url
    now = timezone.now()
    notices = [
        Notice(alert=alert, channel=channel, target=target, key=uuid.uuid4().hex, next_attempt_at=now)
        for channel, target in ((Channel.EMAIL, owners), (Channel.WEBHOOK, webhook))
        if target
    ]
    return Notice.objects.bulk_create(notices)


def _send(notice_ids: Iterable[int]) -> None:
    for pk in notice_ids:
        queue.send(SEND_TASK, pk)


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
        # Checked again on every connection, and redirects are not followed: a 3xx is a refusal.
        answer = post_json(
            notice.target,
            payload,
            policy=outbound_policy(),
            timeout=WEBHOOK_TIMEOUT_S,
            headers={"Idempotency-Key": notice.key},
            max_bytes=0,  # what a receiver says back to a notice is not read
        )
    except OutboundRefused as exc:
        raise _Refused(f"the webhook URL is refused: {exc}") from exc
    except httpx.HTTPError as exc:
        raise NoticeRetry(f"{type(exc).__name__}: {exc}", 0) from exc
    said = f": {answer.snippet()}" if answer.body else ""
    if answer.status in RETRY_STATUSES or answer.status >= 500:
        failure = NoticeRetry(f"the webhook answered {answer.status}{said}", 0)
    elif answer.status >= 300:
        failure = _Refused(f"the webhook answered {answer.status}{said}")
    else:
        return answer.status
    failure.status = answer.status
    raise failure


def resend_overdue(grace_s: float = SWEEP_GRACE_S, now: datetime | None = None) -> int:
    """Send again the notices a lost message left waiting (beat, every minute): those whose attempt is
    overdue by ``grace_s`` and whose sender's claim expired.

    Each one is claimed when it is sent, so sending it twice still sends it once.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=grace_s)
    overdue = list(Notice.objects.filter(_due(now), next_attempt_at__lte=cutoff).values_list("pk", flat=True))
    _send(overdue)
    if overdue:
        log.info("sent again %d regression notices", len(overdue))
    return len(overdue)
