"""The staff operations page and the structured logs, against real workers, Redis and Postgres."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from arena.evaluations.models import RunEntry, State
from arena.evaluations.services import create_run
from arena.evaluations.tasks import generate_batch
from arena.registry.services import register_model
from tests.factories import SuiteFactory, UserFactory
from tests.helpers import ROOT, WorkerProcess, csrf_client, database_url, finished, wait_for

TASK = "arena.evaluations.tasks."


@pytest.fixture
def staff():
    return UserFactory(username="sam", is_staff=True)


@pytest.fixture
def models(team, owner, tiny_llama_dir, tmp_path, settings):
    """A working model and one whose files are gone by the time the run is planned."""
    settings.ARENA_MODEL_ROOTS = [tiny_llama_dir.parent, tmp_path]
    tiny = register_model(team, name="tiny", kind="hf", config={"path": str(tiny_llama_dir)}, user=owner)
    gone_dir = shutil.copytree(tiny_llama_dir, tmp_path / "gone")
    gone = register_model(team, name="gone", kind="hf", config={"path": str(gone_dir)}, user=owner)
    shutil.rmtree(gone_dir)
    suite = SuiteFactory(team=team, size=8)
    return tiny, gone, suite


def ops_json(user) -> dict:
    response = csrf_client(user).get("/ops/?format=json")
    assert response.status_code == 200
    return response.json()


@pytest.mark.django_db
def test_the_ops_page_is_a_404_to_anyone_but_staff(team, owner, outsider, clean_redis):
    for user in (None, owner, outsider):
        assert csrf_client(user).get("/ops/").status_code == 404
        assert csrf_client(user).get("/ops/?format=json").status_code == 404


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_staff_see_a_live_worker_with_its_queues_loaded_model_and_the_runs_failure(
    staff, owner, models, clean_redis, worker_roots
):
    tiny, gone, suite = models
    worker = WorkerProcess(worker_roots).start()
    try:
        run = create_run(tiny.team, suite, [tiny, gone], user=owner)
        wait_for(lambda: finished(run.pk), timeout=180, what="the run to finish")
        fingerprint = RunEntry.objects.get(run=run, entry=tiny).fingerprint

        def node_holding_the_model():
            for node in ops_json(staff)["workers"]:
                if any(
                    model_info["fingerprint"] == fingerprint
                    for process in node["processes"]
                    for model_info in process["models"]
                ):
                    return node
            return None

        # A process beats every 10 s: the model shows at its next beat after the batch.
        node = wait_for(node_holding_the_model, timeout=30, what="the worker to report its loaded model")
        # The last batch closes the run a moment before its task is acknowledged.
        snapshot = wait_for(lambda: (s := ops_json(staff))["unacked"] == 0 and s, timeout=30, what="the last ack")
        page = csrf_client(staff).get("/ops/")
        health = csrf_client(None).get("/healthz")
    finally:
        worker.stop()

    assert node["node"].startswith(f"{worker.name}@")
    # /healthz reads the same heartbeats: the live worker makes it healthy.
    assert health.status_code == 200 and health.json()["workers"]["alive"] == [node["node"]]
    assert node["queues"] == ["cpu", "gpu"]
    [model] = [
        model_info
        for process in node["processes"]
        for model_info in process["models"]
        if model_info["fingerprint"] == fingerprint
    ]
    assert model["entries"] == ["red/tiny"]
    assert {q["name"]: (q["depth"], q["in_use"]) for q in snapshot["queues"]} == {
        "gpu": (0, True),
        "cpu": (0, True),
    }
    [failure] = snapshot["failures"]["entries"]
    assert (failure["run"], failure["team"], failure["entry"]) == (run.pk, "red", "gone")
    assert "does not exist" in failure["error"]
    html = page.content.decode()
    assert page.status_code == 200 and node["node"] in html and "red/tiny" in html and "does not exist" in html


@pytest.mark.django_db(transaction=True)
def test_waiting_tasks_show_with_nobody_to_take_them_and_a_leftover_shard_queue_is_flagged(
    staff, owner, models, clean_redis
):
    tiny, _, suite = models
    create_run(tiny.team, suite, [tiny], user=owner)  # plan_run waits on `cpu`: no worker runs
    generate_batch.apply_async((0,), queue="gpu.3")  # a queue from an earlier ARENA_GPU_SHARDS=4

    snapshot = ops_json(staff)

    queues = {q["name"]: q for q in snapshot["queues"]}
    assert queues["cpu"] == {"name": "cpu", "depth": 1, "consumers": 0, "in_use": True}
    assert queues["gpu.3"] == {"name": "gpu.3", "depth": 1, "consumers": 0, "in_use": False}
    assert snapshot["workers"] == [] and snapshot["beats"] == []
    html = csrf_client(staff).get("/ops/").content.decode()
    assert "nobody takes these" in html and "not in use" in html and "none alive" in html


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_one_beat_shows_as_alive(staff, clean_redis, settings, tmp_path):
    env = dict(os.environ, DATABASE_URL=database_url(), REDIS_URL=settings.REDIS_URL, PYTHONUNBUFFERED="1")
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "arena", "beat", "--loglevel", "WARNING", "-s", str(tmp_path / "s")],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        beats = wait_for(lambda: ops_json(staff)["beats"], timeout=60, what="the beat to report")
        html = csrf_client(staff).get("/ops/").content.decode()
    finally:
        os.killpg(beat.pid, signal.SIGTERM)
        beat.wait(timeout=30)
    assert [b["node"].split("@")[0] for b in beats] == ["beat"]
    assert "one alive" in html


@pytest.mark.django_db
def test_the_ops_page_still_shows_failures_when_redis_is_down(staff, settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    response = csrf_client(staff).get("/ops/?format=json")
    assert response.status_code == 200
    body = response.json()
    assert body["redis_error"] and body["workers"] == [] and body["queues"] == [] and body["beats"] == []
    assert csrf_client(staff).get("/ops/").status_code == 200


def json_records(path) -> list[dict]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the banner Celery prints before logging starts
    return records


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_workers_json_log_lines_carry_the_run_and_task_ids(owner, models, clean_redis, worker_roots, tmp_path):
    tiny, _, suite = models
    log_path = tmp_path / "worker.log"
    worker = WorkerProcess(worker_roots, extra_env={"ARENA_LOG_FORMAT": "json"}, log_path=log_path).start()

    def succeeded() -> dict:
        return {
            r["task"]: r
            for r in json_records(log_path)
            if r.get("run_id") == run.pk and r.get("task_id") and "succeeded" in r["message"]
        }

    try:
        run = create_run(tiny.team, suite, [tiny], user=owner)
        run = wait_for(lambda: finished(run.pk), timeout=180, what="the run to finish")
        # The last batch closes the run a moment before its task reports success.
        done = wait_for(
            lambda: (d := succeeded()).get(TASK + "generate_batch") and d, timeout=30, what="the batch's log line"
        )
    finally:
        worker.stop()
    assert run.state == State.DONE, run.error

    records = json_records(log_path)
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    assert {TASK + "plan_run", TASK + "generate_batch"} <= done.keys()
    batch = done[TASK + "generate_batch"]
    assert batch["task_id"] in batch["message"] and batch["logger"] == "celery.app.trace"
