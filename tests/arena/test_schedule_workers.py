"""Regression alerts and scheduled firings through real Celery workers, a real beat, Redis and a webhook receiver."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from celery import current_app
from django.core import mail
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from arena.benchmarks.services import import_suite
from arena.evaluations.models import Run, RunEntry, Score, State
from arena.evaluations.services import advance_run
from arena.registry.models import Entry
from arena.schedules import services
from arena.schedules.models import Firing, Regression, RegressionAlert, Schedule
from arena.schedules.tasks import check_regressions
from ensembles import stats
from ensembles.suites import get_builtin
from tests.arena.conftest import ROOT, WorkerProcess, csrf_client, wait_for

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
def suite(team):
    return import_suite(team, get_builtin("arithmetic", size=SIZE))


def model(team, name: str) -> Entry:
    return Entry.objects.create(team=team, name=name, kind="hf", config={"path": f"/nonexistent/{name}"})


def record(suite, results: dict[Entry, list[float]], *, state: str = State.DONE) -> Run:
    """A run whose entries are done with ``values`` on the suite's test items, in item order."""
    now = timezone.now()
    run = Run.objects.create(team=suite.team, suite=suite, splits=["test"], state=state, started_at=now)
    if state in (State.DONE, State.FAILED):
        Run.objects.filter(pk=run.pk).update(finished_at=now)
    items = list(suite.items.filter(split="test").order_by("position"))
    for entry, values in results.items():
        interval = stats.bootstrap_mean(values, seed=run.pk)
        RunEntry.objects.create(
            run=run,
            entry=entry,
            state=State.DONE,
            total_items=len(values),
            done_items=len(values),
            score=interval.mean,
            ci_low=interval.low,
            ci_high=interval.high,
            n=interval.n,
        )
        Score.objects.bulk_create(
            Score(run=run, entry=entry, item=item, prediction="", value=v)
            for item, v in zip(items, values, strict=True)
        )
    return run


@pytest.fixture
def regressed_run(team, owner, suite, webhook):
    """A finished run in which entry a fell from 1.0 to 0.25 while b stayed where it was."""
    owner.email = "olivia@example.org"
    owner.save()
    services.set_webhook(team, webhook.url)
    a, b = model(team, "a"), model(team, "b")
    before = record(suite, {a: [1.0] * 20, b: [1.0, 0.0] * 10})
    after = record(suite, {a: [1.0] * 5 + [0.0] * 15, b: [1.0, 0.0] * 10})
    return before, after


@pytest.mark.django_db
def test_a_regression_emails_the_owners_and_posts_the_webhook_once(team, owner, teammate, regressed_run, webhook):
    before, after = regressed_run
    teammate.email = "tom@example.org"  # a member, not an owner: not emailed
    teammate.save()

    alert = services.check_regressions(after.pk)
    assert services.check_regressions(after.pk) is None  # a second delivery sends nothing

    assert alert.regressed == 1 and alert.emailed == ["olivia@example.org"] and alert.webhook_status == 204
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["olivia@example.org"]
    assert message.subject == "[Ensemble Arena] Red team: 1 entry regressed on arithmetic"
    assert "a: 1.000 -> 0.250 (change -0.750" in message.body and f"previous run #{before.pk}" in message.body
    assert f"/t/red/runs/{after.pk}/" in message.body
    assert "b:" not in message.body

    assert len(webhook.received) == 1
    posted = webhook.received[0]
    assert posted["path"] == "/hooks/arena" and posted["headers"]["Content-Type"] == "application/json"
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
    services.check_regressions(after.pk)
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
def test_a_failing_webhook_is_recorded_and_the_email_still_goes(team, regressed_run, webhook):
    _, after = regressed_run
    webhook.answer["status"] = 500
    alert = services.check_regressions(after.pk)
    assert alert.webhook_status == 500 and len(mail.outbox) == 1

    services.set_webhook(team, "http://127.0.0.1:9/unreachable")
    RegressionAlert.objects.all().delete()
    alert = services.check_regressions(after.pk)
    assert alert.webhook_status is None and alert.webhook_error.startswith("ConnectError")
    assert len(mail.outbox) == 2


@pytest.mark.django_db
def test_no_regression_tells_nobody(team, owner, suite, webhook):
    owner.email = "olivia@example.org"
    owner.save()
    services.set_webhook(team, webhook.url)
    a = model(team, "a")
    record(suite, {a: [0.0] * 20})
    better = record(suite, {a: [1.0] * 20})
    assert services.check_regressions(better.pk).regressed == 0
    assert mail.outbox == [] and webhook.received == []


# --- With a real worker --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_run_closing_with_a_regression_is_posted_once_by_the_worker(worker, team, suite, webhook):
    services.set_webhook(team, webhook.url)
    a, b = model(team, "a"), model(team, "b")
    record(suite, {a: [1.0] * 20, b: [1.0] * 20})
    closing = record(suite, {a: [0.0] * 20, b: [1.0] * 20}, state=State.RUNNING)

    advance_run(closing.pk)  # every entry is done: the run closes and the check is queued

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
