"""Where a team hears of its regressions (the rule itself: arena/evaluations/regressions.py)."""

from __future__ import annotations

from arena.alerts.models import TeamNotifications
from arena.teams.models import Team


def notifications_for(team: Team) -> TeamNotifications:
    """The team's notification settings; unsaved defaults when it never set any."""
    return TeamNotifications.objects.filter(team=team).first() or TeamNotifications(team=team)
