"""The board snapshots live pages show and the API serves, built once per change instead of once per reader
(a run page's are built the same way: arena/evaluations/snapshots.py).

Every live event used to make every open page of a board reload its snapshot (and chart) at the same
moment: with 200 pages, 200 identical builds and 400 requests, and API requests queued behind them
for seconds. Now a snapshot is kept in the shared cache under the version of its team's results,
which every event and every stored change replaces (arena.evaluations.events.changed,
arena/leaderboard/receivers.py): the first reader after a change builds it and the others reuse that
build. And the event itself carries what the page shows, its rows rendered by the server
(arena/leaderboard/consumers.py, tables.py), so an open page asks the server nothing until it
reconnects. The database stays the truth: a new version is never served an older build, a page
reloads from the database whenever its socket (re)opens, and without the cache every reader builds
from the database.
"""

from __future__ import annotations

import hashlib

from arena.core import cache
from arena.evaluations.events import results_key
from arena.evaluations.snapshots import push_members
from arena.leaderboard import charts, queries, tables
from arena.teams.models import Team

DEFAULT_SORT = "-score"
# Kind filters beyond an entry's own label: every single model, every blend.
GROUP_KINDS = {"single": False, "blend": True}


def board(team: Team, suite_name: str, version: str | None = None) -> dict:
    """queries.board, shared by every reader until the team's results change."""
    # Suite names may hold any character; the key gets a digest of them.
    name = hashlib.sha256(f"{suite_name}\0{version or ''}".encode()).hexdigest()[:24]
    return cache.cached(
        f"board:{team.pk}:{name}", results_key(team.pk), lambda: queries.board(team, suite_name, version)
    )


def of_kind(rows: list[dict], kind: str) -> list[dict]:
    if kind in GROUP_KINDS:
        return [r for r in rows if r["is_blend"] == GROUP_KINDS[kind]]
    return [r for r in rows if r["kind"] == kind] if kind else rows


def shown_board(team: Team, suite_name: str, *, kind: str = "", version: str = "", sort: str = DEFAULT_SORT):
    """What a board page shows for its filters (and every export of it): the rows of ``kind`` in the
    order ``sort`` asks (a key of queries.SORTS, checked by the caller); and every kind on the board."""
    data = board(team, suite_name, version=version or None)
    kinds = sorted({r["kind"] for r in data["rows"]})
    data["rows"] = queries.sort_rows(of_kind(data["rows"], kind), sort)
    data["filters"] = {"kind": kind, "version": version, "sort": sort}
    return data, kinds


# --- What an event carries to an open board page (arena/evaluations/snapshots.py: a run page's) ---
# A page that (re)connects fetches the same from its ?format=live URL.


def board_push(team: Team, suite_name: str, query: dict[str, str]) -> str:
    """The board page's snapshot, its rows as the page renders them and its chart, for the filters in
    ``query`` (the page's query string, which its socket carries too)."""
    sort = query.get("sort") or DEFAULT_SORT
    if sort.removeprefix("-") not in queries.SORTS:
        sort = DEFAULT_SORT  # the page itself refuses such a sort; its socket gets the default order
    kind, version = query.get("kind", ""), query.get("version", "")
    data, _ = shown_board(team, suite_name, kind=kind, version=version, sort=sort)
    rows = tables.board_rows(data["rows"], team.slug, filtered=bool(kind or version))
    return push_members({"snapshot": data, "rows": rows, "chart": charts.cost_quality(data["rows"])})
