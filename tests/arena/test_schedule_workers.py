"""Regression alerts and scheduled firings through real Celery workers, a real beat, Redis and a webhook receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from celery import current_app
from django.core import mail
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from arena.alerts import services as alerts
from arena.alerts.models import Channel, Delivery, Notice, Regression, RegressionAlert
from arena.alerts.tasks import check_regressions
from arena.evaluations import pipeline
from arena.evaluations.models import Run, RunEntry, State
from arena.registry.models import Entry, Kind
from arena.schedules import services
from arena.schedules.models import Firing, Schedule
from tests.arena.helpers import scored_run
from tests.factories import EntryFactory, SuiteFactory
from tests.helpers import ROOT, WorkerProcess, csrf_client, wait_for

SIZE = 40  # 20 dev + 20 test items


@pytest.fixture
def webhook():
    """A real HTTP server on a free local port that records every POST it receives."""
    received: list[dict] = []
    answer = {"status": 204}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the name http.server calls
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "headers": dict(self.headers), "json": json.loads(body)})
            self.send_response(answer["status"])
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}/hooks/arena", received=received, answer=answer)
    server.shutdown()
    server.server_close()


@pytest.fixture
def scripted_webhook():
    """A webhook receiver that answers with ``answers`` in turn (then 204) and, while ``hold`` is set,
    keeps each request waiting until ``release`` is set; it records every request it got."""
    received: list[dict] = []
    answers: list[int] = []
    holding, hold, release = threading.Event(), threading.Event(), threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the name http.server calls
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"headers": dict(self.headers), "json": json.loads(body)})
            if hold.is_set():
                holding.set()
                release.wait(timeout=120)
            try:
                self.send_response(answers.pop(0) if answers else 204)
                self.end_headers()
            except OSError:
                pass  # the sender died while we held its request

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield SimpleNamespace(
        url=f"http://127.0.0.1:{server.server_port}/hook",
        received=received,
        answers=answers,
        hold=hold,
        holding=holding,
        release=release,
    )
    release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def suite(team):
    return SuiteFactory(team=team, size=SIZE)


def model(team, name: str) -> Entry:
    """A model entry whose path holds no files."""
    return EntryFactory(team=team, name=name, kind=Kind.HF, config={"path": f"/nonexistent/{name}"})


def record(suite, results: dict[Entry, list[float]], *, state: str = State.DONE) -> Run:
    """A run started now whose entries are done with ``values`` on the suite's test items, in item order."""
    return scored_run(suite, results, state=state, at=timezone.now())


@pytest.fixture
def regressed_run(team, owner, suite, webhook):
    """A finished run in which entry a fell from 1.0 to 0.25 while b stayed where it was."""
    owner.email = "olivia@example.org"
    owner.save()
    alerts.set_webhook(team, webhook.url)
    a, b = model(team, "a"), model(team, "b")
    before = record(suite, {a: [1.0] * 20, b: [1.0, 0.0] * 10})
    after = record(suite, {a: [1.0] * 5 + [0.0] * 15, b: [1.0, 0.0] * 10})
    return before, after


def notices_of(alert) -> tuple[Notice, Notice]:
    email, hook = alert.notices.order_by("channel")
    return email, hook


@pytest.mark.django_db
def test_a_regression_emails_the_owners_and_posts_the_webhook_once(team, owner, teammate, regressed_run, webhook):
    before, after = regressed_run
    teammate.email = "tom@example.org"  # a member, not an owner: not emailed
    teammate.save()

    alert = alerts.check_regressions(after.pk)
    assert alerts.check_regressions(after.pk) is None  # a second delivery records nothing
    email, hook = notices_of(alert)
    assert (email.channel, email.target, hook.channel, hook.target) == (
        Channel.EMAIL,
        ["olivia@example.org"],
        Channel.WEBHOOK,
        webhook.url,
    )
    for notice in (email, hook):
        assert alerts.send_notice(notice.pk).state == Delivery.SENT
        assert alerts.send_notice(notice.pk) is None  # delivered: never again
    hook.refresh_from_db()
    assert alert.regressed == 1 and hook.status == 204 and hook.attempts == 1

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["olivia@example.org"]
    assert message.subject == "[Ensemble Arena] Red team: 1 entry regressed on arithmetic"
    assert "a: 1.000 -> 0.250 (change -0.750" in message.body and f"previous run #{before.pk}" in message.body
    assert f"/t/red/runs/{after.pk}/" in message.body
    assert "b:" not in message.body
    assert message.extra_headers["Message-ID"].startswith(f"<{email.key}@")

    assert len(webhook.received) == 1
    posted = webhook.received[0]
    assert posted["path"] == "/hooks/arena" and posted["headers"]["Content-Type"] == "application/json"
    assert posted["headers"]["Idempotency-Key"] == hook.key
    payload = posted["json"]
    assert (payload["event"], payload["team"], payload["run"], payload["suite"]) == (
        "regression",
        "red",
        after.pk,
        "arithmetic",
    )
    [entry] = payload["regressions"]
    assert entry["entry"] == "a" and entry["previous_run_id"] == before.pk and entry["delta"] == pytest.approx(-0.75)
    assert entry["delta_high"] < 0 and "config" not in entry

    stored = Regression.objects.get()
    assert stored.run_entry == RunEntry.objects.get(run=after, entry__name="a")


@pytest.mark.django_db
def test_the_run_page_and_the_leaderboard_flag_the_regressed_entry(team, owner, regressed_run):
    _, after = regressed_run
    alerts.check_regressions(after.pk)
    client = csrf_client(owner)

    board = client.get(f"/t/{team.slug}/leaderboard/arithmetic/?format=json").json()
    assert {r["entry"]: r["regressed"] for r in board["rows"]} == {"a": True, "b": False}
    page = client.get(f"/t/{team.slug}/leaderboard/arithmetic/").content.decode()
    assert page.count('class="state failed regressed"') == 1

    snapshot = client.get(f"/t/{team.slug}/runs/{after.pk}/?format=json").json()
    assert {r["entry"]: r["regressed"] for r in snapshot["entries"]} == {"a": True, "b": False}
    run_page = client.get(f"/t/{team.slug}/runs/{after.pk}/").content.decode()
    assert run_page.count('class="state failed regressed"') == 1


@pytest.mark.django_db
def test_a_webhook_answering_5xx_is_tried_again_later_under_the_same_key_and_the_email_still_goes(
    team, regressed_run, webhook
):
    _, after = regressed_run
    webhook.answer["status"] = 503
    email, hook = notices_of(alerts.check_regressions(after.pk))
    assert alerts.send_notice(email.pk).state == Delivery.SENT and len(mail.outbox) == 1

    with pytest.raises(alerts.NoticeRetry) as retry:
        alerts.send_notice(hook.pk)
    hook.refresh_from_db()
    assert (hook.state, hook.attempts, hook.status) == (Delivery.PENDING, 1, 503)
    assert hook.next_attempt_at > timezone.now() and retry.value.countdown > 0
    assert alerts.send_notice(hook.pk) is None  # not before its next attempt is due

    webhook.answer["status"] = 204
    Notice.objects.filter(pk=hook.pk).update(next_attempt_at=timezone.now())  # the backoff has passed
    assert alerts.send_notice(hook.pk).state == Delivery.SENT
    assert [r["headers"]["Idempotency-Key"] for r in webhook.received] == [hook.key, hook.key]


@pytest.mark.django_db
def test_a_webhook_that_refuses_the_notice_is_not_asked_again(team, regressed_run, webhook):
    _, after = regressed_run
    webhook.answer["status"] = 410
    _, hook = notices_of(alerts.check_regressions(after.pk))
    sent = alerts.send_notice(hook.pk)
    assert (sent.state, sent.status, sent.error) == (Delivery.FAILED, 410, "the webhook answered 410")


@pytest.mark.django_db
def test_an_unreachable_webhook_and_mail_server_are_given_up_after_the_allowed_attempts(team, regressed_run, settings):
    _, after = regressed_run
    settings.ARENA_NOTICE_ATTEMPTS = 2
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens on the discard port
    alerts.set_webhook(team, "http://127.0.0.1:9/unreachable")
    for notice in notices_of(alerts.check_regressions(after.pk)):
        with pytest.raises(alerts.NoticeRetry):
            alerts.send_notice(notice.pk)
        Notice.objects.filter(pk=notice.pk).update(next_attempt_at=timezone.now())
        last = alerts.send_notice(notice.pk)
        assert (last.state, last.attempts) == (Delivery.FAILED, 2)
        assert last.error.startswith("gave up after 2 attempts: ") and "Connect" in last.error


@pytest.mark.django_db
def test_notices_whose_message_was_lost_are_sent_again_by_the_sweep(clean_redis, team, regressed_run):
    _, after = regressed_run
    alerts.check_regressions(after.pk)  # the test's transaction never commits: the send tasks never leave
    assert clean_redis.llen("cpu") == 0
    assert alerts.resend_overdue(grace_s=60) == 0  # not overdue yet
    assert alerts.resend_overdue(grace_s=0) == 2
    assert clean_redis.llen("cpu") == 2
    assert PeriodicTask.objects.filter(task="arena.alerts.tasks.resend_overdue", enabled=True).exists()


@pytest.mark.django_db
def test_no_regression_tells_nobody(team, owner, suite, webhook):
    owner.email = "olivia@example.org"
    owner.save()
    alerts.set_webhook(team, webhook.url)
    a = model(team, "a")
    record(suite, {a: [0.0] * 20})
    better = record(suite, {a: [1.0] * 20})
    assert alerts.check_regressions(better.pk).regressed == 0
    assert mail.outbox == [] and webhook.received == []


# --- With a real worker --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_run_closing_with_a_regression_is_posted_once_by_the_worker(worker, team, suite, webhook):
    alerts.set_webhook(team, webhook.url)
    a, b = model(team, "a"), model(team, "b")
    record(suite, {a: [1.0] * 20, b: [1.0] * 20})
    closing = record(suite, {a: [0.0] * 20, b: [1.0] * 20}, state=State.RUNNING)

    pipeline.advance(closing.pk)  # every entry is done: the run closes and the check is queued

    assert wait_for(lambda: webhook.received, timeout=60, what="the webhook POST")
    assert Run.objects.get(pk=closing.pk).state == State.DONE
    check_regressions.delay(closing.pk)  # delivered again
    # A later task on the same single-process worker: once it is done, the second delivery was too.
    schedule = services.save_schedule(team, name="marker", suite="arithmetic", entries=["b"], cron="0 0 1 1 *")
    current_app.send_task(schedule.periodic_task.task, kwargs=json.loads(schedule.periodic_task.kwargs))
    wait_for(lambda: Firing.objects.filter(schedule=schedule).exists(), timeout=60, what="the later task")

    assert len(webhook.received) == 1
    assert [r["entry"] for r in webhook.received[0]["json"]["regressions"]] == ["a"]
    assert RegressionAlert.objects.get(run=closing).regressed == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_beats_message_delivered_twice_to_two_worker_processes_makes_one_run(
    transactional_db, clean_redis, worker_roots, team, owner, suite
):
    model(team, "a")
    schedule = services.save_schedule(team, name="yearly", suite="arithmetic", entries=["a"], cron="0 0 1 1 *")
    task = PeriodicTask.objects.get(pk=schedule.periodic_task_id)
    worker = WorkerProcess(worker_roots, concurrency=2).start()
    try:
        # What beat sends at each slot: the PeriodicTask's task name with its kwargs.
        for _ in range(2):
            current_app.send_task(task.task, kwargs=json.loads(task.kwargs))
        run = wait_for(
            lambda: Run.objects.filter(team=team, state=State.FAILED).first(), timeout=90, what="the run to fail"
        )
        wait_for(lambda: RegressionAlert.objects.filter(run=run).exists(), timeout=60, what="the regression check")
    finally:
        worker.stop()

    assert Run.objects.filter(team=team).count() == 1
    assert Firing.objects.get(schedule=schedule).run == run
    # The failure and its reason are on the team's queue page.
    page = csrf_client(owner).get(f"/t/{team.slug}/queue/").content.decode()
    assert f'data-run="{run.pk}"' in page and "schedule yearly" in page
    assert "a: " in page and "/nonexistent/a" in page
    assert Schedule.objects.get(pk=schedule.pk).firings.count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_real_beat_fires_a_schedule_at_its_cron_slot_and_a_worker_starts_the_run(worker, team, suite, tmp_path):
    model(team, "a")
    schedule = services.save_schedule(
        team, name="every-minute", suite="arithmetic", entries=["a"], cron="* * * * *", refresh="all"
    )
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "arena", "beat", "--loglevel", "WARNING", "-s", str(tmp_path / "beat")],
        cwd=ROOT,
        env=worker.env,
        start_new_session=True,
    )
    try:
        firing = wait_for(
            lambda: Firing.objects.filter(schedule=schedule).select_related("run").first(),
            timeout=100,
            what="beat to fire the schedule at the next minute",
        )
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=30)

    assert firing.slot.second == 0 and firing.slot.microsecond == 0
    assert firing.run is not None and firing.run.suite == suite


def _close_with_a_regression(team, suite) -> Run:
    a, b = model(team, "a"), model(team, "b")
    record(suite, {a: [1.0] * 20, b: [1.0] * 20})
    closing = record(suite, {a: [0.0] * 20, b: [1.0] * 20}, state=State.RUNNING)
    pipeline.advance(closing.pk)  # every entry is done: the run closes and the check is queued
    return closing


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_while_sending_a_notice_leaves_it_to_another_under_the_same_key(
    clean_redis, worker_roots, team, suite, scripted_webhook
):
    alerts.set_webhook(team, scripted_webhook.url)
    scripted_webhook.hold.set()
    env = {"ARENA_NOTICE_LEASE_S": "2", "ARENA_NOTICE_RETRY_S": "1"}
    first = WorkerProcess(worker_roots, extra_env=env).start()
    try:
        closing = _close_with_a_regression(team, suite)
        # Recorded, and the POST under way: the worker dies before it hears the answer.
        assert scripted_webhook.holding.wait(timeout=90), "the notice never reached the webhook"
        first.kill()
    finally:
        first.stop()
    notice = Notice.objects.get(alert__run=closing)
    assert (notice.state, notice.attempts) == (Delivery.PENDING, 1)
    scripted_webhook.hold.clear()
    scripted_webhook.release.set()

    second = WorkerProcess(worker_roots, extra_env=env).start()
    try:
        time.sleep(2.5)  # the dead worker's claim runs out (ARENA_NOTICE_LEASE_S)
        # What the beat's sweep does every minute: the notice is overdue and nobody holds it.
        assert alerts.resend_overdue(grace_s=0) == 1
        wait_for(lambda: Notice.objects.get(pk=notice.pk).state == Delivery.SENT, timeout=60, what="the second worker")
    finally:
        second.stop()

    notice.refresh_from_db()
    assert (notice.attempts, notice.status) == (2, 204)
    keys = [r["headers"]["Idempotency-Key"] for r in scripted_webhook.received]
    assert keys == [notice.key, notice.key]  # the receiver can tell the repeat from a new regression
    assert scripted_webhook.received[0]["json"] == scripted_webhook.received[1]["json"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_webhook_failing_twice_gets_the_notice_on_the_third_attempt_with_backoff(
    clean_redis, worker_roots, team, suite, scripted_webhook
):
    alerts.set_webhook(team, scripted_webhook.url)
    scripted_webhook.answers.extend([503, 503])
    worker = WorkerProcess(worker_roots, extra_env={"ARENA_NOTICE_RETRY_S": "1"}).start()
    try:
        closing = _close_with_a_regression(team, suite)
        notice = wait_for(
            lambda: Notice.objects.filter(alert__run=closing, state=Delivery.SENT).first(),
            timeout=90,
            what="the notice to get through",
        )
    finally:
        worker.stop()
    assert (notice.attempts, notice.status) == (3, 204)
    assert [r["headers"]["Idempotency-Key"] for r in scripted_webhook.received] == [notice.key] * 3
