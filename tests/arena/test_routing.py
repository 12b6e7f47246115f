"""GPU affinity: every batch of a model, and every blend or judge that calls it, goes to one shard's queue."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from arena.core.routing import gpu_queue, gpu_queues, shard_of
from arena.evaluations import pipeline
from arena.evaluations.models import EntryState, Run, RunEntry, State, WorkItem
from arena.evaluations.services import create_run
from arena.evaluations.tasks import combine_blend, generate_batch, judge_run
from arena.registry.backends import backend_for
from arena.registry.services import register_blend, register_model
from tests.arena.helpers import judge_suite
from tests.factories import RunEntryFactory, RunFactory, SuiteFactory
from tests.helpers import ROOT, WorkerProcess, wait_for

FINGERPRINTS = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(64)]


def test_one_shard_is_the_plain_gpu_queue_the_embedded_worker_consumes():
    assert gpu_queues(1) == ["gpu"]
    assert {gpu_queue(fp, 1) for fp in FINGERPRINTS} == {"gpu"}


def test_with_four_shards_models_spread_over_every_shard_queue():
    assert gpu_queues(4) == ["gpu.0", "gpu.1", "gpu.2", "gpu.3"]
    assert {gpu_queue(fp, 4) for fp in FINGERPRINTS} == set(gpu_queues(4))


def test_a_models_shard_is_the_same_in_every_process():
    # Python's hash() of a string changes with PYTHONHASHSEED; the shard must not.
    code = "import sys; from arena.core.routing import shard_of; print([shard_of(f, 32) for f in sys.argv[1:]])"
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
    suite = SuiteFactory(team=team, size=8)
    return entry, suite


@pytest.mark.django_db
def test_a_batch_goes_to_the_queue_of_its_models_shard(one_model_run, clean_redis, settings):
    settings.ARENA_GPU_SHARDS = 4
    entry, suite = one_model_run
    fingerprint = backend_for(entry).fingerprint()
    run = RunFactory(suite=suite, state=State.RUNNING)
    RunEntryFactory(run=run, entry=entry, fingerprint=fingerprint, state=EntryState.RUNNING)
    work_item = WorkItem.objects.create(run=run, entry=entry, batch_index=0, item_ids=[])

    generate_batch.delay(work_item.pk)

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
    run_entry = RunEntry.objects.get(run=run, entry=entry)
    assert run_entry.done_items == run_entry.total_items > 0
    assert WorkItem.objects.filter(run=run).exclude(state=State.DONE).count() == 0
    # Nothing was left in another shard's queue, nor in the plain one no worker consumes here.
    assert {q: clean_redis.llen(q) for q in [*gpu_queues(4), "gpu"]} == dict.fromkeys([*gpu_queues(4), "gpu"], 0)


# --- blends that call models, and judging --------------------------------------------------------


@pytest.fixture
def calling_team(team, owner, tiny_variant, settings, tmp_path):
    """Two members, a fuser and a judge (tiny variants), a fuser blend and a vote over the members."""
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    models = {
        name: register_model(team, name=name, kind="hf", config={"path": str(tiny_variant(root / name, seed))})
        for seed, name in enumerate(("tiny-a", "tiny-b", "tiny-fuser"), start=1)
    }
    blends = {
        "fused": register_blend(
            team, name="fused", strategy="gen_fuser", params={"fuser": "tiny-fuser"}, members=["tiny-a", "tiny-b"]
        ),
        "sc": register_blend(team, name="sc", strategy="self_consistency", params={"k": 2}, members=["tiny-b"]),
        "vote": register_blend(team, name="vote", strategy="majority_vote", params={}, members=["tiny-a", "tiny-b"]),
    }
    return models, blends


def depths(client) -> dict[str, int]:
    return {q: client.llen(q) for q in [*gpu_queues(4), "gpu", "cpu"] if client.llen(q)}


@pytest.mark.django_db
def test_a_calling_blend_combines_on_its_called_models_shard_and_a_voting_blend_on_cpu(
    calling_team, team, owner, clean_redis, settings
):
    settings.ARENA_GPU_SHARDS = 4
    models, blends = calling_team
    suite = SuiteFactory(team=team, size=8)
    run = create_run(team, suite, list(blends.values()), user=owner)
    pipeline.plan_run(run.pk)  # not committed in this test, so nothing sent it; plan by hand
    run.refresh_from_db()
    fuser_fp, member_fp = (backend_for(models[n]).fingerprint() for n in ("tiny-fuser", "tiny-b"))
    assert run.provenance["called_models"] == {
        "fused": {"model": "tiny-fuser", "fingerprint": fuser_fp},
        "sc": {"model": "tiny-b", "fingerprint": member_fp},  # self-consistency samples its member
    }

    for name, queue in (("fused", gpu_queue(fuser_fp, 4)), ("sc", gpu_queue(member_fp, 4)), ("vote", "cpu")):
        clean_redis.flushdb()
        combine_blend.delay(RunEntry.objects.get(run=run, entry=blends[name]).pk)
        assert depths(clean_redis) == {queue: 1}, name


@pytest.mark.django_db
def test_with_one_shard_calling_blends_go_to_the_gpu_queue(calling_team, team, owner, clean_redis):
    _, blends = calling_team
    suite = SuiteFactory(team=team, size=8)
    run = create_run(team, suite, [blends["fused"], blends["vote"]], user=owner)
    pipeline.plan_run(run.pk)
    clean_redis.flushdb()
    combine_blend.delay(RunEntry.objects.get(run=run, entry=blends["fused"]).pk)
    assert depths(clean_redis) == {"gpu": 1}


@pytest.mark.django_db
def test_a_calling_blend_whose_model_cannot_be_checked_is_left_to_the_cpu_queue(
    calling_team, team, owner, clean_redis, settings
):
    settings.ARENA_GPU_SHARDS = 4
    models, blends = calling_team
    for weights in Path(models["tiny-fuser"].config["path"]).glob("*.safetensors"):
        weights.unlink()
    suite = SuiteFactory(team=team, size=8)
    run = create_run(team, suite, [blends["fused"]], user=owner)
    pipeline.plan_run(run.pk)
    run.refresh_from_db()
    assert "called_models" not in run.provenance
    clean_redis.flushdb()
    combine_blend.delay(RunEntry.objects.get(run=run, entry=blends["fused"]).pk)
    # There its combine fails with the reason, as before routing knew of calling blends.
    assert depths(clean_redis) == {"cpu": 1}


@pytest.mark.django_db
def test_judging_goes_to_the_judges_shard(calling_team, team, owner, clean_redis, settings):
    settings.ARENA_GPU_SHARDS = 4
    models, _ = calling_team
    suite = SuiteFactory(team=team, library=judge_suite())
    run = create_run(team, suite, [models["tiny-a"], models["tiny-b"]], user=owner, judge=models["tiny-fuser"])
    pipeline.plan_run(run.pk)
    run.refresh_from_db()
    judge_fp = backend_for(models["tiny-fuser"]).fingerprint()
    assert run.provenance["judge"] == {"model": "tiny-fuser", "fingerprint": judge_fp}
    clean_redis.flushdb()
    judge_run.delay(run.pk)
    assert depths(clean_redis) == {gpu_queue(judge_fp, 4): 1}
