"""Entry pages: registering a model or a blend, and starting a merge again.

An entry's card reads its results over runs, so it is a leaderboard page (arena/leaderboard/views.py).
"""

from __future__ import annotations

import json

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from arena.core.forms import errors, keep_sent
from arena.core.lifecycle import confirm_delete
from arena.registry import forms, lifecycle, merges, services
from arena.registry.models import Entry, Kind
from arena.teams.access import get_owned, team_for
from arena.teams.models import Role
from ensembles.parsing import load_json


def _json_field(request, name: str, default):
    raw = request.POST.get(name, "").strip()
    if not raw:
        return default
    try:
        return load_json(raw)
    except json.JSONDecodeError as exc:
        raise ValidationError({name: f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"}) from None


@login_required
@require_http_methods(["POST"])
def register_entry(request, team: str):
    t = team_for(request.user, team, Role.MEMBER)
    try:
        if request.POST.get("kind") == Kind.BLEND:
            members = [m for m in request.POST.getlist("members") if m]
            entry = services.register_blend(
                t,
                name=request.POST.get("name", ""),
                strategy=request.POST.get("strategy", ""),
                params=_json_field(request, "params", {}),
                members=members,
                user=request.user,
            )
        else:
            kind = request.POST.get("kind", "")
            entry = services.register_model(
                t,
                name=request.POST.get("name", ""),
                kind=kind,
                config=forms.with_path(kind, _json_field(request, "config", {}), request.POST.get("path", "")),
                api_key=request.POST.get("api_key", ""),
                user=request.user,
            )
    except ValidationError as exc:
        for msg in errors(exc):
            messages.error(request, msg)
        if request.POST.get("kind") == Kind.BLEND:
            keep_sent(request, "blend", ("name", "strategy", "params"), ("members",))
        else:
            keep_sent(request, "model", ("name", "kind", "path", "config"))
        return redirect("dashboard", team=t.slug)
    messages.success(request, f"Registered {entry.name}.")
    return redirect("entry", team=t.slug, entry_id=entry.pk)


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


@login_required
@require_http_methods(["POST"])
def archive_entry(request, team: str, entry_id: int, archived: bool):
    """Archive an entry (off the boards and the pickers, kept in its runs), or bring it back."""
    t = team_for(request.user, team, Role.MEMBER)
    entry = get_owned(Entry.objects.all(), t, pk=entry_id)
    if (lifecycle.archive if archived else lifecycle.unarchive)(entry):
        messages.success(request, f"{'Archived' if archived else 'Unarchived'} {entry.name}.")
    return redirect("entry", team=t.slug, entry_id=entry.pk)


@login_required
@require_http_methods(["GET", "POST"])
def delete_entry(request, team: str, entry_id: int):
    """What deleting an entry takes with it; deleting it once confirmed."""
    t = team_for(request.user, team, Role.MEMBER)
    entry = get_owned(Entry.objects.all(), t, pk=entry_id)
    return confirm_delete(
        request,
        team=t,
        account_of=lambda: lifecycle.account(entry),
        delete=lambda: lifecycle.delete(entry),
        back=reverse("entry", args=[t.slug, entry.pk]),
        done=reverse("dashboard", args=[t.slug]),
    )
