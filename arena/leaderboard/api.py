"""JSON API for the boards: one suite's ranking, the latest result of every entry evaluated on it."""

from __future__ import annotations

from typing import Any

from ninja import Router

from arena.leaderboard import snapshots

router = Router()


@router.get("/leaderboard/{suite}", response=dict[str, Any])
def get_leaderboard(request, suite: str):
    return snapshots.board(request.auth.team, suite)
