"""The snapshots live pages show and the API serves, built once per change instead of once per reader.

Every live event used to make every open page of a board reload its snapshot (and chart) at the same
moment: with 200 pages, 200 identical builds and 400 requests, and API requests queued behind them
for seconds. Now a snapshot is kept in the shared cache under the version of its team's results,
which every event and every stored change replaces (arena.evaluations.events.changed,
arena/leaderboard/receivers.py): the first reader after a change builds it and the others reuse that
build. And the event itself carries what the page shows (arena/leaderboard/consumers.py), so an open
page asks the server nothing until it reconnects. The database stays the truth: a new version is
never served an older build, a page reloads from the database whenever its socket (re)opens, and
without the cache every reader builds from the database.
"""

from __future__ import annotations

import hashlib
import json

from django.core.serializers.json import DjangoJSONEncoder

from arena.core import cache
from arena.evaluations.events import results_key
from arena.evaluations.models import Run
from arena.leaderboard import charts, services
from arena.teams.models import Team

DEFAULT_SORT = "-score"
# Kind filters beyond an entry's own label: every single model, every blend.
GROUP_KINDS = {"single": False, "blend": True}


def board(team: Team, suite_name: str, version: str | None = None) -> dict:
    """services.board, shared by every reader until the team's results change."""
    # Suite names may hold any character; the key gets a digest of them.
    name = hashlib.sha256(f"{suite_name}\0{version or ''}".encode()).hexdigest()[:24]
    return cache.cached(
        f"board:{team.pk}:{name}", results_key(team.pk), lambda: services.board(team, suite_name, version)
    )


def of_kind(rows: list[dict], kind: str) -> list[dict]:
    if kind in GROUP_KINDS:
        return [r for r in rows if r["is_blend"] == GROUP_KINDS[kind]]
    return [r for r in rows if r["kind"] == kind] if kind else rows


def shown_board(team: Team, suite_name: str, *, kind: str = "", version: str = "", sort: str = DEFAULT_SORT):
    """What a board page shows for its filters (and every export of it): the rows of ``kind`` in the
    order ``sort`` asks (a key of services.SORTS, checked by the caller); and every kind on the board."""
    data = board(team, suite_name, version=version or None)
    kinds = sorted({r["kind"] for r in data["rows"]})
    data["rows"] = services.sort_rows(of_kind(data["rows"], kind), sort)
    data["filters"] = {"kind": kind, "version": version, "sort": sort}
    return data, kinds


def run_snapshot(run: Run) -> dict:
    """services.run_snapshot: the entries' part shared until the team's results change, the run's own
    fields from the row the caller just read (its judge's state or provenance change without an event)."""
    results = cache.cached(f"run:{run.pk}", results_key(run.team_id), lambda: services.run_results(run))
    return {**services.run_fields(run), **results}


# --- What an event carries to an open page (JSON members, without the braces) ---------------


def board_push(team: Team, suite_name: str, query: dict[str, str]) -> str:
    """The board page's snapshot and chart for the filters in its socket's query string."""
    sort = query.get("sort") or DEFAULT_SORT
    if sort.removeprefix("-") not in services.SORTS:
        sort = DEFAULT_SORT  # the page itself refuses such a sort; its socket gets the default order
    data, _ = shown_board(team, suite_name, kind=query.get("kind", ""), version=query.get("version", ""), sort=sort)
    return _members({"snapshot": data, "chart": charts.cost_quality(data["rows"])})


def run_push(run_id: int) -> str:
    """The run page's snapshot; empty when the run is gone."""
    run = Run.objects.select_related("suite", "team").filter(pk=run_id).first()
    return _members({"snapshot": run_snapshot(run)}) if run is not None else ""


def _members(value: dict) -> str:
    return json.dumps(value, cls=DjangoJSONEncoder)[1:-1]
