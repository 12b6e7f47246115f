"""Leaderboard filters, sorting and exports, the all-suites page, charts, the compare page, entry history."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from urllib.parse import urlencode

import plotly.graph_objects as go
import pytest

from arena.evaluations import queries as run_queries
from arena.evaluations.events import changed
from arena.evaluations.models import EntryState, Run, RunEntry, Score
from arena.leaderboard import charts
from arena.registry.models import Kind
from arena.teams.models import ApiToken, Role, Team
from tests.factories import BlendFactory, EntryFactory, MembershipFactory, RunEntryFactory, RunFactory, SuiteFactory
from tests.helpers import csrf_client

pytestmark = pytest.mark.django_db


def make_run(team, suite, results: dict, *, split: str = "test", cost: dict | None = None) -> Run:
    """A finished run: ``results`` maps an entry to its per-item (prediction, value) on the suite's ``split``."""
    run = RunFactory(team=team, suite=suite, splits=[split], provenance={"git_revision": "abc1234"})
    items = list(suite.items.filter(split=split).order_by("position"))
    for entry, answers in results.items():
        values = [v for _, v in answers]
        mean = sum(values) / len(values)
        costs = (cost or {}).get(entry.name, {})
        RunEntryFactory(
            run=run,
            entry=entry,
            total_items=len(items),
            done_items=len(items),
            score=mean,
            ci_low=max(0.0, mean - 0.2),
            ci_high=min(1.0, mean + 0.2),
            n=len(items),
            member_calls=costs.get("calls", len(items)),
            tokens=costs.get("tokens", 10 * len(items)),
            compute_s=costs.get("compute_s", 1.0 * len(items)),
            latency_p50=costs.get("latency", 0.5),
            latency_p95=costs.get("latency", 0.5) * 2,
            fingerprint=f"fp-{entry.name}",
        )
        for item, (prediction, value) in zip(items, answers, strict=True):
            Score.objects.create(run=run, entry=entry, item=item, prediction=prediction, value=value)
    return run


@pytest.fixture
def suite(team):
    return SuiteFactory(team=team, size=8)  # 4 dev + 4 test items


@pytest.fixture
def board(team, suite):
    """Three singles and a vote on arithmetic, with costs that put two of them on the Pareto frontier."""
    a, b, c = (
        EntryFactory(team=team, name="a"),
        EntryFactory(team=team, name="b", kind=Kind.HF),
        EntryFactory(team=team, name="c"),
    )
    vote = BlendFactory(team=team, name="vote", members=[a, b, c])
    run = make_run(
        team,
        suite,
        {
            a: [("1", 1.0), ("2", 1.0), ("3", 0.0), ("4", 0.0)],
            b: [("1", 1.0), ("x", 0.0), ("3", 1.0), ("y", 0.0)],
            c: [("z", 0.0), ("x", 0.0), ("w", 0.0), ("4", 1.0)],
            vote: [("1", 1.0), ("x", 0.0), ("3", 1.0), ("4", 1.0)],
        },
        cost={
            "a": {"compute_s": 4.0, "latency": 0.4},
            "b": {"compute_s": 8.0, "latency": 0.8},
            "c": {"compute_s": 2.0, "latency": 0.2},
            "vote": {"compute_s": 14.0, "calls": 12, "latency": 0.8},
        },
    )
    RunEntry.objects.filter(run=run, entry=vote).update(lift=0.25, lift_low=-0.25, lift_high=0.75, best_member=a)
    return run, {"a": a, "b": b, "c": c, "vote": vote}


def board_url(team, suite, query: str = "") -> str:
    return f"/t/{team.slug}/leaderboard/{suite.name}/" + (f"?{query}" if query else "")


# --- Static files ----------------------------------------------------------------------------


def test_plotly_js_is_served_from_static_and_no_page_loads_a_cdn(owner, team, board, suite):
    client = csrf_client(owner)
    js = client.get("/static/vendor/plotly.min.js")
    assert js.status_code == 200
    assert b"plotly.js" in b"".join(js.streaming_content)[:2000]
    page = client.get(board_url(team, suite)).content.decode()
    assert "/static/vendor/plotly.min.js" in page and "/static/arena/charts.js" in page
    # charts.js fetches plotly after the page has loaded: no <script> tag of the page holds it back.
    assert 'data-plotly="/static/vendor/plotly.min.js"' in page and 'src="/static/vendor/plotly.min.js"' not in page
    assert "cdn." not in page and '<script src="http' not in page


# --- Filters, sorting, exports -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("", {"a", "b", "c", "vote"}), ("single", {"a", "b", "c"}), ("blend", {"vote"}), ("hf", {"b"})],
)
def test_the_kind_filter_keeps_singles_blends_or_one_kind(owner, team, board, suite, kind, expected):
    rows = csrf_client(owner).get(board_url(team, suite, f"kind={kind}&format=json")).json()["rows"]
    assert {r["entry"] for r in rows} == expected


def test_sorting_orders_rows_and_keeps_empty_values_last(owner, team, board, suite):
    client = csrf_client(owner)
    cheapest = [r["entry"] for r in client.get(board_url(team, suite, "sort=compute&format=json")).json()["rows"]]
    assert cheapest == ["c", "a", "b", "vote"]
    dearest = [r["entry"] for r in client.get(board_url(team, suite, "sort=-compute&format=json")).json()["rows"]]
    assert dearest == ["vote", "b", "a", "c"]
    lift = [r["entry"] for r in client.get(board_url(team, suite, "sort=-lift&format=json")).json()["rows"]]
    assert lift == ["vote", "a", "b", "c"]  # singles have no lift: last, by name
    page = client.get(board_url(team, suite, "sort=compute")).content.decode()
    assert page.index('data-entry="c"') < page.index('data-entry="a"') < page.index('data-entry="vote"')
    assert "sort=-compute" in page  # the active column's header flips the direction


def test_rows_show_members_as_chips_a_short_evaluated_time_and_no_rank_before_a_score(owner, team, board, suite):
    run, _ = board
    waiting = EntryFactory(team=team, name="waiting")
    RunEntryFactory(run=run, entry=waiting, state=EntryState.RUNNING, total_items=4, done_items=1)
    RunEntry.objects.filter(run=run, entry__name="a").update(finished_at=datetime(2026, 11, 23, 2, 21, 7, tzinfo=UTC))
    page = csrf_client(owner).get(board_url(team, suite)).content.decode()
    assert '<span class="chip">a</span> <span class="chip">b</span> <span class="chip">c</span>' in page
    assert 'title="2026-11-23 02:21:07 UTC">23 Nov 02:21</time>' in page
    row = page[page.index('data-entry="waiting"') :]
    assert row.split("<td>", 1)[1].startswith("–</td>")
    assert '<div class="table-wrap"><table id="board"' in page


def test_names_are_escaped_in_the_rows_the_server_renders(owner, team, board, suite):
    run, _ = board
    hostile = EntryFactory(team=team, name='<img src=x onerror="alert(1)">')
    RunEntryFactory(run=run, entry=hostile, state=EntryState.RUNNING, total_items=4, done_items=1)
    page = csrf_client(owner).get(board_url(team, suite)).content.decode()
    assert "<img src=x" not in page
    assert 'data-entry="&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"' in page
    assert '<span class="state running">running 1 of 4 items</span>' in page


def test_the_board_and_the_run_page_show_how_many_items_each_result_scored(owner, team, board, suite):
    run, _ = board
    RunEntry.objects.filter(run=run, entry__name="c").update(n=3)
    waiting = EntryFactory(team=team, name="waiting")
    RunEntryFactory(run=run, entry=waiting, state=EntryState.RUNNING, total_items=4, done_items=1)
    client = csrf_client(owner)
    page = client.get(board_url(team, suite, "sort=-n"))
    body = page.content.decode()
    assert ">n</a>" in body and "n is the number of items scored" in body
    cells = {
        r["entry"]: body.split(f'data-entry="{r["entry"]}"')[1].split('class="num n">')[1].split("<")[0]
        for r in page.context["board"]["rows"]
    }
    assert cells == {"a": "4", "b": "4", "vote": "4", "c": "3", "waiting": ""}
    assert [r["entry"] for r in page.context["board"]["rows"]][-2:] == ["c", "waiting"]  # most items first
    assert (
        csv.DictReader(io.StringIO(client.get(board_url(team, suite, "format=csv")).content.decode())).fieldnames[5]
        == "n"
    )
    # The live push carries the same rows as the page, and the run page's rows count items with their unit.
    live = client.get(board_url(team, suite, "sort=-n&format=live")).json()
    assert live["rows"] == str(page.context["rows_html"])
    run_page = client.get(f"/t/{team.slug}/runs/{run.pk}/").content.decode()
    assert '<td class="num n">3</td>' in run_page and "4 of 4 items" in run_page and "1 of 4 items" in run_page


def test_an_empty_board_says_what_to_do_next_and_links_each_step(owner, team, suite, board):
    client = csrf_client(owner)
    other = SuiteFactory(team=team, builtin="date_reasoning", size=4)
    body = client.get(board_url(team, other)).content.decode()
    assert "Nothing evaluated on this suite yet" in body
    assert f'<a href="/t/{team.slug}/#register-model">register a model</a>' in body
    assert f'<a href="/t/{team.slug}/suites/">upload or pick a suite</a>' in body
    assert f'<a href="/t/{team.slug}/#start-run">start a run</a>' in body
    # Filters that leave nothing say so, rather than sending a team with results back to the start.
    filtered = client.get(board_url(team, suite, "kind=merge")).content.decode()
    assert "No entry on this board matches these filters" in filtered and 'href="?">show every entry' in filtered
    blue = Team.objects.get(slug="blue")
    MembershipFactory(team=blue, user=owner, role=Role.VIEWER)
    across = client.get("/t/blue/leaderboard/").content.decode()
    assert "Nothing evaluated on any suite yet" in across and 'href="/t/blue/#register-model"' in across


@pytest.mark.parametrize("query", ["", "format=json", "format=csv", "format=live", "format=chart"])
def test_a_board_of_a_suite_the_team_does_not_have_is_a_404(owner, team, board, query):
    blue = Team.objects.get(slug="blue")
    SuiteFactory(team=blue, builtin="date_reasoning", size=4)  # another team's suite is unknown here too
    for name in ("no-such-suite", "date_reasoning"):
        response = csrf_client(owner).get(f"/t/{team.slug}/leaderboard/{name}/" + (f"?{query}" if query else ""))
        assert response.status_code == 404


def test_the_api_board_of_a_suite_the_team_does_not_have_is_a_404(client, team, board, suite):
    token = ApiToken.issue(team, "board")[1]
    SuiteFactory(team=Team.objects.get(slug="blue"), builtin="date_reasoning", size=4)
    for name, status in ((suite.name, 200), ("no-such-suite", 404), ("date_reasoning", 404)):
        response = client.get(f"/api/v1/leaderboard/{name}", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == status, name
    assert "detail" in response.json()  # the API's error shape, not a page


@pytest.mark.parametrize("query", ["sort=nonsense", "sort=-", "format=xml", "format=xml&sort=score"])
def test_a_bad_sort_or_format_is_a_400_with_the_reason(owner, team, board, suite, query):
    response = csrf_client(owner).get(board_url(team, suite, query))
    assert response.status_code == 400
    assert b"sort" in response.content or b"format" in response.content


def test_csv_and_json_exports_hold_exactly_the_rows_shown_in_the_same_order(owner, team, board, suite):
    client = csrf_client(owner)
    query = "kind=single&sort=-latency"
    page = client.get(board_url(team, suite, query))
    shown = [r["entry"] for r in page.context["board"]["rows"]]
    assert shown == ["b", "a", "c"]
    assert f'href="?{query.replace("&", "&amp;")}&amp;format=csv"' in page.content.decode()
    exported = list(
        csv.DictReader(io.StringIO(client.get(board_url(team, suite, f"{query}&format=csv")).content.decode()))
    )
    assert [r["entry"] for r in exported] == shown
    assert exported[0]["latency_p50"] == "0.8" and exported[0]["rank_upper_bound"]
    data = client.get(board_url(team, suite, f"{query}&format=json")).json()
    assert [r["entry"] for r in data["rows"]] == shown
    assert data["filters"] == {"kind": "single", "version": "", "sort": "-latency"}


def test_the_version_filter_shows_each_entry_s_latest_result_on_that_version(owner, team, board, suite):
    _, entries = board
    newer = SuiteFactory(team=team, size=10)  # other content: stored as a new version
    assert newer.version != suite.version
    make_run(team, newer, {entries["a"]: [("0", 0.0)] * 5})
    client = csrf_client(owner)
    latest = {r["entry"]: r for r in client.get(board_url(team, suite, "format=json")).json()["rows"]}
    assert latest["a"]["suite_version"] == newer.version and latest["a"]["score"] == 0.0
    old = {
        r["entry"]: r
        for r in client.get(board_url(team, suite, urlencode({"version": suite.version, "format": "json"}))).json()[
            "rows"
        ]
    }
    assert old["a"]["suite_version"] == suite.version and old["a"]["score"] == 0.5
    only_new = client.get(board_url(team, suite, urlencode({"version": newer.version, "format": "json"}))).json()[
        "rows"
    ]
    assert [r["entry"] for r in only_new] == ["a"]
    page = client.get(board_url(team, suite)).content.decode()
    assert f"v{newer.version}" in page and f"v{suite.version}" in page


def test_the_team_filter_switches_between_the_boards_of_the_user_s_teams_only(owner, teammate, team, board, suite):
    blue = Team.objects.get(slug="blue")
    SuiteFactory(team=blue, size=8)
    MembershipFactory(team=blue, user=owner, role=Role.VIEWER)
    links = csrf_client(owner).get(board_url(team, suite)).context["team_links"]
    assert [(link["label"], link["href"], link["on"]) for link in links] == [
        ("Blue team", "/t/blue/leaderboard/arithmetic/", False),
        ("Red team", "/t/red/leaderboard/arithmetic/", True),
    ]
    page = csrf_client(teammate).get(board_url(team, suite))
    assert [link["label"] for link in page.context["team_links"]] == ["Red team"]
    assert b"Blue team" not in page.content and b'id="team-filter"' not in page.content


# --- Cost against quality ----------------------------------------------------------------------


def test_the_pareto_frontier_keeps_only_points_nothing_beats_on_both_cost_and_score():
    points = [(1.0, 0.2), (2.0, 0.5), (2.0, 0.4), (3.0, 0.45), (4.0, 0.9), (5.0, 0.9)]
    assert charts.pareto_frontier(points) == [0, 1, 4]
    assert charts.pareto_frontier([]) == []


def test_the_cost_quality_chart_marks_the_frontier_for_each_cost_measure(owner, team, board, suite):
    fig = csrf_client(owner).get(board_url(team, suite, "format=chart")).json()
    singles, blends, frontier = fig["data"]
    assert (singles["name"], blends["name"], frontier["name"]) == ("single model", "blend", "Pareto frontier")
    # Compute seconds per item: c (0.5, 0.25), a (1.0, 0.5), vote (3.5, 0.75) are on it; b (2.0, 0.5) is not.
    assert frontier["text"] == ["c", "a", "vote"]
    assert frontier["x"] == [0.5, 1.0, 3.5]
    by_cost = {b["label"]: b["args"][0]["text"][2] for b in fig["layout"]["updatemenus"][0]["buttons"]}
    assert by_cost["model calls per item"] == ["a", "vote"]  # a, b and c all make one call per item
    page = csrf_client(owner).get(board_url(team, suite)).content.decode()
    assert 'id="fig-cost-quality"' in page and "Pareto frontier" in page
    go.Figure(fig)  # plotly checks every property against its schema and raises on anything unknown


def test_the_chart_follows_the_filters(owner, team, board, suite):
    fig = csrf_client(owner).get(board_url(team, suite, "kind=blend&format=chart")).json()
    assert fig["data"][0]["x"] == [] and fig["data"][1]["text"] == ["vote (majority_vote)"]
    empty = csrf_client(owner).get(board_url(team, suite, "kind=merge&format=chart"))
    assert empty.status_code == 200 and empty.json() is None


def test_the_leaderboard_with_its_chart_keeps_a_constant_query_count(owner, team, board, suite):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    run, _ = board
    client = csrf_client(owner)
    client.get(board_url(team, suite))
    changed(team.pk)  # both requests below build the board (the extra rows replace the version too)
    with CaptureQueriesContext(connection) as few:
        client.get(board_url(team, suite, "sort=compute"))
    for i in range(25):
        entry = EntryFactory(team=team, name=f"extra-{i}")
        RunEntryFactory(run=run, entry=entry, score=0.3, ci_low=0.1, ci_high=0.5, n=4, compute_s=i)
    with CaptureQueriesContext(connection) as many:
        response = client.get(board_url(team, suite, "sort=compute"))
    assert len(response.context["board"]["rows"]) == 29
    assert len(many.captured_queries) == len(few.captured_queries)


# --- Every suite at once -----------------------------------------------------------------------


def test_the_all_suites_page_ranks_by_mean_win_rate_and_draws_the_heat_map(owner, team, board, suite):
    _, entries = board
    dates = SuiteFactory(team=team, builtin="date_reasoning", size=4)
    make_run(team, dates, {entries["c"]: [("1", 1.0), ("2", 1.0)], entries["a"]: [("1", 1.0), ("x", 0.0)]})
    client = csrf_client(owner)
    data = client.get(f"/t/{team.slug}/leaderboard/?format=json").json()
    assert data["suites"] == ["arithmetic", "date_reasoning"]
    rows = {r["entry"]: r for r in data["rows"]}
    # arithmetic: vote 0.75 > a = b 0.5 > c 0.25; date: c 1.0 > a 0.5.
    assert rows["vote"]["win_rate"] == 1.0
    assert rows["a"]["win_rate"] == pytest.approx((1.5 / 3 + 0) / 2)
    assert rows["c"]["win_rate"] == pytest.approx((0 + 1) / 2) and rows["c"]["suites"] == 2
    assert data["rows"][0]["entry"] == "vote"
    page = client.get(f"/t/{team.slug}/leaderboard/")
    assert page.status_code == 200
    heat = page.context["heatmap"]["data"][0]
    assert heat["x"] == ["arithmetic", "date_reasoning"] and heat["y"][0] == "vote"
    assert heat["z"][heat["y"].index("c")] == [0.25, 1.0]
    exported = list(
        csv.reader(io.StringIO(client.get(f"/t/{team.slug}/leaderboard/?kind=single&format=csv").content.decode()))
    )
    assert exported[0] == ["entry", "kind", "win_rate", "mean_score", "suites", "arithmetic", "date_reasoning"]
    assert [r[0] for r in exported[1:]] == [r["entry"] for r in data["rows"] if not r["is_blend"]]


def test_heat_map_colours_sit_on_a_fixed_score_range_and_lift_diverges_around_zero(owner, team, board, suite):
    _, entries = board
    dates = SuiteFactory(team=team, builtin="date_reasoning", size=4)
    other = make_run(team, dates, {entries["vote"]: [("1", 0.0), ("2", 0.0)], entries["a"]: [("1", 1.0), ("2", 1.0)]})
    RunEntry.objects.filter(run=other, entry=entries["vote"]).update(lift=-1.0, best_member=entries["a"])
    page = csrf_client(owner).get(f"/t/{team.slug}/leaderboard/")
    heat = page.context["heatmap"]["data"][0]
    # Scores from 0 to 1: the colours span exactly that, whatever the scores shown.
    assert (heat["zmin"], heat["zmax"]) == (0.0, 1.0)
    lift = page.context["lift_heatmap"]
    cells = lift["data"][0]
    assert cells["y"] == ["vote"] and cells["z"] == [[0.25, -1.0]]
    assert cells["zmid"] == 0 and cells["zmin"] == -cells["zmax"] and cells["zmax"] >= 0.25
    assert 'id="fig-lift-heatmap"' in page.content.decode()
    go.Figure(lift)
    # Values off the 0-to-1 scale: the range is the middle 90%, so one outlier does not wash out the rest.
    rows = [{"entry": f"e{i}", "scores": {"s": 0.5 + i / 100}} for i in range(19)] + [
        {"entry": "far", "scores": {"s": 40.0}}
    ]
    far = charts.suite_heatmap(rows, ["s"])["data"][0]
    assert far["zmin"] == pytest.approx(0.5095) and far["zmax"] < 3.0
    assert charts.lift_heatmap(rows, ["s"]) is None  # no blend, no lift


# --- Compare two entries -----------------------------------------------------------------------


def compare_url(team, **params) -> str:
    return f"/t/{team.slug}/compare/?" + "&".join(f"{k}={v}" for k, v in params.items())


def test_compare_on_a_run_lists_the_items_where_the_two_differ(owner, team, board):
    run, entries = board
    client = csrf_client(owner)
    page = client.get(compare_url(team, a=entries["vote"].pk, b=entries["a"].pk, run=run.pk))
    assert page.status_code == 200
    result = page.context["result"]
    summary = result["summary"]
    assert (summary["items"], summary["a_better"], summary["b_better"], summary["same"]) == (4, 2, 1, 1)
    assert summary["diff"] == pytest.approx(0.25) and summary["diff_low"] <= summary["diff"] <= summary["diff_high"]
    assert 0 <= summary["mcnemar_p"] <= 1
    assert [(r["a_prediction"], r["b_prediction"]) for r in result["rows"]] == [("x", "2"), ("3", "3"), ("4", "4")]
    body = page.content.decode()
    assert f"/t/{team.slug}/runs/{run.pk}/items/{result['rows'][0]['a_item_id']}/" in body
    every = client.get(compare_url(team, a=entries["vote"].pk, b=entries["a"].pk, run=run.pk, show="all")).context[
        "result"
    ]
    assert len(every["rows"]) == 4
    answers = client.get(compare_url(team, a=entries["b"].pk, b=entries["c"].pk, run=run.pk, show="answers")).context[
        "result"
    ]
    assert len(answers["rows"]) == 3  # both answered "x" on the second item: the same answer, both wrong


def test_compare_without_a_run_uses_the_latest_run_both_finished(owner, team, board):
    run, entries = board
    page = csrf_client(owner).get(compare_url(team, a=entries["a"].pk, b=entries["b"].pk))
    assert page.status_code == 200 and page.context["ra"].run_id == run.pk


def test_compare_across_suite_versions_pairs_items_by_their_key(owner, team, board, suite):
    _, entries = board
    newer = SuiteFactory(team=team, size=10)
    make_run(team, newer, {entries["b"]: [("0", 0.0)] * 5})
    page = csrf_client(owner).get(compare_url(team, a=entries["a"].pk, b=entries["b"].pk, suite="arithmetic"))
    assert page.status_code == 200
    result = page.context["result"]
    assert not result["same_suite"]
    keys_old = set(suite.items.filter(split="test").values_list("key", flat=True))
    keys_new = set(newer.items.filter(split="test").values_list("key", flat=True))
    assert result["summary"]["items"] == len(keys_old & keys_new)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (lambda entries, run: {"a": "x", "b": entries["b"].pk}, "a: not an id"),
        (lambda entries, run: {"a": entries["a"].pk, "b": entries["b"].pk, "run": "7a"}, "run: not an id"),
        (lambda entries, run: {"a": entries["a"].pk}, "choose two entries"),
        (lambda entries, run: {"a": entries["a"].pk, "b": entries["b"].pk, "show": "nonsense"}, "show: one of"),
        (lambda entries, run: {"a": entries["a"].pk, "b": entries["a"].pk}, "two different entries"),
        (
            lambda entries, run: {"a": entries["a"].pk, "b": entries["b"].pk, "run": run.pk},
            "has no finished result of b",
        ),
        (
            lambda entries, run: {"a": entries["a"].pk, "b": entries["b"].pk, "suite": "nosuch"},
            "never finished a run on nosuch",
        ),
    ],
)
def test_bad_compare_requests_are_a_400_with_the_reason(owner, team, board, query, message):
    first, entries = board
    only_a = make_run(team, first.suite, {entries["a"]: [("1", 1.0)] * 4})
    response = csrf_client(owner).get(compare_url(team, **query(entries, only_a)))
    assert response.status_code == 400
    assert message in response.content.decode()


def test_compare_answers_404_for_another_team_s_entries_and_runs(owner, outsider, team, board):
    run, entries = board
    blue_entry = EntryFactory(team=Team.objects.get(slug="blue"), name="blue-a")
    owner_client = csrf_client(owner)
    assert owner_client.get(compare_url(team, a=entries["a"].pk, b=blue_entry.pk)).status_code == 404
    assert (
        owner_client.get(compare_url(team, a=entries["a"].pk, b=entries["b"].pk, run=run.pk + 1000)).status_code == 404
    )
    assert csrf_client(outsider).get(compare_url(team, a=entries["a"].pk, b=entries["b"].pk)).status_code == 404


# --- The entry page ----------------------------------------------------------------------------


def test_the_entry_page_marks_a_regression_in_its_history_and_chart(owner, team, board, suite):
    run, entries = board
    worse = make_run(team, suite, {entries["vote"]: [("0", 0.0)] * 4})
    worse.created_at = run.created_at.replace(year=run.created_at.year + 1)
    worse.save(update_fields=["created_at"])
    page = csrf_client(owner).get(f"/t/{team.slug}/entries/{entries['vote'].pk}/")
    assert page.status_code == 200
    history = {h["re"].run_id: h["check"] for h in page.context["history"]}
    assert history[worse.pk]["regressed"] and history[worse.pk]["previous_run_id"] == run.pk
    assert history[worse.pk]["delta"] == pytest.approx(-0.75)
    assert not history[run.pk]["regressed"]  # the first result has nothing to fall from
    traces = {trace["name"]: trace for trace in page.context["history_chart"]["data"]}
    assert traces["regression"]["text"][0].startswith(f"run #{worse.pk} on arithmetic")
    assert len(traces["arithmetic"]["x"]) == 2
    assert "regressed" in page.content.decode() and "on 4 items" in page.content.decode()
    # The run page's verdict, from arena.evaluations.regressions, is the same.
    from arena.evaluations.regressions import regressions_for

    (verdict,) = regressions_for(worse)
    assert verdict["regressed"] and verdict["delta_high"] == history[worse.pk]["delta_high"]


def test_the_entry_page_shows_provenance_and_the_strategy_with_its_defaults(owner, team, board):
    run, entries = board
    run.provenance = {"git_revision": "abc1234", "python": "3.11.9", "packages": {"torch": "2.13.0"}}
    run.save(update_fields=["provenance"])
    body = csrf_client(owner).get(f"/t/{team.slug}/entries/{entries['vote'].pk}/").content.decode()
    assert '<code id="git-revision">abc1234</code>' in body and "2.13.0" in body and "fp-vote" in body
    assert "Majority vote" in body and "tie_break" in body  # the default parameter, spelled out


# --- The run page: member agreement and mutual-information selection ---------------------------


def test_the_run_page_draws_the_members_error_correlation_and_kappa(owner, team, board):
    run, _ = board
    page = csrf_client(owner).get(f"/t/{team.slug}/runs/{run.pk}/")
    fig = page.context["agreement_chart"]
    assert [trace["type"] for trace in fig["data"]] == ["heatmap", "heatmap"]
    assert fig["data"][0]["x"] == ["a", "b", "c"]
    assert fig["data"][0]["z"] == page.context["diversity"]["error_correlation"]
    assert fig["data"][1]["z"] == page.context["diversity"]["kappa"]
    assert 'id="fig-agreement"' in page.content.decode()


def test_the_selection_curve_replays_the_vote_over_the_first_k_picks(owner, team, suite):
    a, b, c = EntryFactory(team=team, name="a"), EntryFactory(team=team, name="b"), EntryFactory(team=team, name="c")
    mi = BlendFactory(team=team, name="mi", members=[a, b, c], strategy="mi_selection")
    run = make_run(
        team,
        suite,
        {
            a: [("1", 1.0), ("2", 1.0), ("9", 0.0), ("9", 0.0)],
            b: [("1", 1.0), ("7", 0.0), ("3", 1.0), ("8", 0.0)],
            c: [("5", 0.0), ("2", 1.0), ("3", 1.0), ("4", 1.0)],
            mi: [("1", 1.0), ("2", 1.0), ("3", 1.0), ("9", 0.0)],
        },
    )
    Score.objects.filter(run=run, entry=mi).update(details={"chosen": ["c", "a", "b"], "gain": [0.8, 0.3, 0.05]})
    (curve,) = run_queries.selection_curves(run)
    assert curve["chosen"] == ["c", "a", "b"]
    assert curve["information"] == pytest.approx([0.8, 1.1, 1.15])
    # k=1: c alone, 3/4. k=2: c and a tie on each item, c first: 3/4. k=3: 1, 2, 3 by majority, 4 vs 9 vs 8 -> c's 4.
    assert curve["score"] == [0.75, 0.75, 1.0]
    page = csrf_client(owner).get(f"/t/{team.slug}/runs/{run.pk}/")
    (chart,) = page.context["selection_charts"]
    assert chart["figure"]["data"][2]["y"] == [0.75, 0.75, 1.0]
    assert f'id="selection-{mi.pk}"' in page.content.decode()
