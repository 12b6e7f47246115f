"""Live events to the run's and the leaderboard's Channels groups.

Best-effort by design: the database is the source of truth, an event only tells a page
to reload its snapshot, so a lost event costs freshness, never correctness. Each event first
replaces the version of the team's results, under which those snapshots are cached
(arena/evaluations/snapshots.py, arena/leaderboard/snapshots.py): every page then reloads what one
build made of the database.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from arena.core import cache

log = logging.getLogger(__name__)


def run_group(run_id: int) -> str:
    return f"run.{run_id}"


def board_group(team_id: int, suite_name: str) -> str:
    return f"board.{team_id}.{suite_name}"


def results_key(team_id: int) -> str:
    """The cache version of everything a team's leaderboards and run pages show."""
    return f"team-results:{team_id}"


def changed(team_id: int) -> str | None:
    """The team's results changed: snapshots cached before now are not served again. The new version."""
    return cache.bump(results_key(team_id))


def publish(run, event: str, **payload: Any) -> None:
    """Tell the pages watching ``run`` and its leaderboard that something was stored."""
    version = changed(run.team_id)
    layer = get_channel_layer()
    if layer is None:
        return
    # "version": what the pages' sockets send with the event is built for it (consumers.py); "at": when.
    message = {"type": "arena.event", "event": event, "run": run.pk, "at": time.time(), "version": version, **payload}
    for group in (run_group(run.pk), board_group(run.team_id, run.suite.name)):
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:  # noqa: BLE001 - a broken live channel must never fail the work
            log.warning("live event %s for run %s not delivered", event, run.pk, exc_info=True)
