"""Pages of the registry beyond the entry card (arena/leaderboard/views.py): starting a merge again."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods

from arena.registry import merges
from arena.registry.models import Entry
from arena.teams.access import get_owned, team_for
from arena.teams.models import Role


@login_required
@require_http_methods(["POST"])
def materialize(request, team: str, entry_id: int):
    """Start again the materialization of a merge that failed, from its entry's page."""
    t = team_for(request.user, team, Role.MEMBER)
    entry = get_owned(Entry.objects.select_related("team"), t, pk=entry_id)
    try:
        merges.restart(entry)
    except ValidationError as exc:
        for msgs in exc.message_dict.values():
            for msg in msgs:
                messages.error(request, msg)
    else:
        messages.success(request, f"Materializing {entry.name} again.")
    return redirect("entry", team=t.slug, entry_id=entry.pk)
