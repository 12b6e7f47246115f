"""What the OpenAI-compatible endpoint can serve."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from arena.registry.models import Entry, Kind, MergeState
from arena.teams.models import Team


def servable_entries(team: Team) -> QuerySet[Entry]:
    # A merge is a model once its weights are built; before that it has nothing to serve.
    return Entry.objects.filter(team=team).exclude(Q(kind=Kind.MERGE) & ~Q(materialization__state=MergeState.DONE))
