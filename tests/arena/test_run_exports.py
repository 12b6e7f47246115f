"""A run as files (its entries' results, its items' predictions and scores) from its pages and the API,
the API's list of runs, and the API docs covering /v1 too."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from arena.evaluations.models import EntryState, Run, Score, State
from arena.teams.models import ApiToken, Role, Team
from tests.factories import BlendFactory, EntryFactory, RunEntryFactory, RunFactory, SuiteFactory
from tests.helpers import csrf_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(team):
    """A finished run of two models and their vote on four test items; a failed entry that answered nothing."""
    suite = SuiteFactory(team=team, size=8)
    a = EntryFactory(team=team, name="alpha")
    b = EntryFactory(team=team, name="beta, the second")  # a comma: the CSV must quote it
    broken = EntryFactory(team=team, name="broken")
    vote = BlendFactory(team=team, name="vote", members=[a, b])
    run = RunFactory(suite=suite, state=State.PARTIAL)
    RunEntryFactory(run=run, entry=a, score=0.25, ci_low=0.0, ci_high=0.75, n=4, tokens=40, compute_s=1.5)
    RunEntryFactory(run=run, entry=b, score=0.75, ci_low=0.25, ci_high=1.0, n=4, tokens=44, compute_s=2.0)
    RunEntryFactory(run=run, entry=vote, score=0.75, ci_low=0.25, ci_high=1.0, n=4, lift=0.0, member_calls=8)
    RunEntryFactory(run=run, entry=broken, state=EntryState.FAILED, error="its weights are gone")
    for n, item in enumerate(suite.items.filter(split="test").order_by("position")):
        reference = item.data["reference"]
        Score.objects.create(run=run, entry=a, item=item, prediction="0" if n else reference, value=float(n == 0))
        Score.objects.create(run=run, entry=b, item=item, prediction=reference if n else "0", value=float(n != 0))
        Score.objects.create(run=run, entry=vote, item=item, prediction=reference if n else "0", value=float(n != 0))
    return run


def api_get(client, path: str, token: str):
    return client.get(f"/api/v1{path}", HTTP_AUTHORIZATION=f"Bearer {token}")


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def csv_rows(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(body(response).decode())))


def test_the_runs_csv_has_each_entrys_score_interval_and_costs_from_the_page_and_the_api(client, owner, token, run):
    page = csrf_client(owner).get(f"/t/red/runs/{run.pk}/?format=csv")
    api = api_get(client, f"/runs/{run.pk}?format=csv", token)
    for response in (page, api):
        assert response.status_code == 200
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        assert response["Content-Disposition"] == f'attachment; filename="red-run-{run.pk}.csv"'
    content = body(page)
    assert content == body(api)
    rows = {r["entry"]: r for r in csv.DictReader(io.StringIO(content.decode()))}
    assert set(rows) == {"alpha", "beta, the second", "broken", "vote"}
    assert (rows["beta, the second"]["score"], rows["beta, the second"]["ci_low"]) == ("0.75", "0.25")
    assert (rows["alpha"]["tokens"], rows["alpha"]["compute_s"]) == ("40", "1.5")
    assert rows["vote"]["members"] == "alpha;beta, the second" and rows["vote"]["member_calls"] == "8"
    assert rows["broken"]["state"] == EntryState.FAILED and rows["broken"]["error"] == "its weights are gone"
    assert rows["broken"]["score"] == ""


def test_the_items_come_with_each_entrys_prediction_and_score_as_json_and_csv(client, owner, token, run):
    items = list(run.suite.items.filter(split="test").order_by("position"))
    page = csrf_client(owner)
    for response in (
        page.get(f"/t/red/runs/{run.pk}/items/?format=json"),
        api_get(client, f"/runs/{run.pk}/items", token),
    ):
        assert response.status_code == 200 and response["Content-Type"] == "application/json"
        assert response["Content-Disposition"] == f'attachment; filename="red-run-{run.pk}-items.json"'
        records = json.loads(body(response))
        assert [r["item"] for r in records] == [i.key for i in items]
        first = {s["entry"]: (s["prediction"], s["score"]) for s in records[0]["scores"]}
        assert first == {
            "alpha": (items[0].data["reference"], 1.0),
            "beta, the second": ("0", 0.0),
            "vote": ("0", 0.0),
            "broken": (None, None),
        }
        assert records[1]["data"]["reference"] == items[1].data["reference"]

    for response in (
        page.get(f"/t/red/runs/{run.pk}/items/?format=csv"),
        api_get(client, f"/runs/{run.pk}/items?format=csv", token),
    ):
        assert response.status_code == 200 and response["Content-Type"] == "text/csv; charset=utf-8"
        assert response["Content-Disposition"] == f'attachment; filename="red-run-{run.pk}-items.csv"'
        rows = csv_rows(response)
        assert len(rows) == len(items) * 4  # one row per item and entry
        second = {r["entry"]: (r["prediction"], r["score"]) for r in rows if r["item"] == items[1].key}
        assert second == {
            "alpha": ("0", "0.0"),
            "beta, the second": (items[1].data["reference"], "1.0"),
            "vote": (items[1].data["reference"], "1.0"),
            "broken": ("", ""),
        }


def test_the_run_page_links_its_downloads(owner, run):
    html = csrf_client(owner).get(f"/t/red/runs/{run.pk}/").content.decode()
    for href in ("?format=csv", "?format=json", "items/?format=csv", "items/?format=json"):
        assert f'href="/t/red/runs/{run.pk}/{href}"' in html, href


def test_outsiders_get_404_on_every_export_of_a_run(client, outsider, run):
    blue = ApiToken.issue(Team.objects.get(slug="blue"), "blue", role=Role.OWNER)[1]
    for path in (f"/runs/{run.pk}?format=csv", f"/runs/{run.pk}/items", f"/runs/{run.pk}/items?format=csv"):
        assert api_get(client, path, blue).status_code == 404, path
    for slug in ("red", "blue"):
        for url in (f"/t/{slug}/runs/{run.pk}/?format=csv", f"/t/{slug}/runs/{run.pk}/items/?format=json"):
            assert csrf_client(outsider).get(url).status_code == 404, url


def test_an_unknown_export_format_is_a_4xx(client, owner, token, run):
    page = csrf_client(owner)
    for url in (f"/t/red/runs/{run.pk}/?format=xlsx", f"/t/red/runs/{run.pk}/items/?format=xlsx"):
        response = page.get(url)
        assert response.status_code == 400 and "unknown format 'xlsx'" in response.json()["error"]
    for path in (f"/runs/{run.pk}?format=xlsx", f"/runs/{run.pk}/items?format=xlsx"):
        assert api_get(client, path, token).status_code == 422


# --- The list of runs ------------------------------------------------------------------------


@pytest.fixture
def runs(team):
    """Five runs of the red team on two suites, a day apart, newest last; and one of the blue team's."""
    arithmetic, logic = SuiteFactory(team=team, size=4), SuiteFactory(team=team, builtin="logic", size=4)
    a, b = EntryFactory(team=team, name="alpha"), EntryFactory(team=team, name="beta")
    now = timezone.now()
    made = []
    for age, (suite, state, entries) in enumerate(
        reversed(
            [
                (arithmetic, State.DONE, [a]),
                (arithmetic, State.FAILED, [a, b]),
                (logic, State.DONE, [b]),
                (arithmetic, State.PARTIAL, [b]),
                (logic, State.RUNNING, [a]),
            ]
        )
    ):
        run = RunFactory(suite=suite, state=state)
        for entry in entries:
            RunEntryFactory(run=run, entry=entry)
        Run.objects.filter(pk=run.pk).update(created_at=now - timedelta(days=age))
        made.append(run.pk)
    RunFactory(suite=SuiteFactory(team=Team.objects.get(slug="blue"), size=4))
    return list(reversed(made))  # oldest first


def list_runs(client, token, query: str = ""):
    response = api_get(client, f"/runs{query}", token)
    assert response.status_code == 200, response.content
    return response.json()


def test_the_list_of_runs_is_the_teams_own_newest_first_a_page_at_a_time(client, token, runs):
    everything = list_runs(client, token)
    assert everything["count"] == 5
    assert [r["id"] for r in everything["items"]] == runs[::-1]
    newest = everything["items"][0]
    assert (newest["suite"], newest["state"], newest["entries"]) == ("logic", "running", ["alpha"])

    page = list_runs(client, token, "?limit=2&offset=2")
    assert page["count"] == 5 and [r["id"] for r in page["items"]] == runs[::-1][2:4]

    # The queries do not grow with the runs listed (their suites and entries are read in one go each).
    counts = []
    for limit in (1, 5):
        with CaptureQueriesContext(connection) as queries:
            list_runs(client, token, f"?limit={limit}")
        counts.append(len(queries))
    assert counts[0] == counts[1]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?suite=arithmetic", [3, 1, 0]),
        ("?state=done", [2, 0]),
        ("?entry=beta", [3, 2, 1]),
        ("?suite=arithmetic&entry=alpha", [1, 0]),
        ("?since={two_days_ago}", [4, 3]),
    ],
)
def test_the_list_of_runs_filters_by_suite_state_entry_and_time(client, token, runs, query, expected):
    two_days_ago = (timezone.now() - timedelta(days=1, hours=12)).isoformat()
    found = list_runs(client, token, query.format(two_days_ago=two_days_ago.replace("+", "%2B")))
    assert [r["id"] for r in found["items"]] == [runs[i] for i in expected]
    assert found["count"] == len(expected)


@pytest.mark.parametrize(
    "query",
    ["?state=finished", "?since=yesterday", "?limit=0", "?offset=-1", "?suite=no-such-suite", "?entry=no-such-entry"],
)
def test_a_bad_filter_on_the_list_of_runs_is_a_422(client, token, runs, query):
    response = api_get(client, f"/runs{query}", token)
    assert response.status_code == 422, response.content
    assert response.json()["detail"]


def test_another_teams_suite_is_unknown_to_the_list_of_runs(client, runs):
    blue = ApiToken.issue(Team.objects.get(slug="blue"), "blue")[1]
    assert api_get(client, "/runs?suite=logic", blue).status_code == 422
    assert [r["suite"] for r in list_runs(client, blue)["items"]] == ["arithmetic"]


# --- The API docs ----------------------------------------------------------------------------


def test_the_api_docs_cover_v1_beside_api_v1(client):
    document = client.get("/api/v1/openapi.json").json()
    paths = document["paths"]
    assert {"/v1/models", "/v1/models/{model_id}", "/v1/chat/completions", "/v1/completions"} <= set(paths)
    assert {"/api/v1/runs", "/api/v1/runs/{run_id}/items"} <= set(paths)
    chat = paths["/v1/chat/completions"]["post"]
    assert chat["security"] == [{"TokenAuth": []}]
    body_schema = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert {"model", "messages", "stream"} <= set(document["components"]["schemas"][body_schema]["properties"])
    assert "text/csv" in paths["/api/v1/runs/{run_id}/items"]["get"]["responses"]["200"]["content"]
    assert client.get("/api/v1/docs").status_code == 200


def test_the_items_stream_under_asgi_as_they_do_under_wsgi(owner, run):
    """Under ASGI (daphne) the file is an async stream, read chunk by chunk in the request's thread."""
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    client = AsyncClient()
    client.force_login(owner)

    async def download(url: str) -> tuple[object, bytes]:
        response = await client.get(url)
        return response, b"".join([chunk async for chunk in response.streaming_content])

    response, content = async_to_sync(download)(f"/t/red/runs/{run.pk}/items/?format=csv")
    assert response.status_code == 200 and response.is_async
    wsgi = body(csrf_client(owner).get(f"/t/red/runs/{run.pk}/items/?format=csv"))
    assert content == wsgi and content.count(b"\r\n") == 1 + 4 * 4
