"""The run page's blend-search card, so the run view itself need not know about searches."""

from __future__ import annotations

from django import template

from arena.search.views import start_form
from arena.teams.models import Membership, Role

register = template.Library()


@register.inclusion_tag("search/_run_card.html", takes_context=True)
def blend_search_card(context, run):
    membership = Membership.objects.filter(team_id=run.team_id, user=context["request"].user).first()
    can_edit = membership is not None and membership.allows(Role.MEMBER)
    return {"team": context["team"], "search_form": start_form(run, can_edit), "csrf_token": context.get("csrf_token")}
