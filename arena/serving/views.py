"""Every entry, single model or blend, served at an OpenAI-compatible endpoint.

`/v1/models`, `/v1/models/{id}` and `/v1/chat/completions` with a team API token as the bearer key,
so a team calls its best blend like one model. The handlers live in chat.py; the shapes in protocol.py.
The entry page's shadow form posts here (its card is the `shadow_card` template tag).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from arena.core.forms import errors
from arena.registry.models import Entry
from arena.serving import chat, shadows
from arena.serving.protocol import allow, model_card, token_required
from arena.teams.access import get_owned, team_for
from arena.teams.models import Role


@allow("GET")
@token_required
def models(request):
    team = request.auth.team
    listed = chat.servable_entries(team).filter(archived_at__isnull=True)  # an archived entry is still served
    data = [model_card(e.name, int(e.created_at.timestamp()), team.slug) for e in listed]
    return JsonResponse({"object": "list", "data": data})


@allow("GET")
@token_required
def model(request, model_id: str):
    entry = chat.entry_for(request.auth, model_id)
    return JsonResponse(model_card(entry.name, int(entry.created_at.timestamp()), request.auth.team.slug))


# Bearer-token API: no cookies, so no CSRF to forge.
chat_completions = csrf_exempt(allow("POST")(token_required(chat.chat_completions)))


@login_required
@require_http_methods(["POST"])
def entry_shadow(request, team: str, entry_id: int):
    """Set or stop the entry's shadow from its page; a refused form is a 400 that says why, and stores nothing."""
    t = team_for(request.user, team, Role.MEMBER)
    entry = get_owned(Entry.objects.select_related("team"), t, pk=entry_id)
    if request.POST.get("action") == "stop":
        if shadows.clear_shadow(entry):
            messages.success(request, f"{entry.name} is no longer shadowed; its samples stay.")
        return redirect("entry", team=t.slug, entry_id=entry.pk)
    try:
        config = shadows.set_shadow(
            entry,
            shadow=request.POST.get("shadow", "").strip(),
            rate=_rate(request.POST.get("rate", "")),
            judge=request.POST.get("judge", "").strip() or None,
            user=request.user,
        )
    except ValidationError as exc:
        context = {"team": t, "entry": entry, "errors": errors(exc)}
        return render(request, "serving/shadow_refused.html", context, status=400)
    messages.success(
        request, f"{config.shadow.name} now answers {config.rate * 100:g}% of {entry.name}'s chat requests too."
    )
    return redirect("entry", team=t.slug, entry_id=entry.pk)


def _rate(raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ValidationError({"rate": f"a share of requests between 0 and 1, not {raw[:40]!r}"}) from None
