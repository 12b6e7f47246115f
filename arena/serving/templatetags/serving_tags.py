"""The entry page's shadow card, so the entry view itself need not know about serving."""

from __future__ import annotations

from django import template

from arena.registry.models import Kind
from arena.serving import queries
from arena.serving.models import ShadowConfig
from arena.teams.models import Membership, Role

register = template.Library()


@register.inclusion_tag("serving/_shadow_card.html", takes_context=True)
def shadow_card(context, entry):
    """How the entry and its shadows compared on sampled live requests; the form for members and owners."""
    membership = Membership.objects.filter(team_id=entry.team_id, user=context["request"].user).first()
    can_edit = membership is not None and membership.allows(Role.MEMBER)
    servable = queries.servable_entries(entry.team).exclude(pk=entry.pk).only("pk", "name", "kind")
    return {
        "team": context["team"],
        "entry": entry,
        "config": ShadowConfig.objects.filter(entry=entry).select_related("shadow", "judge").first(),
        "comparisons": queries.shadow_comparisons(entry),
        "samples": queries.shadow_samples(entry, limit=10),
        "can_edit": can_edit,
        "choices": list(servable) if can_edit else [],
        "judges": [e for e in servable if e.kind != Kind.BLEND] if can_edit else [],
        "csrf_token": context.get("csrf_token"),
    }
