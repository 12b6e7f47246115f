"""Merge entries in the arena: recipes checked at registration, materialization state and restarts, hub ids,
and the fine-tune command. The real worker building a merge is in test_merge_worker.py."""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from django.core.management import CommandError, call_command
from django.utils import timezone

from arena.evaluations.models import Run
from arena.registry.backends import backend_for
from arena.registry.models import Entry, Materialization, MergeState
from arena.registry.services import register_model
from arena.teams.models import ApiToken, Role, Team
from ensembles.backends import BackendError
from tests.factories import SuiteFactory
from tests.helpers import csrf_client, post_form

pytestmark = pytest.mark.django_db

COMMIT = "0123456789abcdef0123456789abcdef01234567"
GGUF = Path(__file__).resolve().parents[2] / "data" / "test" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(autouse=True)
def one_torch_thread():
    # Two shared cores: one thread per process keeps a tiny model's step in milliseconds.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def family(settings, tiny_llama_dir, tiny_variant, tmp_path) -> dict[str, Path]:
    """The team's base and two variants, registered; built models go to a folder of the test's own."""
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    settings.ARENA_BUILT_MODELS_DIR = tmp_path / "built"
    paths = {
        "base": Path(shutil.copytree(tiny_llama_dir, root / "base")),
        "v1": tiny_variant(root / "v1", seed=1),
        "v2": tiny_variant(root / "v2", seed=2),
    }
    team = Team.objects.get(slug="red")
    for name, path in paths.items():
        register_model(team, name=name, kind="hf", config={"path": str(path)})
    return paths


def register_merge(api, name: str, recipe: dict):
    return api("post", "/entries", {"name": name, "kind": "merge", "config": recipe})


LINEAR = {"method": "linear", "members": [{"entry": "v1"}, {"entry": "v2"}]}


def test_registering_a_merge_sends_its_materialization_to_the_gpu_queue_once_stored(
    api, family, clean_redis, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = register_merge(api, "merged", LINEAR)

    assert response.status_code == 201, response.content
    [message] = clean_redis.lrange("gpu", 0, -1)
    materialization = Materialization.objects.get(entry__name="merged")
    headers = json.loads(message)["headers"]
    assert (headers["task"], headers["argsrepr"]) == (
        "arena.registry.tasks.materialize_merge",
        f"({materialization.pk}, 1)",
    )
    state = api("get", "/merges/merged").json()
    assert (state["state"], state["attempt"], state["recipe"]["method"]) == (MergeState.QUEUED, 1, "linear")
    assert api("get", "/merges").json()[0]["name"] == "merged"


def test_a_merge_runs_only_once_materialized(api, family):
    register_merge(api, "merged", LINEAR)
    entry = Entry.objects.get(name="merged")
    with pytest.raises(BackendError, match=r"has not been materialized into weights yet \(queued\)"):
        backend_for(entry)

    Materialization.objects.filter(entry=entry).update(state=MergeState.DONE, path=str(family["v1"]))
    backend = backend_for(entry)
    assert backend.config.path == str(family["v1"])
    assert backend.fingerprint() == backend_for(Entry.objects.get(name="v1")).fingerprint()


def test_a_recipe_mixing_architectures_is_a_422_naming_the_two_members_and_stores_nothing(api, family, tmp_path):
    import transformers

    qwen = tmp_path / "models" / "qwen"
    config = transformers.Qwen2Config(
        **{**transformers.AutoConfig.from_pretrained(family["base"]).to_dict(), "model_type": "qwen2"}
    )
    config.architectures = None
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(qwen, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(family["base"] / name, qwen / name)
    assert api("post", "/entries", {"name": "qwen", "kind": "hf", "config": {"path": str(qwen)}}).status_code == 201

    response = register_merge(api, "mixed", {"method": "linear", "members": [{"entry": "v1"}, {"entry": "qwen"}]})

    assert response.status_code == 422
    message = response.json()["detail"]["config"][0]
    assert message == "architecture differs: 'v1' has LlamaForCausalLM, 'qwen' has Qwen2ForCausalLM"
    assert not Entry.objects.filter(name="mixed").exists() and not Materialization.objects.exists()


def test_a_recipe_mixing_vocabularies_is_a_422(api, family):
    tokenizer = json.loads((family["v2"] / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"]["Paris"] = len(tokenizer["model"]["vocab"])
    (family["v2"] / "tokenizer.json").write_text(json.dumps(tokenizer))

    response = register_merge(api, "mixed", LINEAR)

    assert response.status_code == 422
    assert "tokenizer vocabulary size differs: 'v1' has 212, 'v2' has 213" in response.json()["detail"]["config"][0]
    assert not Entry.objects.filter(name="mixed").exists()


def test_a_merge_of_one_model_twice_is_a_422_naming_both_entries_and_stores_nothing(api, family, tmp_path):
    copy = Path(shutil.copytree(family["v1"], tmp_path / "models" / "v1-copy"))
    assert api("post", "/entries", {"name": "v1-copy", "kind": "hf", "config": {"path": str(copy)}}).status_code == 201
    fingerprint = backend_for(Entry.objects.get(name="v1")).fingerprint()
    # Same weights in another directory: the same fingerprint.
    response = register_merge(
        api, "twice", {"method": "slerp", "t": 0.5, "members": [{"entry": "v1"}, {"entry": "v1-copy"}]}
    )
    assert response.status_code == 422
    assert response.json()["detail"]["config"][0] == (
        f"v1 and v1-copy are the same weights (fingerprint {fingerprint[:19]}…); a merge needs different models"
    )
    # The same directory under another chat template: another fingerprint, but one set of weights.
    chat = {"path": str(family["v1"]), "chat_template": "off"}
    assert api("post", "/entries", {"name": "v1-chat", "kind": "hf", "config": chat}).status_code == 201
    response = register_merge(api, "twice", {"method": "linear", "members": [{"entry": "v1-chat"}, {"entry": "v1"}]})
    assert response.status_code == 422
    assert response.json()["detail"]["config"][0] == (
        f"v1-chat and v1 are the same weights (both read {family['v1'].resolve()}); a merge needs different models"
    )
    assert not Entry.objects.filter(name="twice").exists() and not Materialization.objects.exists()


@pytest.mark.skipif(not GGUF.exists(), reason="the offline SmolLM2 GGUF is not in data/test/models")
def test_a_gguf_member_is_checked_from_its_header_without_exporting_it(api, family, settings, tmp_path):
    settings.ARENA_MODEL_ROOTS = [*settings.ARENA_MODEL_ROOTS, GGUF.parent]
    settings.CACHE_DIR = tmp_path / "cache"
    assert api("post", "/entries", {"name": "smol", "kind": "gguf", "config": {"path": str(GGUF)}}).status_code == 201

    response = register_merge(api, "mixed", {"method": "linear", "members": [{"entry": "smol"}, {"entry": "v1"}]})

    assert response.status_code == 422
    assert response.json()["detail"]["config"][0] == "hidden size differs: 'smol' has 576, 'v1' has 16"
    assert not (tmp_path / "cache").exists()  # nothing exported to find that out


def test_a_bad_recipe_is_a_422_naming_the_parameter(api, family):
    response = register_merge(api, "m", {"method": "ties", "base": "base", "members": [{"entry": "v1", "t": 0.5}]})
    assert response.status_code == 422
    assert "members.0.t" in response.json()["detail"]["config"][0]
    response = register_merge(api, "m", {"method": "slerp", "t": 0.5, "members": [{"entry": "v1"}, {"entry": "v2"}]})
    assert response.status_code == 201


def test_a_failed_or_stuck_materialization_is_started_again_by_a_member_and_a_queued_one_is_not(api, team, family):
    register_merge(api, "merged", LINEAR)
    materialization = Materialization.objects.get(entry__name="merged")

    refused = api("post", "/merges/merged/materialize")
    assert refused.status_code == 422
    assert "'merged' is queued; only a failed materialization" in refused.json()["detail"]["state"][0]
    # One stuck longer than a task may run (its message lost with a broker) can be started again.
    Materialization.objects.filter(pk=materialization.pk).update(queued_at=timezone.now() - timedelta(hours=1))
    assert api("post", "/merges/merged/materialize").json()["attempt"] == 2

    Materialization.objects.filter(pk=materialization.pk).update(state=MergeState.FAILED, reason="member 'v2' broke")
    viewer = ApiToken.issue(team, "read", role=Role.VIEWER)[1]
    assert api("post", "/merges/merged/materialize", auth=viewer).status_code == 403
    assert api("get", "/merges/merged", auth=viewer).json()["reason"] == "member 'v2' broke"

    restarted = api("post", "/merges/merged/materialize")
    assert restarted.status_code == 202
    assert (restarted.json()["state"], restarted.json()["attempt"], restarted.json()["reason"]) == (
        MergeState.QUEUED,
        3,
        "",
    )


def test_a_merge_not_built_is_not_offered_to_run_or_judge_and_a_run_of_it_is_a_422(api, team, owner, family):
    SuiteFactory(team=team, size=4)
    register_merge(api, "merged", LINEAR)
    Materialization.objects.filter(entry__name="merged").update(
        state=MergeState.FAILED, reason="Duplicate merge inputs"
    )
    merged = Entry.objects.get(name="merged")
    assert (
        api("post", "/blends", {"name": "vote", "strategy": "majority_vote", "members": ["merged", "v1"]}).status_code
        == 201
    )
    client = csrf_client(owner)
    dashboard = client.get("/t/red/").content.decode()
    start = dashboard.split('id="start-run"')[1].split("</form>")[0]
    assert f'name="entries" value="{merged.pk}"' not in start and f'<option value="{merged.pk}"' not in start
    assert f'name="entries" value="{Entry.objects.get(name="v1").pk}"' in start
    schedules = client.get("/t/red/schedules/").content.decode()
    assert 'value="merged"' not in schedules and 'value="v1"' in schedules

    for entries in (["merged"], ["vote"]):  # directly, or under a blend
        refused = api("post", "/runs", {"suite": "arithmetic", "entries": entries})
        assert refused.status_code == 422, refused.content
        assert refused.json()["detail"]["entries"] == [
            "merges not built into weights yet cannot run: merged (failed: Duplicate merge inputs); wait or rebuild them"
        ]
    assert not Run.objects.exists()


def test_another_teams_merge_is_404_and_a_model_entry_is_not_a_merge(api, family):
    blue = Team.objects.get(slug="blue")
    register_model(blue, name="theirs", kind="hf", config={"path": str(family["v1"])})
    assert api("get", "/merges/theirs").status_code == 404
    assert api("get", "/merges/v1").status_code == 404
    assert api("post", "/merges/v1/materialize").status_code == 404


def test_the_entry_page_shows_a_failed_merge_with_its_reason_and_starts_it_again(owner, viewer, api, family):
    register_merge(api, "merged", LINEAR)
    entry = Entry.objects.get(name="merged")
    Materialization.objects.filter(entry=entry).update(state=MergeState.FAILED, reason="mergekit could not merge: boom")
    url = f"/t/red/entries/{entry.pk}/"

    page = csrf_client(owner).get(url).content.decode()
    assert 'id="materialization"' in page and "mergekit could not merge: boom" in page
    assert "Materialize again" in page
    assert "Materialize again" in csrf_client(viewer).get(url).content.decode()  # shown; the POST checks the role
    assert post_form(csrf_client(viewer), f"{url}materialize/", {}).status_code == 403

    response = post_form(csrf_client(owner), f"{url}materialize/", {})

    assert response.status_code == 302 and response["Location"] == url
    assert Materialization.objects.get(entry=entry).state == MergeState.QUEUED
    assert "queued" in csrf_client(owner).get(url).content.decode()


def test_updating_a_recipe_builds_it_again_and_the_same_recipe_does_not(api, family):
    register_merge(api, "merged", LINEAR)
    assert api("put", "/entries/merged", {"kind": "merge", "config": LINEAR}).status_code == 200
    assert Materialization.objects.get(entry__name="merged").attempt == 1
    changed = {**LINEAR, "members": [{"entry": "v1", "weight": 2}, {"entry": "v2"}]}
    assert api("put", "/entries/merged", {"kind": "merge", "config": changed}).status_code == 200
    assert Materialization.objects.get(entry__name="merged").attempt == 2


# --- Hub ids --------------------------------------------------------------------------------


def test_a_hub_id_registers_when_its_commit_is_in_the_cache_and_is_a_422_when_not(
    api, tiny_llama_dir, tmp_path, monkeypatch
):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    shutil.copytree(tiny_llama_dir, cache / "models--arena-test--tiny" / "snapshots" / COMMIT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    created = api(
        "post", "/entries", {"name": "hub", "kind": "hf", "config": {"hub_id": "arena-test/tiny", "revision": COMMIT}}
    )
    assert created.status_code == 201, created.content
    assert backend_for(Entry.objects.get(name="hub")).fingerprint().startswith("hf:")

    missing = api(
        "post", "/entries", {"name": "gone", "kind": "hf", "config": {"hub_id": "arena-test/other", "revision": COMMIT}}
    )
    assert missing.status_code == 422
    assert "is not in" in missing.json()["detail"]["config"][0]
    branch = api(
        "post",
        "/entries",
        {"name": "moving", "kind": "hf", "config": {"hub_id": "arena-test/tiny", "revision": "main"}},
    )
    assert branch.status_code == 422 and "40-hex commit" in branch.json()["detail"]["config"][0]
    assert not Entry.objects.filter(name__in=["gone", "moving"]).exists()


# --- Fine-tuning ----------------------------------------------------------------------------


def test_the_finetune_command_registers_a_variant_of_the_team_learned_on_dev(team, family, settings, capsys):
    SuiteFactory(team=team, size=16)

    call_command(
        "finetune", "red", "base", "arithmetic", "--name", "base-arith", "--steps", "20", "--learning-rate", "1e-2"
    )

    entry = Entry.objects.get(team=team, name="base-arith")
    assert entry.kind == "hf" and "dev split of arithmetic" in entry.description
    path = Path(entry.config["path"])
    assert path.parent == settings.ARENA_BUILT_MODELS_DIR / str(team.pk)
    assert (path / "model.safetensors").exists() and not list(path.glob("*.bin"))
    assert "registered base-arith" in capsys.readouterr().out
    backend_for(entry).check()


def test_the_finetune_command_refuses_an_unknown_member_or_a_taken_name_before_training(team, family):
    SuiteFactory(team=team, size=16)
    with pytest.raises(CommandError, match="member: Red team has no entry named 'nope'"):
        call_command("finetune", "red", "nope", "arithmetic", "--name", "x")
    with pytest.raises(CommandError, match="already has an entry named 'v1'"):
        call_command("finetune", "red", "base", "arithmetic", "--name", "v1")
    with pytest.raises(CommandError, match="suite: Red team has no suite named 'capitals'"):
        call_command("finetune", "red", "base", "capitals", "--name", "x")
    assert not (Path(Entry.objects.get(name="base").config["path"]).parent.parent / "built").exists()
