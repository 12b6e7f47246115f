"""Safe by default: DEBUG off unless asked for; a 500 is a plain page or a JSON error with a request id
that the log line with the traceback carries; a 404 lists nothing; a body over the limit is a 413
before the arena reads it, in the error shape of the part of the site it was sent to."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from asgiref.sync import async_to_sync
from channels.testing import HttpCommunicator
from django.test import Client
from django.urls import path

from arena.core.logs import ContextFilter, JsonFormatter
from arena.teams.models import ApiToken, Team
from tests.helpers import ROOT, csrf_client, post_form

pytestmark = pytest.mark.django_db

SECRET = "a-local-variable-no-visitor-may-see"


def debug_setting(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("ARENA_DEBUG", "ARENA_ENV")}
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "arena.settings", **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_debug_is_off_unless_arena_debug_turns_it_on():
    assert debug_setting() == "False"
    assert debug_setting(ARENA_DEBUG="1") == "True"
    assert debug_setting(ARENA_DEBUG="0") == "False"


def _boom(*args, **kwargs):
    raise RuntimeError(SECRET)


@pytest.fixture
def logged(caplog):
    """Log records as the console handler sees them, with the request id the arena's filter adds."""
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.ERROR, logger="django.request")
    yield caplog
    caplog.handler.removeFilter(caplog.handler.filters[-1])


def _traceback_line(logged, request_id: str) -> dict:
    records = [r for r in logged.records if getattr(r, "request_id", None) == request_id and r.exc_info]
    assert records, [(r.getMessage(), getattr(r, "request_id", None)) for r in logged.records]
    entry = json.loads(JsonFormatter().format(records[0]))
    assert entry["request_id"] == request_id and SECRET in entry["exc"] and "RuntimeError" in entry["exc"]
    return entry


def test_a_500_on_a_page_is_a_plain_page_whose_request_id_the_logged_traceback_carries(
    owner, team, monkeypatch, logged
):
    monkeypatch.setattr("arena.teams.services.create_team", _boom)
    client = csrf_client(owner)
    client.raise_request_exception = False
    response = post_form(client, "/teams/new/", {"name": "x"})
    assert response.status_code == 500 and response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    request_id = response["X-Request-ID"]
    assert request_id in page
    assert SECRET not in page and "Traceback" not in page and "RuntimeError" not in page
    _traceback_line(logged, request_id)


def test_a_500_on_the_api_is_a_json_error_with_the_request_id(client, token, monkeypatch, logged):
    monkeypatch.setattr("arena.registry.services.register_model", _boom)
    client.raise_request_exception = False
    body = {"name": "x", "kind": "openai", "config": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}
    response = client.post(
        "/api/v1/entries", json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 500
    request_id = response["X-Request-ID"]
    assert response.json() == {"detail": "the arena failed on this request; it is logged", "request_id": request_id}
    assert SECRET not in response.content.decode()
    _traceback_line(logged, request_id)


def _boom_view(request):
    raise RuntimeError(SECRET)


# A URL configuration of one failing /v1 route, for the test below (ROOT_URLCONF = this module).
urlpatterns = [path("v1/boom", _boom_view)]
handler500 = "arena.core.errors.server_error"


def test_a_500_on_v1_is_an_openai_style_error_with_the_request_id(client, settings, logged):
    settings.ROOT_URLCONF = __name__
    client.raise_request_exception = False
    response = client.get("/v1/boom")
    assert response.status_code == 500
    request_id = response["X-Request-ID"]
    error = response.json()
    assert error["error"]["type"] == "server_error" and error["request_id"] == request_id
    assert SECRET not in response.content.decode()
    _traceback_line(logged, request_id)


def test_every_response_carries_a_request_id_of_its_own(client):
    first, second = client.get("/login/"), client.get("/login/")
    assert len(first["X-Request-ID"]) == 32 and first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/no/such/page/", "page"), ("/api/v1/no-such-route", "api"), ("/v1/no-such-route", "openai")],
)
def test_a_404_lists_nothing(client, owner, path, shape):
    client.force_login(owner)
    response = client.get(path)
    assert response.status_code == 404
    text = response.content.decode()
    for pattern in ("URLconf", "t/<slug:team>", "api/v1/", "leaderboard", "admin/"):
        assert pattern not in text
    if shape == "api":
        assert response.json() == {"detail": "not found"}
    elif shape == "openai":
        assert response.json()["error"]["type"] == "not_found_error"
    else:
        assert "404 Not found" in text


def test_another_teams_page_is_the_same_plain_404(outsider, team):
    client = Client()
    client.force_login(outsider)
    theirs, missing = client.get(f"/t/{team.slug}/"), client.get("/t/no-such-team/")
    assert theirs.status_code == missing.status_code == 404
    assert theirs.content == missing.content


# --- Bodies over the limit, through the ASGI application (as daphne serves it) ---------------


def asgi(method: str, path: str, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    from arena.asgi import application

    async def call():
        communicator = HttpCommunicator(
            application, method, path, body=body, headers=[(b"host", b"testserver"), *(headers or [])]
        )
        try:
            return await communicator.get_response(timeout=10)
        finally:
            await communicator.wait()

    return async_to_sync(call)()


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/api/v1/suites", "api"),
        ("/v1/chat/completions", "openai"),
        ("/t/red/suites/upload/", "page"),
    ],
)
def test_a_body_declared_over_the_limit_is_a_413_before_the_arena_reads_any_of_it(path, shape):
    # Only the header is sent: the answer comes without the body having been read.
    response = asgi("POST", path, headers=[(b"content-length", b"10000000000"), (b"content-type", b"application/json")])
    assert response["status"] == 413
    if shape == "api":
        assert "larger than this arena accepts" in json.loads(response["body"])["detail"]
    elif shape == "openai":
        assert json.loads(response["body"])["error"]["type"] == "invalid_request_error"
    else:
        assert b"413 Request too large" in response["body"]


@pytest.mark.django_db(transaction=True)
def test_a_chunked_body_is_counted_as_it_comes_and_one_under_the_limit_reaches_the_arena(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    over = asgi("POST", "/v1/chat/completions", body=b"x" * 1001)
    assert over["status"] == 413
    under = asgi("POST", "/v1/chat/completions", body=b"{}")
    assert under["status"] == 401  # reached the view, which asks for a token


# --- Control characters: refused before any view, naming the field ------------------------


@pytest.mark.parametrize("name", ["bell\x07", "esc\x1b[31m", "nul\x00", "c1\x85", "del\x7f"])
def test_control_characters_in_a_name_are_refused_by_form_and_api_alike(owner, team, api, name):
    before = Team.objects.count()
    page = post_form(csrf_client(owner), f"/t/{team.slug}/entries/", {"name": name, "kind": "openai"})
    assert page.status_code == 400 and b"name: must not contain" in page.content
    response = api("post", "/entries", {"name": name, "kind": "openai", "config": {}})
    assert response.status_code == 422
    assert response.json()["detail"]["name"][0].startswith("must not contain")
    team_page = post_form(csrf_client(owner), "/teams/new/", {"name": name})
    assert team_page.status_code == 400
    assert Team.objects.count() == before and not team.entries.exists()


@pytest.mark.parametrize("name", ["zero\u200bwidth", "line\u2028break", "tab\tbed", "rtl\u202eoverride"])
def test_names_that_do_not_print_on_one_line_are_refused_by_form_and_api_alike(owner, team, api, name):
    body = {"name": name, "kind": "openai", "config": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}}
    response = api("post", "/entries", body)
    assert response.status_code == 422
    assert "printable on one line" in response.json()["detail"]["name"][0]
    browser = csrf_client(owner)
    page = post_form(browser, f"/t/{team.slug}/entries/", {**body, "config": json.dumps(body["config"])})
    assert page.status_code == 302
    assert "printable on one line" in browser.get(page["Location"]).content.decode()
    assert not team.entries.exists()


def test_control_characters_in_a_query_string_or_a_path_name_the_place(owner, team, client, token):
    client.force_login(owner)
    query = client.get(f"/t/{team.slug}/compare/", {"a": "x\x00"})
    assert query.status_code == 400 and b"a: must not contain NUL characters" in query.content
    path = client.get("/api/v1/leaderboard/a%1bb", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert path.status_code == 422 and path.json()["detail"] == {
        "path": ["must not contain control characters (U+001B)"]
    }


def test_a_control_character_in_a_chat_message_is_an_openai_style_400_naming_the_field(client, team):
    token = ApiToken.issue(team, "t")[1]
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi\u0000"}]})
    response = client.post(
        "/v1/chat/completions", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "messages: must not contain NUL characters",
        "type": "invalid_request_error",
        "param": "messages",
        "code": None,
    }
