"""A team's files are its own: what the arena builds for it lives in its folder, registration reads only
there or from the shared model roots, and the folder goes with the team."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.core.exceptions import ValidationError
from django.test import Client

from arena.registry import merges
from arena.registry.backends import backend_for, built_dir
from arena.registry.models import Entry, Kind, Materialization, MergeState
from arena.registry.services import register_model
from arena.teams.models import Team
from ensembles.backends import BackendError
from tests.factories import EntryFactory, TeamFactory, UserFactory
from tests.helpers import csrf_client, post_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def dirs(settings, team, tiny_llama_dir, tmp_path) -> dict[str, Path]:
    """A shared root with the base model, and the blue team's fine-tune in its own built folder."""
    shared, built = tmp_path / "models", tmp_path / "built"
    settings.ARENA_MODEL_ROOTS = [shared]
    settings.ARENA_BUILT_MODELS_DIR = built
    blue = Team.objects.get(slug="blue")
    blue_model = built_dir(blue.pk) / "finetune-secret-0123456789ab"
    shutil.copytree(tiny_llama_dir, shared / "base")
    shutil.copytree(tiny_llama_dir, blue_model)
    return {"shared": shared, "built": built, "blue": blue_model, "red": built_dir(team.pk)}


def register(api, path, kind: str = "hf", name: str = "x"):
    return api("post", "/entries", {"name": name, "kind": kind, "config": {"path": str(path)}})


def refusal(response, path) -> str:
    """The message of a 422 on a path, with the path itself (echoed back) taken out."""
    assert response.status_code == 422, response.content
    [message] = response.json()["detail"]["config"]
    return message.replace(repr(str(path)), "<path>")


def test_another_teams_built_path_is_refused_exactly_as_a_missing_one(api, dirs):
    theirs = register(api, dirs["blue"])
    missing_there = register(api, dirs["blue"].parent / "finetune-nothing-here")
    missing_here = register(api, dirs["red"] / "finetune-nothing-here")

    assert theirs.status_code == missing_there.status_code == missing_here.status_code == 422
    assert refusal(theirs, dirs["blue"]) == refusal(missing_there, dirs["blue"].parent / "finetune-nothing-here")
    assert refusal(theirs, dirs["blue"]) == refusal(missing_here, dirs["red"] / "finetune-nothing-here")
    assert not Entry.objects.filter(name="x").exists()


def test_a_path_up_and_out_of_the_teams_folder_is_refused(api, dirs):
    dotdot = f"{dirs['red']}/../{dirs['blue'].parent.name}/{dirs['blue'].name}"
    from_shared = f"{dirs['shared']}/../built/{dirs['blue'].parent.name}/{dirs['blue'].name}"
    for path in (dotdot, from_shared):
        response = register(api, path)
        assert refusal(response, path) == refusal(register(api, dirs["red"] / "nope"), dirs["red"] / "nope")
    assert not Entry.objects.filter(name="x").exists()


def test_a_symlink_out_of_the_teams_folder_or_from_a_shared_root_into_another_team_is_refused(api, dirs, tmp_path):
    dirs["red"].mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(dirs["shared"] / "base", elsewhere)
    links = {
        dirs["red"] / "stolen": dirs["blue"],
        dirs["red"] / "outside": elsewhere,
        dirs["shared"] / "planted": dirs["blue"],
    }
    for link, target in links.items():
        link.symlink_to(target, target_is_directory=True)
        response = register(api, link)
        assert response.status_code == 422 and "does not exist or is outside" in refusal(response, link), link
    assert not Entry.objects.filter(name="x").exists()


def test_a_symlink_made_after_registration_to_another_team_is_refused_when_the_entry_is_loaded(api, dirs, team):
    mine = dirs["red"] / "finetune-mine"
    shutil.copytree(dirs["shared"] / "base", mine)
    assert register(api, mine, name="mine").status_code == 201
    shutil.rmtree(mine)
    mine.symlink_to(dirs["blue"], target_is_directory=True)

    with pytest.raises(BackendError, match="does not exist or is outside the allowed model roots"):
        backend_for(Entry.objects.get(team=team, name="mine"))


def names_the_path(response) -> bool:
    """A 4xx naming the field: the request's edge refuses a NUL in any JSON string, the registry any control
    character in a path (line breaks and tabs too)."""
    detail = response.json()["detail"]
    return response.status_code in (400, 422) and any(key.startswith("config") for key in detail)


@pytest.mark.parametrize("path", ["/models/a\x00b", "/models/a\nb", "/models/a\tb", "/models/\x1b[31mred.gguf"])
def test_a_nul_or_control_character_in_a_path_is_a_422_naming_the_field(api, dirs, team, path):
    for kind in ("hf", "gguf"):
        response = api("post", "/entries", {"name": "x", "kind": kind, "config": {"path": path}})
        assert names_the_path(response), response.content
    register_model(team, name="mine", kind="hf", config={"path": str(dirs["shared"] / "base")})
    response = api("put", "/entries/mine", {"kind": "hf", "config": {"path": path}})
    assert names_the_path(response), response.content
    assert not Entry.objects.filter(name="x").exists()
    assert Entry.objects.get(name="mine").config["path"] == str(dirs["shared"] / "base")


@pytest.mark.parametrize(("path", "problem"), [("/m\x00.gguf", "a NUL character (U+0000)"), ("/m\n.gguf", "(U+000A)")])
def test_registering_a_path_with_a_control_character_is_refused_naming_the_field(team, dirs, path, problem):
    with pytest.raises(ValidationError) as refused:
        register_model(team, name="x", kind="gguf", config={"path": path})
    [message] = refused.value.message_dict["config"]
    assert message.startswith("path: contains") and problem in message
    assert not Entry.objects.exists()


def test_a_nul_in_a_path_on_the_page_is_an_error_shown_not_a_500(owner, team, dirs):
    client = csrf_client(owner)
    response = post_form(
        client, "/t/red/entries/", {"name": "x", "kind": "gguf", "config": '{"path": "/m\\u0000.gguf"}'}
    )
    assert response.status_code == 302
    assert b"path: contains a NUL character (U+0000)" in client.get(response["Location"]).content
    assert not Entry.objects.exists()


def test_registering_from_the_shared_root_or_the_teams_own_folder_works(api, dirs):
    mine = dirs["red"] / "finetune-mine"
    shutil.copytree(dirs["shared"] / "base", mine)

    assert register(api, dirs["shared"] / "base", name="base").status_code == 201
    assert register(api, mine, name="mine").status_code == 201
    # The blue team reads its own fine-tune, which the red team could not.
    blue = Team.objects.get(slug="blue")
    entry = register_model(blue, name="secret", kind="hf", config={"path": str(dirs["blue"])})
    backend_for(entry).check()


def test_a_built_folder_inside_a_shared_root_is_still_every_other_teams_to_keep_out_of(api, dirs, settings):
    settings.ARENA_MODEL_ROOTS = [dirs["built"].parent]
    assert refusal(register(api, dirs["blue"]), dirs["blue"]) == refusal(
        register(api, dirs["red"] / "nope"), dirs["red"] / "nope"
    )
    assert register(api, dirs["shared"] / "base", name="base").status_code == 201


def test_deleting_a_team_removes_its_folder_once_committed_and_leaves_the_others(
    dirs, django_capture_on_commit_callbacks
):
    red = Team.objects.get(slug="red")
    shutil.copytree(dirs["shared"] / "base", dirs["red"] / "merge-1-abc")

    with django_capture_on_commit_callbacks(execute=True):
        red.delete()

    assert not dirs["red"].exists()
    assert dirs["blue"].exists() and (dirs["shared"] / "base").exists()


def test_deleting_a_team_from_the_admin_removes_its_folder(dirs, django_capture_on_commit_callbacks):
    blue = Team.objects.get(slug="blue")
    staff = Client()
    staff.force_login(UserFactory(username="stella", is_staff=True, is_superuser=True))

    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(f"/admin/teams/team/{blue.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302 and not Team.objects.filter(pk=blue.pk).exists()
    assert not dirs["blue"].parent.exists()


def test_a_merge_is_built_under_the_teams_folder(api, team, dirs, tiny_variant, django_capture_on_commit_callbacks):
    tiny_variant(dirs["shared"] / "v1", seed=1)
    for name in ("base", "v1"):
        register_model(team, name=name, kind="hf", config={"path": str(dirs["shared"] / name)})
    recipe = {"method": "linear", "members": [{"entry": "base"}, {"entry": "v1"}]}
    assert api("post", "/entries", {"name": "merged", "kind": "merge", "config": recipe}).status_code == 201
    materialization = Materialization.objects.get(entry__name="merged")

    merges.run(materialization.pk, materialization.attempt)

    materialization.refresh_from_db()
    assert materialization.state == MergeState.DONE, materialization.reason
    assert Path(materialization.path).parent == dirs["red"]
    backend_for(materialization.entry).check()


def test_a_merge_whose_team_is_deleted_while_it_is_built_leaves_no_weights_behind(
    api, team, dirs, tiny_variant, monkeypatch
):
    tiny_variant(dirs["shared"] / "v1", seed=1)
    for name in ("base", "v1"):
        register_model(team, name=name, kind="hf", config={"path": str(dirs["shared"] / name)})
    recipe = {"method": "linear", "members": [{"entry": "base"}, {"entry": "v1"}]}
    assert api("post", "/entries", {"name": "merged", "kind": "merge", "config": recipe}).status_code == 201
    materialization = Materialization.objects.get(entry__name="merged")
    build = merges.materialize

    def build_then_lose_the_team(*args, **kwargs):
        build(*args, **kwargs)
        Team.objects.filter(pk=team.pk).delete()

    monkeypatch.setattr(merges, "materialize", build_then_lose_the_team)
    merges.run(materialization.pk, materialization.attempt)

    assert not Materialization.objects.exists()
    assert not [p for p in dirs["red"].iterdir() if not p.name.startswith(".")]


def test_a_very_long_path_is_refused_without_being_echoed_whole(api, dirs):
    path = "/" + "a" * 100_000
    response = register(api, path)
    assert response.status_code == 422 and len(response.content) < 2_000


def test_the_data_migration_moves_each_teams_old_folder_and_the_paths_stored_in_it(dirs, team):
    blue = Team.objects.get(slug="blue")
    old = dirs["built"] / "red"
    shutil.copytree(dirs["shared"] / "base", old / "finetune-tuned-0123")
    tuned = register_model(team, name="tuned", kind="hf", config={"path": str(dirs["shared"] / "base")})
    Entry.objects.filter(pk=tuned.pk).update(config={"path": str(old / "finetune-tuned-0123")})
    base = register_model(team, name="base", kind="hf", config={"path": str(dirs["shared"] / "base")})
    merged = EntryFactory(team=team, name="merged", kind=Kind.MERGE, config={})
    Materialization.objects.create(entry=merged, state=MergeState.DONE, path=str(old / "merge-3-abc"))
    # A deleted team's folder named like the blue team's id, and blue's own folder already in place.
    shutil.rmtree(dirs["blue"].parent)
    (dirs["built"] / str(blue.pk) / "left-behind").mkdir(parents=True)

    migration = importlib.import_module("arena.registry.migrations.0003_team_folders")
    migration.forwards(django_apps, None)

    assert not old.exists() and (dirs["red"] / "finetune-tuned-0123" / "config.json").exists()
    assert Entry.objects.get(pk=tuned.pk).config["path"] == str(dirs["red"] / "finetune-tuned-0123")
    assert Materialization.objects.get(entry=merged).path == str(dirs["red"] / "merge-3-abc")
    assert Entry.objects.get(pk=base.pk).config["path"] == str(dirs["shared"] / "base")
    assert (dirs["built"] / f".unowned-{blue.pk}-1" / "left-behind").exists()
    assert not (dirs["built"] / str(blue.pk)).exists()
    backend_for(Entry.objects.get(pk=tuned.pk)).check()


def test_a_new_team_does_not_inherit_a_folder_left_under_its_id(settings, tmp_path):
    settings.ARENA_BUILT_MODELS_DIR = tmp_path / "built"
    left = built_dir(987654) / "merge-9-abc"
    left.mkdir(parents=True)

    team = TeamFactory(pk=987654, name="Green team", slug="green")

    assert not built_dir(team.pk).exists()
    assert (tmp_path / "built" / f".unowned-{team.pk}-1" / "merge-9-abc").exists()
    team.name = "Green"
    team.save()  # only a new team's folder is checked
    assert (tmp_path / "built" / f".unowned-{team.pk}-1").exists()
