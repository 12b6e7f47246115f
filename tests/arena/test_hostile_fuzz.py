"""Hostile values, beyond what the OpenAPI document describes, sent to every form view, every /v1 route and
every JSON API operation (hypothesis): NUL and other control characters, 10 MB strings, any unicode,
negative and huge numbers, values of the wrong type, the other team's ids. Nothing answers 5xx, and a
request that holds a control character, or a form that cannot be valid, stores nothing.

The routes come from the access sweep's classification, so a new form view or operation is fuzzed too.
Set ARENA_FUZZ_TALLY=<file> to write what each kind of value got, route by route, as JSON lines.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arena.core.text import control_problem
from arena.evaluations.models import Run
from arena.registry.models import Entry, Kind
from arena.schedules.services import save_schedule
from arena.teams.models import ApiToken, Role, Team
from tests.arena import routes
from tests.arena.routes import API_OPERATIONS, PAGE_ROUTES, TeamRoute, client_for, fill, fill_body
from tests.factories import EntryFactory, RunFactory, SuiteFactory
from tests.helpers import row_counts

pytestmark = pytest.mark.django_db


TEN_MB = "x" * (10 * 1024 * 1024)
FUZZ = settings(
    max_examples=2,
    deadline=None,
    derandomize=True,  # the same inputs every run: a failure is reproduced by running the test again
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Form views: every team route that takes a POST write, and the forms of signing in and up.
FORM_ROUTES = sorted(r for r, k in PAGE_ROUTES.items() if isinstance(k, TeamRoute) and k.post) + [
    "teams/new/",
    "signup/",
    "login/",
    "invite/<str:token>/",
]
# Routes where input free of control characters may well be valid, and store: those that act on the
# object their URL names and read no field (run now, delete, materialize again), and a new team,
# whose one field is any printable name.
ACCEPTING = {
    "teams/new/",
    "t/<slug:team>/schedules/<int:schedule_id>/delete/",
    "t/<slug:team>/schedules/<int:schedule_id>/run/",
    "t/<slug:team>/entries/<int:entry_id>/materialize/",
    "t/<slug:team>/schedules/webhook/",
    "invite/<str:token>/",
}
# Every field any form reads; each example sends some of them.
FIELDS = [
    "name", "kind", "path", "config", "api_key", "description", "strategy", "params", "members", "format", "seed",
    "metric", "size", "suite", "entries", "judge", "splits", "cron", "timezone", "refresh", "enabled",
    "webhook_url", "budget_metric", "budget", "candidate", "run", "action", "email", "role", "membership",
    "token", "password", "username", "password1", "password2", "expires", "next",
]  # fmt: skip

CONTROL = st.sampled_from([chr(code) for code in [*range(0, 9), 11, 12, *range(14, 32), *range(127, 160)]])
# Any unicode a client can encode but control characters, which the "nul" and "control" kinds add.
TEXT = st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=30)


def blue_ids() -> dict[str, list]:
    """The other team's ids and names: they must reach nothing of red's and store nothing."""
    blue = Team.objects.get(slug="blue")
    return {
        "ids": [*Entry.objects.filter(team=blue).values_list("pk", flat=True), *Run.objects.filter(team=blue).values_list("pk", flat=True)],
        "names": list(Entry.objects.filter(team=blue).values_list("name", flat=True)),
    }  # fmt: skip


TEXT_KINDS = ["nul", "control", "10mb", "unicode", "number", "json", "other-team"]
JSON_KINDS = [*TEXT_KINDS, "huge-number", "negative-number", "float", "wrong-type", "other-team-id"]


@st.composite
def hostile_text(draw, other: dict, kind: str) -> str:
    """One hostile string of ``kind`` (TEXT_KINDS)."""
    if kind == "nul":
        text = draw(TEXT)
        at = draw(st.integers(0, len(text)))
        return text[:at] + "\x00" + text[at:]
    if kind == "control":
        return draw(TEXT) + draw(CONTROL) + draw(TEXT)
    if kind == "10mb":
        return TEN_MB
    if kind == "unicode":
        return draw(st.sampled_from(["名前", "\u202egnp.exe", "e\u0301", "\U0001f600" * 50, "\u200b", " "])) + draw(
            TEXT
        )
    if kind == "number":
        numbers = [-1, 0, -(2**63), 2**63, 10**30, "1e309", "-1e309", "nan", "inf", "0x10", "\u00b2", "\u0663"]
        return str(draw(st.sampled_from(numbers)))
    if kind == "json":
        return draw(st.sampled_from(["[]", "{}", "null", '{"a": [1, {"b": null}]}', "[" * 1000, '"', "true"]))
    return str(draw(st.sampled_from(other["ids"] + other["names"])))


@st.composite
def hostile_json(draw, other: dict, kind: str) -> object:
    """One hostile JSON value of ``kind`` (JSON_KINDS): a hostile string, a number, a value of the wrong type."""
    if kind in TEXT_KINDS:
        return draw(hostile_text(other, kind))
    if kind == "huge-number":
        return draw(st.sampled_from([2**63, 10**30, 2**64 + 1]))
    if kind == "negative-number":
        return draw(st.sampled_from([-1, -(2**63) - 1, -(10**30)]))
    if kind == "float":
        return draw(st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([1e308, -1e308, 5e-324]))
    if kind == "wrong-type":
        return draw(st.sampled_from([None, True, [], {}, [1, "a", None], {"a": {"b": [None]}}, [[[]]], "x"]))
    return draw(st.sampled_from(other["ids"]))


def holds_control(value) -> bool:
    if isinstance(value, str):
        return control_problem(value) is not None
    if isinstance(value, dict):
        return any(holds_control(k) or holds_control(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_control(v) for v in value)
    return False


@pytest.fixture
def blue(red, outsider):
    """The other team, with an entry, a suite, a run and a schedule of its own."""
    team = Team.objects.get(slug="blue")
    suite = SuiteFactory(team=team, size=4)
    entry = EntryFactory(
        team=team, name="blue-model", kind=Kind.OPENAI, config={"base_url": "http://h/v1", "model": "b"}
    )
    RunFactory(suite=suite)
    save_schedule(team, name="blue-nightly", suite=suite.name, entries=[entry.name])
    return blue_ids()  # fmt: skip


@pytest.fixture(scope="module")
def tally():
    outcomes: Counter = Counter()
    yield outcomes
    if path := os.environ.get("ARENA_FUZZ_TALLY"):
        with open(path, "a") as out:
            for (where, kind, status), n in sorted(outcomes.items()):
                out.write(json.dumps({"where": where, "value": kind, "status": status, "count": n}) + "\n")


# --- Form views ------------------------------------------------------------------------------


@pytest.mark.parametrize("route", FORM_ROUTES)
def test_hostile_form_values_never_answer_5xx_and_invalid_ones_store_nothing(request, red, blue, owner, tally, route):
    client = client_for(owner)
    url = fill(route, red.values)

    @FUZZ
    @given(data=st.data())
    def post(data):
        for kind in TEXT_KINDS:
            names = data.draw(
                st.lists(st.sampled_from(FIELDS), min_size=1, max_size=1 if kind == "10mb" else 4, unique=True)
            )
            many = 1 if kind == "10mb" else 2
            form = {name: data.draw(st.lists(hostile_text(blue, kind), min_size=1, max_size=many)) for name in names}
            before = row_counts()
            response = client.post(url, {**form, "csrfmiddlewaretoken": client.cookies["csrftoken"].value})
            tally[(f"POST /{route}", kind, response.status_code)] += 1
            shown = (route, {k: [v[:80] for v in vs] for k, vs in form.items()})
            assert response.status_code < 500, shown
            if kind in ("nul", "control"):
                assert response.status_code == 400, shown
            if kind in ("nul", "control") or route not in ACCEPTING:
                assert row_counts() == before, shown

    post()


# --- /v1 -------------------------------------------------------------------------------------


CHAT_FIELDS = ["model", "messages", "max_tokens", "temperature", "top_p", "seed", "stop", "logprobs"]


@st.composite
def chat_body(draw, other: dict, kind: str) -> object:
    """A chat request some of whose fields, or whose messages' fields, are hostile values of ``kind``."""
    if draw(st.integers(0, 9)) == 0:
        return draw(hostile_json(other, kind))  # the body itself

    def value(default):
        return default if draw(st.booleans()) else draw(hostile_json(other, kind))

    extra = draw(st.lists(st.sampled_from(CHAT_FIELDS[2:]), max_size=3, unique=True))
    message = {"role": value("user"), "content": value("2+2?")}
    return {"model": value("blue-model"), "messages": value([message]), **{f: value(1) for f in extra}}


@pytest.fixture
def red_token(red) -> str:
    return ApiToken.issue(red.team, "fuzz", role=Role.MEMBER)[1]


@settings(FUZZ, max_examples=4)
@given(data=st.data())
def test_hostile_chat_requests_never_answer_5xx_and_store_nothing(client, red, blue, red_token, tally, data):
    for kind in JSON_KINDS:
        body = data.draw(chat_body(blue, kind))
        before = row_counts()
        response = client.post(
            "/v1/chat/completions",
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {red_token}",
        )
        tally[("POST /v1/chat/completions", kind, response.status_code)] += 1
        assert response.status_code < 500, json.dumps(body)[:300]
        assert set(response.json()) == {"error"}  # no request here names a model of red's that answers
        if holds_control(body):
            assert response.status_code == 400
        assert row_counts() == before


@settings(FUZZ, max_examples=2)
@given(data=st.data())
def test_hostile_model_listings_and_bearer_keys_never_answer_5xx(
    client, red, blue, red_token, tally, clean_redis, data
):
    # clean_redis: the bad keys sent here are counted towards a rate limit; the next test starts at zero.
    for kind in TEXT_KINDS:
        value = data.draw(hostile_text(blue, kind))[:10_000]
        query = client.get("/v1/models", {"q": value}, HTTP_AUTHORIZATION=f"Bearer {red_token}")
        tally[("GET /v1/models?q=", kind, query.status_code)] += 1
        assert query.status_code == (400 if holds_control(value) else 200)
        # Headers are latin-1 on the wire; a client can send nothing else.
        bearer = client.get("/v1/models", HTTP_AUTHORIZATION=f"Bearer {value.encode().decode('latin-1')}")
        tally[("GET /v1/models (bearer key)", kind, bearer.status_code)] += 1
        assert bearer.status_code in (401, 429)  # no hostile value is a token; enough of them are rate-limited


# Every /v1 route the access sweep classifies (bearer-token routes), its URL arguments hostile too.
V1_ROUTES = sorted(r for r, k in PAGE_ROUTES.items() if k == routes.TOKEN)
V1_FIELDS = [*CHAT_FIELDS, "prompt", "n", "stream", "max_completion_tokens", "input"]


@pytest.mark.parametrize("route", V1_ROUTES)
def test_every_v1_route_answers_hostile_values_with_a_4xx_and_stores_nothing(
    client, red, blue, red_token, tally, route
):
    @settings(FUZZ, max_examples=1)
    @given(data=st.data())
    def call(data):
        for kind in JSON_KINDS:
            text_kind = kind if kind in TEXT_KINDS and kind != "10mb" else "unicode"
            args = {a: data.draw(hostile_text(blue, text_kind)) for a in routes.arguments(route)}
            url = fill(route, {a: quote(v, safe="") for a, v in args.items()})
            fields = data.draw(st.lists(st.sampled_from(V1_FIELDS), min_size=1, max_size=4, unique=True))
            body = {f: data.draw(hostile_json(blue, kind)) for f in fields}
            auth = {"HTTP_AUTHORIZATION": f"Bearer {red_token}"}
            before = row_counts()
            for method, response in (
                ("GET", client.get(url, **auth)),
                ("POST", client.post(url, json.dumps(body), content_type="application/json", **auth)),
            ):
                tally[(f"{method} /{route}", kind, response.status_code)] += 1
                assert 400 <= response.status_code < 500 or (method == "GET" and response.status_code == 200), (
                    method,
                    url[:200],
                    json.dumps(body)[:300],
                )
                if holds_control(args) or (method == "POST" and holds_control(body)):
                    assert response.status_code == 400
            assert row_counts() == before

    call()


# --- The JSON API, off its schema ------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), sorted(API_OPERATIONS))
def test_hostile_api_bodies_never_answer_5xx_and_those_with_control_characters_store_nothing(
    client, red, blue, red_token, tally, method, path
):
    url = "/api/v1" + fill(path, red.values)
    valid = fill_body(API_OPERATIONS[(method, path)].body, red.values) or {}

    @settings(FUZZ, max_examples=1)
    @given(data=st.data())
    def call(data):
        for kind in JSON_KINDS:
            body = dict(valid)
            for name in data.draw(st.lists(st.sampled_from([*valid, "extra"]), min_size=1, max_size=3, unique=True)):
                body[name] = data.draw(hostile_json(blue, kind))
            before = row_counts()
            auth = {"HTTP_AUTHORIZATION": f"Bearer {red_token}"}
            if method == "GET":  # a query string: each value as text
                query = {k: v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}
                response = client.get(url, query, **auth)
            else:
                response = getattr(client, method.lower())(
                    url, json.dumps(body), content_type="application/json", **auth
                )
            tally[(f"{method} /api/v1{path}", kind, response.status_code)] += 1
            assert response.status_code < 500, json.dumps(body)[:300]
            if holds_control(body):
                assert response.status_code == 422 and row_counts() == before

    call()
