"""Live events to the run's and the leaderboard's Channels groups.

Best-effort by design: the database is the source of truth, an event only tells a page
to reload its snapshot, so a lost event costs freshness, never correctness.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def run_group(run_id: int) -> str:
    return f"run.{run_id}"


def board_group(team_id: int, suite_name: str) -> str:
    return f"board.{team_id}.{suite_name}"


def publish(run, event: str, **payload: Any) -> None:
    """Tell the pages watching ``run`` and its leaderboard that something was stored."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "arena.event", "event": event, "run": run.pk, **payload}
    for group in (run_group(run.pk), board_group(run.team_id, run.suite.name)):
        try:
            async_to_sync(layer.group_send)(group, message)
        except Exception:  # noqa: BLE001 - a broken live channel must never fail the work
            log.warning("live event %s for run %s not delivered", event, run.pk, exc_info=True)
