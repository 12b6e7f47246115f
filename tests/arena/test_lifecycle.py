"""Archiving and deleting entries, suites, runs and teams: each through its page and the API, with what goes
with it shown first, refusals that name what is in the way, and nothing half-done.

Who may do each (viewers 403, outsiders 404, every route) is the access sweep's (test_access_sweep.py).
"""

from __future__ import annotations

import pytest

from arena.benchmarks.models import Suite
from arena.evaluations.models import EntryState, Run, RunEntry, Score, State
from arena.registry.backends import built_dir
from arena.registry.models import Entry, Materialization, MergeState
from arena.schedules.models import Schedule
from arena.search.models import BlendSearch
from arena.teams import lifecycle as team_lifecycle
from arena.teams.models import ApiToken, Team
from tests.arena.routes import client_for, post_with_token
from tests.factories import RunEntryFactory, RunFactory
from tests.helpers import row_counts

pytestmark = pytest.mark.django_db

CONFIRM = {"confirm": "delete"}  # what a deletion's page sends with its button


def board_entries(api, suite: str) -> set[str]:
    response = api("get", f"/leaderboard/{suite}")
    assert response.status_code == 200, response.content
    return {row["entry"] for row in response.json()["rows"]}


def test_deleting_an_entry_a_blend_uses_is_refused_naming_the_blend_on_the_page_and_the_api(red, api, teammate):
    a = Entry.objects.get(team=red.team, name="red-model-a")
    client = client_for(teammate)
    page = client.get(f"/t/red/entries/{a.pk}/delete/")
    assert page.status_code == 200
    refused = page.content.decode()
    assert 'id="refused"' in refused and "red-blend" in refused and "red-merge" in refused
    assert "Delete entry red-model-a</button>" not in refused
    before = row_counts()

    posted = post_with_token(client, f"/t/red/entries/{a.pk}/delete/", CONFIRM)
    deleted = api("delete", "/entries/red-model-a")

    assert posted.status_code == 409 and b"blends red-blend use it" in posted.content
    assert deleted.status_code == 409
    assert "blends red-blend use it" in deleted.json()["detail"]
    assert "merges red-merge" in deleted.json()["detail"]
    assert row_counts() == before


def test_deleting_an_entry_in_an_unfinished_run_is_refused_until_that_run_is_done(red, api):
    run = Run.objects.get(team=red.team)
    Run.objects.filter(pk=run.pk).update(state=State.RUNNING)
    RunEntry.objects.filter(run=run, entry__name="red-blend").update(state=EntryState.RUNNING)
    before = row_counts()

    response = api("delete", "/entries/red-blend")

    assert response.status_code == 409
    assert f"unfinished runs #{run.pk}" in response.json()["detail"]
    assert row_counts() == before


def test_deleting_a_blend_shows_what_goes_then_takes_its_results_and_keeps_its_members(red, teammate):
    blend = Entry.objects.get(team=red.team, name="red-blend")
    run = Run.objects.get(team=red.team)
    for item in red.team.suites.get().items.filter(split="test"):
        Score.objects.create(run=run, entry=blend, item=item, prediction="1", value=1.0)
    client = client_for(teammate)

    page = client.get(f"/t/red/entries/{blend.pk}/delete/").content.decode()

    assert f"its results in 1 run (#{run.pk}), with 2 scores" in page
    assert "schedules red-nightly no longer evaluate it" in page
    assert "its members red-model-a, red-model-b stay as entries of their own" in page
    response = post_with_token(client, f"/t/red/entries/{blend.pk}/delete/", CONFIRM)
    assert response.status_code == 302 and response["Location"] == "/t/red/"
    assert not Entry.objects.filter(pk=blend.pk).exists()
    assert not Score.objects.filter(entry_id=blend.pk).exists()
    assert not RunEntry.objects.filter(entry_id=blend.pk).exists()
    assert set(Entry.objects.filter(team=red.team).values_list("name", flat=True)) == {
        "red-model-a",
        "red-model-b",
        "red-merge",
    }
    assert list(Schedule.objects.get(name="red-nightly").entries.values_list("name", flat=True)) == ["red-model-a"]
    assert RunEntry.objects.filter(run=run).count() == 3  # the run stays, with its other entries


def test_deleting_a_built_merge_through_the_api_removes_its_weights_once_committed(
    red, api, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.ARENA_BUILT_MODELS_DIR = str(tmp_path / "built")
    weights = built_dir(red.team.pk) / "merge-1-abc"
    weights.mkdir(parents=True)
    (weights / "model.safetensors").write_bytes(b"weights")
    Materialization.objects.filter(entry__name="red-merge").update(state=MergeState.DONE, path=str(weights))

    with django_capture_on_commit_callbacks(execute=True):
        response = api("delete", "/entries/red-merge")

    assert response.status_code == 200, response.content
    assert "its merged weights, built for this team" in response.json()["deleted"]["goes"]
    assert not weights.exists() and built_dir(red.team.pk).exists()
    assert not Entry.objects.filter(name="red-merge").exists()
    assert api("delete", "/entries/red-merge").status_code == 404


def test_an_archived_entry_leaves_the_board_pickers_and_v1_list_but_its_old_run_still_shows_it(
    red, api, token, client, teammate
):
    a = Entry.objects.get(team=red.team, name="red-model-a")
    suite = red.values["suite"]
    assert "red-model-a" in board_entries(api, suite)
    browser = client_for(teammate)

    assert post_with_token(browser, f"/t/red/entries/{a.pk}/archive/").status_code == 302

    a.refresh_from_db()
    assert a.archived_at is not None
    assert board_entries(api, suite) == {"red-model-b", "red-blend", "red-merge"}
    across = browser.get("/t/red/leaderboard/?format=json").json()
    assert {row["entry"] for row in across["rows"]} == {"red-model-b", "red-blend"}
    dashboard = browser.get("/t/red/").content.decode()
    assert f'name="entries" value="{a.pk}"' not in dashboard  # the run picker
    assert f'<a href="/t/red/entries/{a.pk}/">red-model-a</a>' in dashboard.split('id="archived"')[1]
    models = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {token}").json()["data"]
    assert "red-model-a" not in {m["id"] for m in models}
    run_page = browser.get(f"/t/red/runs/{red.values['run_id']}/").content.decode()
    assert 'red-model-a <span class="state archived"' in run_page
    assert b"Unarchive" in browser.get(f"/t/red/entries/{a.pk}/").content
    refused = api("post", "/runs", {"suite": suite, "entries": ["red-model-a"]})
    assert refused.status_code == 422 and "archived entries start no new run: red-model-a" in refused.content.decode()

    unarchived = api("post", "/entries/red-model-a/unarchive")

    assert unarchived.status_code == 200 and unarchived.json()["archived_at"] is None
    assert "red-model-a" in board_entries(api, suite)


def test_an_archived_suite_leaves_the_boards_and_pickers_keeps_its_runs_and_comes_back(red, api, teammate):
    suite = Suite.objects.get(team=red.team)
    browser = client_for(teammate)

    archived = api("post", f"/suites/{suite.pk}/archive")

    assert archived.status_code == 200 and archived.json()["archived_at"] is not None
    assert board_entries(api, suite.name) == set()
    assert f'<option value="{suite.pk}"' not in browser.get("/t/red/").content.decode()
    run_page = browser.get(f"/t/red/runs/{red.values['run_id']}/")
    assert run_page.status_code == 200 and b'<span class="state archived">archived</span>' in run_page.content
    assert post_with_token(browser, f"/t/red/suites/{suite.pk}/unarchive/").status_code == 302
    assert board_entries(api, suite.name) == {"red-model-a", "red-model-b", "red-blend", "red-merge"}


def test_deleting_a_suite_shows_its_items_and_runs_then_deletes_them_and_keeps_the_entries(red, teammate):
    suite = Suite.objects.get(team=red.team)
    run_id = red.values["run_id"]
    client = client_for(teammate)

    page = client.get(f"/t/red/suites/{suite.pk}/delete/").content.decode()

    assert "4 items" in page and f"1 run on it (#{run_id})" in page
    before = row_counts()
    assert post_with_token(client, f"/t/red/suites/{suite.pk}/delete/").status_code == 400  # not the page's button
    assert row_counts() == before
    response = post_with_token(client, f"/t/red/suites/{suite.pk}/delete/", CONFIRM)
    assert response.status_code == 302 and response["Location"] == "/t/red/suites/"
    assert not Suite.objects.filter(pk=suite.pk).exists()
    assert not Run.objects.filter(pk=run_id).exists() and not BlendSearch.objects.filter(run_id=run_id).exists()
    assert Entry.objects.filter(team=red.team).count() == 4


def test_deleting_a_suite_with_an_unfinished_run_is_a_409_naming_it_and_keeps_everything(red, api):
    suite = Suite.objects.get(team=red.team)
    unfinished = RunFactory(suite=suite, state=State.QUEUED)
    before = row_counts()

    response = api("delete", f"/suites/{suite.pk}")

    assert response.status_code == 409
    assert f"runs #{unfinished.pk} on it have not finished" in response.json()["detail"]
    assert row_counts() == before


def test_deleting_a_running_run_cancels_it_first_and_takes_everything_it_stored(red, api, teammate):
    suite = Suite.objects.get(team=red.team)
    running = RunFactory(suite=suite, state=State.RUNNING)
    RunEntryFactory(run=running, entry=Entry.objects.get(name="red-model-b"), state=EntryState.RUNNING)
    client = client_for(teammate)

    page = client.get(f"/t/red/runs/{running.pk}/delete/").content.decode()
    assert "it is running: it is cancelled first" in page and "the results of 1 entry (red-model-b)" in page
    response = api("delete", f"/runs/{running.pk}")

    assert response.status_code == 200, response.content
    assert response.json()["deleted"]["subject"] == f"run #{running.pk} on {suite.name} v{suite.version}"
    assert not Run.objects.filter(pk=running.pk).exists()
    assert not RunEntry.objects.filter(run_id=running.pk).exists()
    # The finished run goes from its page, with its blend search.
    finished = red.values["run_id"]
    assert post_with_token(client, f"/t/red/runs/{finished}/delete/", CONFIRM).status_code == 302
    assert not Run.objects.filter(team=red.team).exists() and not BlendSearch.objects.exists()
    assert Entry.objects.filter(team=red.team).count() == 4 and Suite.objects.filter(pk=suite.pk).exists()


def test_deleting_a_team_is_the_owners_once_they_type_its_name_and_takes_everything(
    red, owner, teammate, settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.ARENA_BUILT_MODELS_DIR = str(tmp_path / "built")
    built_dir(red.team.pk).mkdir(parents=True)
    assert client_for(teammate).get("/t/red/delete/").status_code == 403
    client = client_for(owner)
    page = client.get("/t/red/delete/").content.decode()
    assert "4 entries" in page and "1 suite" in page and "1 run, with every result" in page
    assert "Type <strong>Red team</strong> to confirm" in page
    before = row_counts()

    mistyped = post_with_token(client, "/t/red/delete/", {**CONFIRM, "name": "red"})

    assert mistyped.status_code == 400 and b"type the team&#x27;s name, Red team" in mistyped.content
    assert row_counts() == before
    with django_capture_on_commit_callbacks(execute=True):
        response = post_with_token(client, "/t/red/delete/", {**CONFIRM, "name": "Red team"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert not Team.objects.filter(slug="red").exists()
    assert not built_dir(red.team.pk).exists()
    for model in (Entry, Suite, Run, Schedule, BlendSearch, ApiToken):
        assert not model.objects.filter(team_id=red.team.pk).exists(), model
    assert Team.objects.filter(slug="blue").exists()


def test_a_team_deletion_that_fails_part_way_leaves_everything_as_it_was(red, monkeypatch):
    before = row_counts()

    def fail(self, *args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Team, "delete", fail)  # after the runs went, before the rest

    with pytest.raises(RuntimeError):
        team_lifecycle.delete(red.team, "Red team")
    assert row_counts() == before
