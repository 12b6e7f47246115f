"""Pages: the team's regression webhook, set by an owner from the Schedules page."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods

from arena.alerts import services
from arena.teams.access import team_for
from arena.teams.models import Role


@login_required
@require_http_methods(["POST"])
def webhook(request, team: str):
    t = team_for(request.user, team, Role.OWNER)
    try:
        saved = services.set_webhook(t, request.POST.get("webhook_url", ""))
    except ValidationError as exc:
        for msg in exc.messages:
            messages.error(request, f"webhook_url: {msg}")
    else:
        messages.success(
            request, "Regressions will be posted to the webhook." if saved.webhook_url else "Webhook removed."
        )
    return redirect("schedules", team=t.slug)
