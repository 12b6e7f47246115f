"""Registering entries and blends, and the JSON API, with bad input answered by 4xx."""

from __future__ import annotations

import json
import re

import pytest

from arena.evaluations.models import State
from arena.registry.models import BlendMember, Entry
from arena.registry.services import register_model
from arena.teams.models import ApiToken, Role, Team
from tests.factories import EntryFactory, RunFactory, SuiteFactory
from tests.helpers import csrf_client, post_form

pytestmark = pytest.mark.django_db


@pytest.fixture
def models_root(settings, tiny_llama_dir):
    settings.ARENA_MODEL_ROOTS = [tiny_llama_dir.parent]
    return tiny_llama_dir


def test_a_hf_model_registers_through_the_api(api, models_root):
    response = api("post", "/entries", {"name": "tiny", "kind": "hf", "config": {"path": str(models_root)}})
    assert response.status_code == 201, response.content
    assert response.json()["config"]["path"] == str(models_root)


def test_a_model_path_that_does_not_exist_is_a_422_and_stores_nothing(api, models_root):
    response = api(
        "post", "/entries", {"name": "ghost", "kind": "gguf", "config": {"path": str(models_root.parent / "nope.gguf")}}
    )
    assert response.status_code == 422
    assert "does not exist" in response.json()["detail"]["config"][0]
    assert not Entry.objects.exists()


def test_a_path_outside_the_model_roots_is_refused(api, models_root, tmp_path):
    response = api("post", "/entries", {"name": "x", "kind": "hf", "config": {"path": "/etc"}})
    assert response.status_code == 422
    assert "outside the allowed model roots" in response.json()["detail"]["config"][0]


def test_pickle_weights_are_refused(api, models_root, settings, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text("{}")
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04")
    settings.ARENA_MODEL_ROOTS = [tmp_path]
    response = api("post", "/entries", {"name": "p", "kind": "hf", "config": {"path": str(pickled)}})
    assert response.status_code == 422
    assert "pickle" in response.json()["detail"]["config"][0]


def test_an_unknown_strategy_suggests_the_closest_name(api, team, models_root):
    for name in ("a", "b"):
        register_model(team, name=name, kind="hf", config={"path": str(models_root)})
    response = api("post", "/blends", {"name": "v", "strategy": "majority_vot", "members": ["a", "b"]})
    assert response.status_code == 422
    assert "did you mean 'majority_vote'" in response.json()["detail"]["strategy"][0]
    assert not Entry.objects.filter(kind="blend").exists()


def test_a_bad_strategy_parameter_names_the_field(api, team, models_root):
    for name in ("a", "b"):
        register_model(team, name=name, kind="hf", config={"path": str(models_root)})
    response = api(
        "post",
        "/blends",
        {"name": "v", "strategy": "majority_vote", "params": {"tie_break": "coin"}, "members": ["a", "b"]},
    )
    assert response.status_code == 422
    assert "tie_break" in response.json()["detail"]["params"][0]
    assert not BlendMember.objects.exists()


def test_a_blend_of_unknown_members_is_refused(api):
    response = api("post", "/blends", {"name": "v", "strategy": "majority_vote", "members": ["x", "y"]})
    assert response.status_code == 422
    assert "unknown entries: x, y" in response.json()["detail"]["members"][0]


def test_an_endpoint_key_is_stored_encrypted_and_never_returned(api, team, serve):
    response = api(
        "post",
        "/entries",
        {
            "name": "remote",
            "kind": "openai",
            "api_key": "sk-very-secret",
            "config": {"base_url": f"{serve().url}/v1", "model": "m"},
        },
    )
    assert response.status_code == 201
    assert "sk-very-secret" not in response.content.decode()
    entry = Entry.objects.get(name="remote")
    assert entry.secret and "sk-very-secret" not in entry.secret
    assert "sk-very-secret" not in json.dumps(entry.config)
    assert "sk-very-secret" not in api("get", "/entries").content.decode()


def test_malformed_bodies_are_4xx_not_500(api):
    assert api("post", "/entries", {"name": "x"}).status_code == 422
    assert api("post", "/entries", {"name": "x", "kind": "pickle", "config": {}}).status_code == 422
    assert api("post", "/runs", {"suite": "nope", "entries": ["a"]}).status_code == 422
    assert (
        api(
            "post", "/entries", {"name": "x", "kind": "hf", "config": {"path": "/x", "trust_remote_code": True}}
        ).status_code
        == 422
    )


def test_a_wrong_token_is_401(api):
    assert api("get", "/entries", auth="arena_nope").status_code == 401
    assert api("get", "/entries", auth=None).status_code == 401


def test_a_viewer_token_reads_but_cannot_register(api, team):
    _, viewer_token = ApiToken.issue(team, "read", role=Role.VIEWER)
    assert api("get", "/entries", auth=viewer_token).status_code == 200
    assert (
        api("post", "/entries", {"name": "x", "kind": "hf", "config": {"path": "/x"}}, auth=viewer_token).status_code
        == 403
    )


def test_another_teams_run_is_404_through_the_api(api, team, models_root):
    blue = Team.objects.get(slug="blue")
    suite = SuiteFactory(team=blue, size=4)
    run = RunFactory(team=blue, suite=suite, state=State.QUEUED)
    assert api("get", f"/runs/{run.pk}").status_code == 404


def test_starting_a_run_through_the_api_records_it_with_its_members(api, team, models_root):
    for name in ("a", "b"):
        register_model(team, name=name, kind="hf", config={"path": str(models_root)})
    api("post", "/blends", {"name": "v", "strategy": "majority_vote", "members": ["a", "b"]})
    SuiteFactory(team=team, size=8)
    response = api("post", "/runs", {"suite": "arithmetic", "entries": ["v"]})
    assert response.status_code == 201, response.content
    body = response.json()
    assert {entry["entry"] for entry in body["entries"]} == {"a", "b", "v"}
    assert body["state"] == State.QUEUED


def test_registering_a_model_on_the_page_with_a_bad_path_shows_the_error(owner, team, models_root):
    client = csrf_client(owner)
    response = post_form(
        client, f"/t/{team.slug}/entries/", {"name": "x", "kind": "gguf", "config": '{"path": "/nope.gguf"}'}
    )
    assert response.status_code == 302
    page = client.get(response["Location"])
    assert b"outside the allowed model roots" in page.content or b"does not exist" in page.content
    assert not Entry.objects.exists()


def test_invalid_json_config_on_the_page_is_reported(owner, team):
    client = csrf_client(owner)
    response = post_form(client, f"/t/{team.slug}/entries/", {"name": "x", "kind": "hf", "config": "{not json"})
    page = client.get(response["Location"])
    assert b"not valid JSON" in page.content


def test_viewers_cannot_register_on_the_page(viewer, team):
    response = post_form(csrf_client(viewer), f"/t/{team.slug}/entries/", {"name": "x", "kind": "hf", "config": "{}"})
    assert response.status_code == 403


@pytest.mark.parametrize(
    "path", ["/t/red/", "/t/red/leaderboard/arithmetic/", "/t/red/runs/1/", "/t/red/entries/1/", "/t/red/admin/"]
)
def test_an_outsider_gets_404_on_every_team_page(outsider, team, path):
    assert csrf_client(outsider).get(path).status_code == 404


def test_the_leaderboard_page_renders_with_a_constant_number_of_queries(
    owner, team, models_root, django_assert_max_num_queries
):
    SuiteFactory(team=team, size=4)  # arithmetic: a board of a suite the team does not have is a 404
    client = csrf_client(owner)
    with django_assert_max_num_queries(12):
        assert client.get(f"/t/{team.slug}/leaderboard/arithmetic/").status_code == 200


def test_a_team_adds_a_builtin_suite_through_the_api_and_the_same_content_twice_is_one_suite(api, team):
    first = api("post", "/suites/builtin", {"name": "arithmetic", "size": 10})
    assert first.status_code == 201 and first.json()["items"] == 10
    again = api("post", "/suites/builtin", {"name": "arithmetic", "size": 10})
    assert again.json()["id"] == first.json()["id"]


def test_an_unknown_builtin_suite_is_a_422_with_a_suggestion(api):
    response = api("post", "/suites/builtin", {"name": "arithmetc"})
    assert response.status_code == 422
    assert "did you mean 'arithmetic'" in response.json()["detail"]["name"][0]


def test_adding_a_builtin_suite_on_the_page(owner, team):
    client = csrf_client(owner)
    post_form(client, f"/t/{team.slug}/suites/builtin/", {"name": "arithmetic", "size": "12"})
    assert team.suites.get().items.count() == 12
    response = post_form(client, f"/t/{team.slug}/suites/builtin/", {"name": "arithmetic", "size": "lots"})
    assert b"whole number" in client.get(response["Location"]).content


def test_changed_content_under_the_same_version_becomes_a_new_version(api, team):
    small = api("post", "/suites/builtin", {"name": "arithmetic", "size": 10}).json()
    large = api("post", "/suites/builtin", {"name": "arithmetic", "size": 12}).json()
    assert small["version"] != large["version"] and large["version"].startswith(small["version"] + "+")
    assert team.suites.count() == 2


def test_the_api_docs_page_loads_swagger_from_our_own_static_files():
    from django.test import Client

    client = Client()
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    # Every script and stylesheet is ours: the docs must work on a machine with no internet.
    urls = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert urls and not [u for u in urls if "//" in u], urls
    assets = [u for u in urls if u.startswith("/static/ninja/")]
    assert {a.rsplit("/", 1)[1] for a in assets} >= {"swagger-ui-bundle.js", "swagger-ui.css"}
    for asset in assets:
        served = client.get(asset)
        assert served.status_code == 200 and b"".join(served.streaming_content), asset


def test_a_refused_blend_form_comes_back_with_what_was_sent(owner, team):
    for name in ("a", "b"):
        EntryFactory(team=team, name=name)
    client = csrf_client(owner)
    sent = {
        "kind": "blend",
        "name": "my-blend",
        "strategy": "weighted_vote",
        "params": '{"rounds": -3',
        "members": ["b"],
    }
    response = post_form(client, f"/t/{team.slug}/entries/", sent)
    page = client.get(response["Location"]).content.decode()
    assert "not valid JSON" in page
    assert 'value="my-blend"' in page and "{&quot;rounds&quot;: -3</textarea>" in page
    assert '<option value="weighted_vote" selected>' in page
    assert 'value="b" checked>' in page and 'value="a" checked>' not in page
    # Shown once: the next visit starts from an empty form.
    assert 'value="my-blend"' not in client.get(response["Location"]).content.decode()
