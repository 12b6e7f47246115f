"""What users and careless scripts send: each gets a clear 4xx, never a 500, and nothing is half-stored.

Complements the cases next to each feature (suite upload errors with file and line, unknown
strategies, paths outside the model roots, pickle weights, the persona sweep's other-team ids).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from arena.benchmarks.models import Suite, SuiteItem
from arena.evaluations.models import Run, RunEntry, State
from arena.evaluations.services import create_run
from arena.registry.models import Entry, Kind
from arena.teams.models import ApiToken, Team
from tests.arena.helpers import ITEMS, MANIFEST
from tests.factories import EntryFactory, SuiteFactory
from tests.helpers import csrf_client, post_form, row_counts, wait_for

pytestmark = pytest.mark.django_db

# --- Hostile YAML and JSON -------------------------------------------------------------------

# Nine levels of nine aliases: 387 million values from under a kilobyte ("billion laughs").
LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]\n" for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
)
DEEP = "[" * 5000 + "]" * 5000


def lm_eval_config(**overrides: str) -> str:
    keys = {
        "task": "t",
        "output_type": "multiple_choice",
        "test_split": "test",
        "doc_to_text": "q",
        "doc_to_target": "0",
        "doc_to_choice": "c",
    }
    return "".join(f"{k}: {v}\n" for k, v in {**keys, **overrides}.items())


LM_DOCS = json.dumps({"q": "2+2?", "c": ["4", "5"]}) + "\n"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"format": "suite", "files": {"manifest": LAUGHS + MANIFEST, "items": ITEMS}}, "aliases expand"),
        (
            {"format": "suite", "files": {"manifest": MANIFEST + "few_shot: &f [*f]\n", "items": ITEMS}},
            "an alias refers to a value that contains it",
        ),
        ({"format": "suite", "files": {"manifest": MANIFEST + f"stop: {DEEP}\n", "items": ITEMS}}, "nested more than"),
        (
            {"format": "lm_eval", "files": {"config": LAUGHS + lm_eval_config(doc_to_choice="*i"), "test": LM_DOCS}},
            "aliases expand",
        ),
        (
            {"format": "lm_eval", "files": {"config": lm_eval_config(test_split="&s [*s]"), "test": LM_DOCS}},
            "an alias refers to a value that contains it",
        ),
        (
            {
                "format": "lm_eval",
                "files": {"config": lm_eval_config(doc_to_text="!!python/name:os.system"), "test": LM_DOCS},
            },
            "invalid YAML",
        ),
        ({"format": "bigbench", "files": {"task": '{"name": "t", "examples": ' + DEEP + "}"}}, "nested too deeply"),
        (
            {"format": "suite", "files": {"manifest": MANIFEST, "items": '{"id": "a", "input": ' + DEEP + "}\n"}},
            "nested too deeply",
        ),
    ],
    ids=[
        "billion-laughs-manifest",
        "recursive-alias-manifest",
        "deep-yaml-manifest",
        "billion-laughs-lm-eval",
        "recursive-alias-lm-eval",
        "python-name-tag-lm-eval",
        "deep-json-bigbench",
        "deep-json-items",
    ],
)
def test_hostile_suite_files_are_a_quick_422_that_stores_nothing(api, body, message):
    started = time.monotonic()
    response = api("post", "/suites", body)
    assert response.status_code == 422, response.content[:300]
    assert message in response.json()["detail"]["message"]
    assert time.monotonic() - started < 10
    assert not Suite.objects.exists() and not SuiteItem.objects.exists()


def test_hostile_yaml_on_the_upload_page_is_reported_and_stores_nothing(teammate, team):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client = csrf_client(teammate)
    client.get("/login/")
    response = client.post(
        f"/t/{team.slug}/suites/upload/",
        {
            "format": "suite",
            "suite-manifest": SimpleUploadedFile("suite.yaml", (LAUGHS + MANIFEST).encode()),
            "suite-items": SimpleUploadedFile("items.jsonl", ITEMS.encode()),
            "csrfmiddlewaretoken": client.cookies["csrftoken"].value,
        },
    )
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "Nothing was imported" in page and "aliases expand" in page
    assert not Suite.objects.exists()


def test_deeply_nested_json_in_a_page_field_or_a_chat_request_is_a_clear_error(owner, team, client):
    page = csrf_client(owner)
    response = post_form(page, f"/t/{team.slug}/entries/", {"name": "x", "kind": "openai", "config": DEEP})
    assert response.status_code == 302
    assert b"nested too deeply" in page.get(response["Location"]).content
    token = ApiToken.issue(team, "t")[1]
    body = '{"model": "x", "messages": ' + DEEP + "}"
    chat = client.post(
        "/v1/chat/completions", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert chat.status_code == 400 and "nested too deeply" in chat.json()["error"]["message"]
    api_body = '{"name": "x", "kind": "openai", "config": ' + DEEP + "}"
    assert (
        client.post("/api/v1/entries", api_body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    ).status_code == 400
    assert not Entry.objects.exists()


# --- Oversized bodies ------------------------------------------------------------------------


def test_bodies_over_the_limit_are_refused_with_413_in_each_parts_error_shape(owner, team, client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    token = ApiToken.issue(team, "t")[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    big = json.dumps({"format": "suite", "files": {"manifest": MANIFEST, "items": ITEMS + " " * 20_000}})
    api = client.post("/api/v1/suites", big, content_type="application/json", **auth)
    assert api.status_code == 413 and "10,000 bytes" in api.json()["detail"]
    chat = json.dumps({"model": "x", "messages": [{"role": "user", "content": "x" * 20_000}]})
    openai = client.post("/v1/chat/completions", chat, content_type="application/json", **auth)
    assert openai.status_code == 413 and openai.json()["error"]["type"] == "invalid_request_error"
    response = post_form(csrf_client(owner), f"/t/{team.slug}/entries/", {"name": "x", "config": "x" * 20_000})
    assert response.status_code == 413 and b"larger than this arena accepts" in response.content
    assert not Suite.objects.exists() and not Entry.objects.exists()


# --- Values out of range, and values the database cannot hold --------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/suites/builtin", {"name": "arithmetic", "size": 10**12}),
        ("post", "/suites/builtin", {"name": "arithmetic", "seed": -1}),
        ("post", "/suites/builtin", {"name": "arithmetic", "size": 1}),
        ("post", "/blends", {"name": "v", "strategy": "cascade", "params": {"max_cost": -1}, "members": ["a", "b"]}),
        ("post", "/blends", {"name": "v", "strategy": "majority_vote", "params": [1], "members": ["a", "b"]}),
        ("post", "/blends", {"name": "v", "strategy": "majority_vote", "members": ["a"] * 17}),
        ("post", "/blends", {"name": "v", "strategy": "no_such_strategy", "members": ["a", "b"]}),
        (
            "post",
            "/entries",
            {"name": "x", "kind": "openai", "config": {"base_url": "http://h/v1", "model": "m", "timeout_s": 1e309}},
        ),
        ("post", "/entries", {"name": "x", "kind": "openai", "config": {"base_url": "ftp://h/v1", "model": "m"}}),
        (
            "post",
            "/entries",
            {"name": "x", "kind": "openai", "config": {"base_url": "http://h/v1", "model": "m", "max_retries": 99}},
        ),
        (
            "post",
            "/entries",
            {"name": "n\u0000", "kind": "openai", "config": {"base_url": "http://h/v1", "model": "m"}},
        ),
        (
            "post",
            "/entries",
            {"name": "x" * 101, "kind": "openai", "config": {"base_url": "http://h/v1", "model": "m"}},
        ),
        ("post", "/runs", {"suite": "arithmetic", "entries": ["a"] * 101}),
        ("post", "/runs", {"suite": "arithmetic", "entries": ["a", "b"], "splits": ["train"]}),
        ("get", "/leaderboard/a%00b", None),
    ],
    ids=[
        "suite-size-huge",
        "negative-seed",
        "suite-size-one",
        "param-out-of-range",
        "params-not-an-object",
        "too-many-members",
        "unknown-strategy",
        "infinite-timeout",
        "not-http",
        "retries-out-of-range",
        "nul-in-name",
        "name-too-long",
        "too-many-entries",
        "unknown-split",
        "nul-in-path",
    ],
)
def test_values_out_of_range_are_a_422_that_stores_nothing(api, team, method, path, body):
    for name in ("a", "b"):
        EntryFactory(team=team, name=name, kind=Kind.OPENAI, config={"base_url": "http://h/v1", "model": name})
    SuiteFactory(team=team, size=4)
    before = row_counts()
    response = api(method, path, body)
    assert response.status_code == 422, response.content[:300]
    assert response.json()["detail"]
    assert row_counts() == before


def test_a_value_the_database_cannot_hold_is_a_400_on_a_page_and_nothing_is_stored(owner, team):
    response = post_form(csrf_client(owner), "/teams/new/", {"name": "nul\x00team"})
    assert response.status_code == 400 and b"name: must not contain NUL characters" in response.content
    assert Team.objects.count() == 2  # red and blue


@pytest.mark.parametrize("number", ["\u00b2", "1e3", "-4", "4.0"])
def test_numbers_that_are_not_whole_are_refused_by_every_field_that_reads_one(owner, team, token, client, number):
    # "\u00b2" (superscript two) passed str.isdigit() and then failed int(): a 500 in each of these.
    page = csrf_client(owner)
    response = post_form(page, f"/t/{team.slug}/suites/builtin/", {"name": "arithmetic", "size": number})
    assert response.status_code == 302
    assert "size must be a whole number" in page.get(response["Location"]).content.decode()
    for url, data in (
        (f"/t/{team.slug}/runs/", {"suite": number, "entries": [number], "judge": number}),
        (f"/t/{team.slug}/suites/upload/", {"format": "csv", "seed": number}),
    ):
        assert post_form(page, url, data).status_code in (302, 400), url
    assert page.get(f"/t/{team.slug}/compare/", {"a": number, "b": "1"}).status_code == 400
    run = client.post(
        "/api/v1/runs",
        json.dumps({"suite": number, "entries": ["x"]}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert run.status_code in (404, 422)
    assert not Suite.objects.exists() and not Run.objects.exists()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "post",
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 10**9},
        ),
        (
            "post",
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": -1},
        ),
        ("post", "/v1/chat/completions", {"model": "m", "messages": [{"role": "robot", "content": "x"}]}),
        ("post", "/v1/chat/completions", {"model": "m", "messages": "hello"}),
        ("post", "/v1/chat/completions", [1, 2]),
    ],
    ids=["max-tokens", "temperature", "role", "messages-not-a-list", "body-not-an-object"],
)
def test_chat_requests_out_of_range_get_openai_style_400s(client, team, method, path, body):
    token = ApiToken.issue(team, "t")[1]
    response = client.post(
        path, json.dumps(body), content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", ["/api/v1/runs/99999999999999999999", "/t/red/runs/99999999999999999999/"])
def test_ids_beyond_any_row_are_404(owner, team, token, client, path):
    client.force_login(owner)
    assert client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 404


# --- Model files of the wrong format ---------------------------------------------------------


@pytest.fixture
def model_root(settings, tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    settings.ARENA_MODEL_ROOTS = [root]
    return root


def _text_named_gguf(root):
    (root / "m.gguf").write_text("not a gguf file")


def _pickle_named_gguf(root):
    (root / "m.gguf").write_bytes(b"\x80\x04\x95pickle")


def _directory_named_gguf(root):
    (root / "m.gguf").mkdir()


def _gguf_without_suffix(root):
    (root / "m.bin").write_bytes(b"GGUF")


def _file_as_model_directory(root):
    (root / "m").write_text("{}")


def _directory_without_config(root):
    (root / "m").mkdir()
    (root / "m" / "model.safetensors").write_bytes(b"x")


def _directory_of_pickle_weights(root):
    (root / "m").mkdir()
    (root / "m" / "config.json").write_text("{}")
    (root / "m" / "model.pt").write_bytes(b"\x80")


@pytest.mark.parametrize(
    ("kind", "make", "message"),
    [
        ("gguf", _text_named_gguf, "not a GGUF file"),
        ("gguf", _pickle_named_gguf, "not a GGUF file"),
        ("gguf", _directory_named_gguf, "is not a file"),
        ("gguf", _gguf_without_suffix, "path must name a .gguf file"),
        ("hf", _file_as_model_directory, "is not a model directory"),
        ("hf", _directory_without_config, "config.json"),
        ("hf", _directory_of_pickle_weights, "pickle"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_model_files_of_the_wrong_format_are_refused_at_registration(api, model_root, kind, make, message):
    make(model_root)
    path = next(model_root.iterdir())
    response = api("post", "/entries", {"name": "m", "kind": kind, "config": {"path": str(path)}})
    assert response.status_code == 422, response.content
    assert message in json.dumps(response.json()["detail"])
    assert not Entry.objects.exists()


# --- Endpoints that hang or answer garbage ---------------------------------------------------


class Misbehaving:
    """One HTTP server, a misbehaviour per path: /hang sleeps, /html, /no-choices, /list and /teapot answer junk."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server hook
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                mode = self.path.strip("/").split("/")[0]
                if mode == "hang":
                    time.sleep(5)
                status, body, kind = {
                    "hang": (200, b"{}", "application/json"),
                    "html": (200, b"<html>502 Bad Gateway</html>", "text/html"),
                    "no-choices": (200, b'{"id": "x", "object": "chat.completion"}', "application/json"),
                    "list": (200, b"[1, 2, 3]", "application/json"),
                    "teapot": (418, b"I'm a teapot", "text/plain"),
                }[mode]
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up waiting

            def log_message(self, *args):
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, mode: str) -> str:
        return f"{self.base}/{mode}/v1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def misbehaving():
    server = Misbehaving()
    yield server
    server.close()


ENDPOINT_FAILURES = {
    "hang": "did not answer within 1s",
    "html": "not JSON",
    "no-choices": "without choices[0].message.content",
    "list": "unexpected JSON",
    "teapot": "HTTP 418",
}


@pytest.mark.parametrize("mode", sorted(ENDPOINT_FAILURES))
def test_an_endpoint_that_hangs_or_answers_garbage_is_a_422_naming_the_problem_at_registration_and_serving(
    client, api, team, misbehaving, mode
):
    config = {"base_url": misbehaving.url(mode), "model": "m", "timeout_s": 1, "max_retries": 0}
    refused = api("post", "/entries", {"name": "remote", "kind": "openai", "config": config})
    assert refused.status_code == 422 and ENDPOINT_FAILURES[mode] in refused.json()["detail"]["config"][0]
    assert not Entry.objects.exists()
    # One that answered when it was registered and misbehaves since.
    EntryFactory(team=team, name="remote", kind=Kind.OPENAI, config=config)
    token = ApiToken.issue(team, "t")[1]
    body = json.dumps({"model": "remote", "messages": [{"role": "user", "content": "2+2?"}]})
    started = time.monotonic()
    response = client.post(
        "/v1/chat/completions", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 422
    assert ENDPOINT_FAILURES[mode] in response.json()["error"]["message"]
    assert time.monotonic() - started < 10


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_in_a_run_endpoints_that_hang_or_answer_garbage_fail_their_entry_after_bounded_attempts(
    worker, team, owner, misbehaving
):
    # Endpoints that answered when they were registered, and misbehave since.
    entries = [
        EntryFactory(
            team=team,
            name=mode,
            kind=Kind.OPENAI,
            config={"base_url": misbehaving.url(mode), "model": "m", "timeout_s": 1, "max_retries": 0},
        )
        for mode in ("hang", "html", "no-choices")
    ]
    suite = SuiteFactory(team=team, size=4)
    run = create_run(team, suite, entries, user=owner)
    wait_for(
        lambda: Run.objects.filter(pk=run.pk, state__in=[State.DONE, State.FAILED]).exists(),
        timeout=240,
        what="the run to give up on its broken endpoints",
    )
    run.refresh_from_db()
    assert run.state == State.FAILED
    errors = dict(RunEntry.objects.filter(run=run).values_list("entry__name", "error"))
    # The hanging endpoint is a transient failure, retried with backoff a bounded number of times.
    assert "gave up after 3 attempts" in errors["hang"] and "did not answer within 1s" in errors["hang"]
    assert "not JSON" in errors["html"]
    assert "without choices[0].message.content" in errors["no-choices"]


# --- Other teams' ids in form fields ---------------------------------------------------------


def test_a_run_cannot_be_started_on_another_teams_suite_entries_or_judge(teammate, team):
    blue = Team.objects.get(slug="blue")
    blue_suite = SuiteFactory(team=blue, size=4)
    blue_entry = EntryFactory(
        team=blue, name="blue-model", kind=Kind.OPENAI, config={"base_url": "http://h/v1", "model": "b"}
    )
    red_suite = SuiteFactory(team=team, size=4)
    red_entry = EntryFactory(
        team=team, name="red-model", kind=Kind.OPENAI, config={"base_url": "http://h/v1", "model": "r"}
    )
    client = csrf_client(teammate)
    url = f"/t/{team.slug}/runs/"
    for data in (
        {"suite": blue_suite.pk, "entries": [red_entry.pk]},
        {"suite": red_suite.pk, "entries": [red_entry.pk, blue_entry.pk]},
        {"suite": red_suite.pk, "entries": [red_entry.pk], "judge": blue_entry.pk},
        {"suite": "1; DROP TABLE", "entries": ["x"]},
    ):
        response = post_form(client, url, data)
        assert response.status_code == 302 and response["Location"] == f"/t/{team.slug}/"
    assert not Run.objects.exists()


def test_an_owner_cannot_revoke_another_teams_token(owner, team):
    blue_token, _ = ApiToken.issue(Team.objects.get(slug="blue"), "blue-ci")
    response = post_form(csrf_client(owner), f"/t/{team.slug}/admin/", {"action": "revoke", "token": blue_token.pk})
    assert response.status_code == 404
    assert ApiToken.objects.filter(pk=blue_token.pk).exists()
    response = post_form(csrf_client(owner), f"/t/{team.slug}/admin/", {"action": "revoke", "token": "not-a-number"})
    assert response.status_code == 200 and ApiToken.objects.filter(pk=blue_token.pk).exists()
