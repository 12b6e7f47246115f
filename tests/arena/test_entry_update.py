"""PUT /entries/{name}: register a model, or point an existing one at a new checkpoint."""

from __future__ import annotations

import pytest

from arena.evaluations.models import EntryState, State
from arena.registry import secrets
from arena.registry.models import Entry
from arena.registry.services import register_blend, register_model
from arena.teams.models import ApiToken, Role, Team
from tests.factories import RunEntryFactory, RunFactory, SuiteFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def checkpoints(settings, tiny_variant, tmp_path):
    settings.ARENA_MODEL_ROOTS = [tmp_path]
    return tiny_variant(tmp_path / "step-1", 1), tiny_variant(tmp_path / "step-2", 2)


def put(api, name: str, body: dict, **kwargs):
    return api("put", f"/entries/{name}", body, **kwargs)


def test_putting_a_new_name_registers_it_and_again_points_it_at_the_new_checkpoint(api, team, checkpoints):
    first, second = checkpoints
    created = put(api, "mine", {"kind": "hf", "config": {"path": str(first)}, "description": "step 1"})
    assert created.status_code == 201, created.content

    updated = put(api, "mine", {"kind": "hf", "config": {"path": str(second)}, "description": "step 2"})

    assert updated.status_code == 200, updated.content
    assert updated.json()["id"] == created.json()["id"]
    entry = Entry.objects.get(team=team, name="mine")
    assert (entry.config["path"], entry.description) == (str(second), "step 2")
    # Left out, the description stays.
    assert put(api, "mine", {"kind": "hf", "config": {"path": str(first)}}).status_code == 200
    entry.refresh_from_db()
    assert (entry.config["path"], entry.description) == (str(first), "step 2")


def test_an_update_with_a_bad_path_is_a_422_and_keeps_the_entry_as_it_was(api, team, checkpoints):
    first, _ = checkpoints
    register_model(team, name="mine", kind="hf", config={"path": str(first)})
    response = put(api, "mine", {"kind": "hf", "config": {"path": str(first.parent / "missing")}})
    assert response.status_code == 422
    assert "does not exist" in response.json()["detail"]["config"][0]
    assert Entry.objects.get(team=team, name="mine").config["path"] == str(first)


def test_the_kind_of_an_entry_cannot_change(api, team, checkpoints):
    first, _ = checkpoints
    register_model(team, name="mine", kind="hf", config={"path": str(first)})
    response = put(api, "mine", {"kind": "gguf", "config": {"path": str(first)}})
    assert response.status_code == 422
    assert "is a hf entry" in response.json()["detail"]["kind"][0]


def test_a_blend_cannot_be_changed_as_a_model(api, team, checkpoints):
    for i, path in enumerate(checkpoints):
        register_model(team, name=f"m{i}", kind="hf", config={"path": str(path)})
    register_blend(team, name="vote", strategy="majority_vote", params={}, members=["m0", "m1"])
    response = put(api, "vote", {"kind": "hf", "config": {"path": str(checkpoints[0])}})
    assert response.status_code == 422
    assert "is a blend" in response.json()["detail"]["name"][0]


def test_an_entry_in_an_unfinished_run_is_not_changed(api, team, checkpoints):
    first, second = checkpoints
    entry = register_model(team, name="mine", kind="hf", config={"path": str(first)})
    suite = SuiteFactory(team=team, size=4)
    run = RunFactory(suite=suite, state=State.RUNNING)
    RunEntryFactory(run=run, entry=entry, state=EntryState.RUNNING, total_items=2)

    response = put(api, "mine", {"kind": "hf", "config": {"path": str(second)}})

    assert response.status_code == 422
    assert f"unfinished run {run.pk}" in response.json()["detail"]["name"][0]
    assert Entry.objects.get(pk=entry.pk).config["path"] == str(first)


def test_an_openai_entry_keeps_its_key_unless_a_new_one_is_given(api, team, serve):
    config = {"base_url": f"{serve().url}/v1", "model": "a"}
    assert put(api, "remote", {"kind": "openai", "config": config, "api_key": "sk-old"}).status_code == 201

    assert put(api, "remote", {"kind": "openai", "config": {**config, "model": "b"}}).status_code == 200
    entry = Entry.objects.get(team=team, name="remote")
    assert (entry.config["model"], secrets.decrypt(entry.secret)) == ("b", "sk-old")

    assert put(api, "remote", {"kind": "openai", "config": config, "api_key": "sk-new"}).status_code == 200
    assert secrets.decrypt(Entry.objects.get(pk=entry.pk).secret) == "sk-new"


def test_a_merge_recipe_cannot_contain_its_own_entry(api, team, checkpoints):
    for i, path in enumerate(checkpoints):
        register_model(team, name=f"m{i}", kind="hf", config={"path": str(path)})
    recipe = {"method": "linear", "members": [{"entry": "m0"}, {"entry": "m1"}]}
    assert put(api, "merged", {"kind": "merge", "config": recipe}).status_code == 201
    outer = {**recipe, "members": [{"entry": "merged"}, {"entry": "m1"}]}
    assert put(api, "outer", {"kind": "merge", "config": outer}).status_code == 201

    cyclic = {**recipe, "members": [{"entry": "outer"}, {"entry": "m0"}]}
    response = put(api, "merged", {"kind": "merge", "config": cyclic})

    assert response.status_code == 422
    assert "would contain 'merged' itself" in response.json()["detail"]["config"][0]


def test_a_viewer_token_cannot_put_and_another_teams_entry_is_not_touched(api, team, checkpoints):
    first, second = checkpoints
    blue = Team.objects.get(slug="blue")
    theirs = register_model(blue, name="mine", kind="hf", config={"path": str(first)})
    viewer_token = ApiToken.issue(team, "read", role=Role.VIEWER)[1]

    denied = put(api, "mine", {"kind": "hf", "config": {"path": str(second)}}, auth=viewer_token)
    assert denied.status_code == 403
    assert put(api, "mine", {"kind": "hf", "config": {"path": str(second)}}).status_code == 201

    assert Entry.objects.get(pk=theirs.pk).config["path"] == str(first)
    assert Entry.objects.get(team=team, name="mine").config["path"] == str(second)


def test_an_unauthenticated_put_is_a_401(api, checkpoints):
    assert put(api, "mine", {"kind": "hf", "config": {"path": str(checkpoints[0])}}, auth=None).status_code == 401
