"""JSON API for the boards: one suite's ranking, the latest result of every entry evaluated on it."""

from __future__ import annotations

from typing import Any

from django.http import Http404
from ninja import Router

from arena.benchmarks.models import Suite
from arena.leaderboard import snapshots

router = Router()


@router.get("/leaderboard/{suite}", response=dict[str, Any])
def get_leaderboard(request, suite: str):
    """The suite's board, as its page shows it; a suite the team does not have is a 404, as on the page."""
    if not Suite.objects.filter(team=request.auth.team, name=suite).exists():
        raise Http404(f"no suite named {suite!r}")
    return snapshots.board(request.auth.team, suite)
