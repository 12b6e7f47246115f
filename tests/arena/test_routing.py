"""GPU affinity: every batch of a model goes to one shard's queue, and a worker on that shard alone finishes."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from arena.benchmarks.services import import_suite
from arena.evaluations.models import Run, RunEntry, State, WorkItem
from arena.evaluations.routing import gpu_queue, gpu_queues, shard_of
from arena.evaluations.services import create_run
from arena.evaluations.tasks import generate_batch
from arena.registry.services import backend_for, register_model
from ensembles.suites import get_builtin
from tests.arena.conftest import ROOT, WorkerProcess, wait_for

FINGERPRINTS = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(64)]


def test_one_shard_is_the_plain_gpu_queue_the_embedded_worker_consumes():
    assert gpu_queues(1) == ["gpu"]
    assert {gpu_queue(fp, 1) for fp in FINGERPRINTS} == {"gpu"}


def test_with_four_shards_models_spread_over_every_shard_queue():
    assert gpu_queues(4) == ["gpu.0", "gpu.1", "gpu.2", "gpu.3"]
    assert {gpu_queue(fp, 4) for fp in FINGERPRINTS} == set(gpu_queues(4))


def test_a_models_shard_is_the_same_in_every_process():
    # Python's hash() of a string changes with PYTHONHASHSEED; the shard must not.
    code = "import sys; from arena.evaluations.routing import shard_of; print([shard_of(f, 32) for f in sys.argv[1:]])"
    here = [shard_of(fp, 32) for fp in FINGERPRINTS[:8]]
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code, *FINGERPRINTS[:8]],
            cwd=ROOT,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert out.strip() == str(here)


@pytest.fixture
def one_model_run(team, owner, tiny_llama_dir, settings):
    settings.ARENA_MODEL_ROOTS = [tiny_llama_dir.parent]
    entry = register_model(team, name="tiny", kind="hf", config={"path": str(tiny_llama_dir)}, user=owner)
    suite = import_suite(team, get_builtin("arithmetic", size=8))
    return entry, suite


@pytest.mark.django_db
def test_a_batch_goes_to_the_queue_of_its_models_shard(one_model_run, clean_redis, settings):
    settings.ARENA_GPU_SHARDS = 4
    entry, suite = one_model_run
    fingerprint = backend_for(entry).fingerprint()
    run = Run.objects.create(team=entry.team, suite=suite, splits=["test"], state=State.RUNNING)
    RunEntry.objects.create(run=run, entry=entry, fingerprint=fingerprint, state=State.RUNNING)
    wi = WorkItem.objects.create(run=run, entry=entry, batch_index=0, item_ids=[])

    generate_batch.delay(wi.pk)

    depths = {q: clean_redis.llen(q) for q in [*gpu_queues(4), "gpu", "cpu"]}
    expected = f"gpu.{shard_of(fingerprint, 4)}"
    assert depths == {q: int(q == expected) for q in depths}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_gpu_worker_consuming_only_its_models_shard_finishes_the_run(
    one_model_run, owner, clean_redis, worker_roots, settings
):
    settings.ARENA_GPU_SHARDS = 4
    entry, suite = one_model_run
    shard_queue = gpu_queue(backend_for(entry).fingerprint(), 4)
    worker = WorkerProcess(worker_roots, extra_env={"ARENA_GPU_SHARDS": "4"}, queues=f"cpu,{shard_queue}").start()
    try:
        run = create_run(entry.team, suite, [entry], user=owner)
        run = wait_for(
            lambda: Run.objects.filter(pk=run.pk, state__in=[State.DONE, State.FAILED]).first(),
            timeout=180,
            what="the run to finish",
        )
        # The last batch closes the run a moment before its task is acknowledged; stopped
        # earlier, the worker would hand the task back to its queue.
        wait_for(lambda: clean_redis.hlen("unacked") == 0, timeout=30, what="the last task's acknowledgement")
    finally:
        worker.stop()
    assert run.state == State.DONE, run.error
    re = RunEntry.objects.get(run=run, entry=entry)
    assert re.done_items == re.total_items > 0
    assert WorkItem.objects.filter(run=run).exclude(state=State.DONE).count() == 0
    # Nothing was left in another shard's queue, nor in the plain one no worker consumes here.
    assert {q: clean_redis.llen(q) for q in [*gpu_queues(4), "gpu"]} == dict.fromkeys([*gpu_queues(4), "gpu"], 0)
