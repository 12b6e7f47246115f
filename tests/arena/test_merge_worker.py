"""A real worker builds merges on the gpu queue: fine-tune two variants of a base, merge them, run the merge
on a suite and find it on the leaderboard; a merge that breaks half way leaves nothing that looks finished."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from django.core.management import call_command
from safetensors.torch import load_file, save_file

from arena.evaluations.models import State
from arena.registry.models import Entry, MergeState
from arena.registry.services import register_model
from ensembles.merging import is_complete
from tests.factories import SuiteFactory
from tests.helpers import WorkerProcess, finished, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SUITE_SIZE = 16  # 8 dev (the fine-tunes learn on these) + 8 test (the board scores these)


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Two shared cores: one thread per process keeps a tiny model's step in milliseconds.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def arena_dirs(settings, tiny_llama_dir, tmp_path) -> tuple[Path, Path]:
    """The team's model folder holding the base, and where the arena writes what it builds."""
    models, built = tmp_path / "models", tmp_path / "built"
    shutil.copytree(tiny_llama_dir, models / "base")
    settings.ARENA_MODEL_ROOTS = [models]
    settings.ARENA_BUILT_MODELS_DIR = built
    return models, built


@pytest.fixture
def gpu_worker(transactional_db, clean_redis, arena_dirs):
    models, built = arena_dirs
    worker = WorkerProcess(
        [models], extra_env={"ARENA_BUILT_MODELS_DIR": str(built), "ARENA_TORCH_THREADS": "1"}, queues="gpu,cpu"
    ).start()
    yield worker
    worker.stop()


def merge_state(api, name: str, *states: str) -> dict | None:
    body = api("get", f"/merges/{name}").json()
    return body if body["state"] in states else None


def test_a_merge_of_two_fine_tuned_variants_is_built_on_the_gpu_queue_run_served_and_ranked(
    gpu_worker, api, client, token, team, arena_dirs
):
    models, built = arena_dirs
    register_model(team, name="base", kind="hf", config={"path": str(models / "base")})
    SuiteFactory(team=team, size=SUITE_SIZE)
    for name, seed in (("base-a", "1"), ("base-b", "2")):
        call_command(
            "finetune", "red", "base", "arithmetic", "--name", name, "--steps", "20", "--learning-rate", "1e-2",
            "--seed", seed,
        )  # fmt: skip
    recipe = {"method": "task_arithmetic", "base": "base", "members": [{"entry": "base-a"}, {"entry": "base-b"}]}

    created = api("post", "/entries", {"name": "merged", "kind": "merge", "config": recipe})
    assert created.status_code == 201, created.content
    served = {model["id"] for model in client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {token}").json()["data"]}
    assert "merged" not in served, "a merge has nothing to serve before its weights are built"

    done = wait_for(
        lambda: merge_state(api, "merged", MergeState.DONE, MergeState.FAILED),
        timeout=240,
        what="the merge to materialize",
    )
    assert done["state"] == MergeState.DONE, done["reason"]
    served = {model["id"] for model in client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {token}").json()["data"]}
    assert "merged" in served
    reply = client.post(
        "/v1/chat/completions",
        data=json.dumps({"model": "merged", "messages": [{"role": "user", "content": "2+2="}], "max_tokens": 4}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert reply.status_code == 200, reply.content
    assert reply.json()["usage"]["completion_tokens"] > 0
    path = Path(done["path"])
    assert path.parent == built / str(team.pk) and is_complete(path)
    assert set(done["provenance"]["members"]) == {"base", "base-a", "base-b"}
    assert done["provenance"]["mergekit"] == "0.1.5"

    started = api("post", "/runs", {"suite": "arithmetic", "entries": ["merged", "base-a", "base-b"]})
    assert started.status_code == 201, started.content
    run = wait_for(lambda: finished(started.json()["id"]), timeout=300, what="the run to finish")
    assert run.state == State.DONE, run.error

    board = api("get", "/leaderboard/arithmetic").json()
    row = next(r for r in board["rows"] if r["entry"] == "merged")
    assert row["kind"] == "merge" and row["score"] is not None
    assert {r["entry"] for r in board["rows"]} >= {"merged", "base-a", "base-b"}


def test_a_merge_that_breaks_half_way_fails_with_its_reason_leaves_nothing_complete_and_can_be_restarted(
    gpu_worker, api, team, arena_dirs, tiny_llama_dir
):
    models, built = arena_dirs
    shutil.copytree(tiny_llama_dir, models / "other")
    for name in ("base", "other"):
        register_model(team, name=name, kind="hf", config={"path": str(models / name)})
    weights = models / "other" / "model.safetensors"
    intact = load_file(weights)
    # Registered while whole; then a tensor goes missing, which mergekit meets half way through writing.
    save_file(
        {k: v for k, v in intact.items() if k != "model.layers.1.mlp.up_proj.weight"},
        weights,
        metadata={"format": "pt"},
    )
    recipe = {"method": "linear", "members": [{"entry": "base"}, {"entry": "other"}]}
    assert api("post", "/entries", {"name": "merged", "kind": "merge", "config": recipe}).status_code == 201
    # Other work goes on: a run of the base alone, queued behind the merge on the same worker.
    SuiteFactory(team=team, size=SUITE_SIZE)
    started = api("post", "/runs", {"suite": "arithmetic", "entries": ["base"]})

    failed = wait_for(
        lambda: merge_state(api, "merged", MergeState.DONE, MergeState.FAILED), timeout=240, what="the merge to fail"
    )

    assert failed["state"] == MergeState.FAILED and "mergekit could not merge" in failed["reason"], failed
    assert failed["path"] == ""
    assert not [path for path in (built / str(team.pk)).iterdir() if is_complete(path) or not path.name.startswith(".")]
    assert wait_for(lambda: finished(started.json()["id"]), timeout=300, what="the other run").state == State.DONE
    page = api("get", "/entries").json()
    assert next(entry for entry in page if entry["name"] == "merged")["kind"] == "merge"

    save_file(intact, weights, metadata={"format": "pt"})
    assert api("post", "/merges/merged/materialize").status_code == 202
    done = wait_for(
        lambda: merge_state(api, "merged", MergeState.DONE, MergeState.FAILED), timeout=240, what="the restarted merge"
    )
    assert done["state"] == MergeState.DONE, done["reason"]
    assert is_complete(Path(done["path"]))
    assert Entry.objects.get(name="merged").materialization.attempt == 2
