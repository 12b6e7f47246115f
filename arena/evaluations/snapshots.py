"""A run's snapshot as its live page shows it and the API serves it, built once per change of the
team's results rather than once per reader (arena/leaderboard/snapshots.py tells why), and what a
live event carries to an open page.
"""

from __future__ import annotations

import json

from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpResponse

from arena.core import cache
from arena.evaluations import queries, tables
from arena.evaluations.events import results_key
from arena.evaluations.models import Run


def run_snapshot(run: Run) -> dict:
    """The run's snapshot (arena.evaluations.queries): the entries' part shared until the team's results
    change, the run's own fields from the row the caller just read (its judge's state or provenance
    change without an event)."""
    results = cache.cached(f"run:{run.pk}", results_key(run.team_id), lambda: queries.run_results(run))
    return {**queries.run_fields(run), **results}


# --- What an event carries to an open page (JSON members, without the braces) ---------------
# A page that (re)connects fetches the same from its ?format=live URL.


def run_push(run_id: int) -> str:
    """The run page's snapshot and its rows as the page renders them; empty when the run is gone."""
    run = Run.objects.select_related("suite", "team").filter(pk=run_id).first()
    if run is None:
        return ""
    snapshot = run_snapshot(run)
    return push_members({"snapshot": snapshot, "rows": tables.run_rows(snapshot["entries"])})


def live_response(members: str) -> HttpResponse:
    """A push as the answer to a page's ?format=live request."""
    return HttpResponse("{" + members + "}", content_type="application/json")


def push_members(value: dict) -> str:
    """``value`` as the JSON members a push carries: the consumer splices them into the event's object."""
    return json.dumps(value, cls=DjangoJSONEncoder)[1:-1]
