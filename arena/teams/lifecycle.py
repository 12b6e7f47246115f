"""Deleting a team and everything it owns (arena/core/lifecycle.py).

What the team owns lives in the apps above this one; it is counted and deleted through the team's own
relations. Runs go first: a run holds its suite, which would otherwise refuse to go.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import transaction

from arena.core.lifecycle import Account, counted
from arena.teams.models import Team


def account(team: Team) -> Account:
    """Everything deleting ``team`` takes with it."""
    out = Account(f"team {team.name}")
    runs = team.runs.count()
    out.goes += [
        counted(team.entries.count(), "entry", "entries"),
        counted(team.suites.count(), "suite"),
        f"{counted(runs, 'run')}, with every result and score in them",
        counted(team.schedules.count(), "schedule"),
        counted(team.blend_searches.count(), "blend search", "blend searches"),
        counted(team.memberships.count(), "membership") + " (the accounts themselves stay)",
        counted(team.tokens.count(), "API token") + ", which stop working at once",
        "the files of the models built for it (merges, fine-tunes)",
    ]
    return out


def delete(team: Team, typed_name: str) -> Account:
    """Delete ``team`` and all it owns, all or nothing, once ``typed_name`` is its name; its built models'
    files are removed after the commit (arena/registry/receivers.py)."""
    if typed_name.strip() != team.name:
        raise ValidationError({"name": f"type the team's name, {team.name}, to delete it"})
    with transaction.atomic():
        locked = Team.objects.select_for_update().get(pk=team.pk)
        out = account(locked)
        locked.runs.all().delete()
        locked.delete()
    return out
