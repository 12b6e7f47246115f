"""JSON API for shadow comparison: an entry's shadow, the share of its /v1 chat requests sampled, and
what the samples found. The entry is named as /v1 names it, and looked up within the token's team."""

from __future__ import annotations

from typing import Any

from ninja import Field, Router, Schema

from arena.registry.models import Entry
from arena.serving import queries, shadows
from arena.serving.models import ShadowConfig
from arena.teams.access import get_owned, require_role
from arena.teams.models import Role

router = Router(tags=["serving"])


class ShadowIn(Schema):
    shadow: str = Field(..., min_length=1, max_length=100, description="an entry of the same team, not this one")
    rate: float = Field(..., ge=0.0, le=1.0, description="the share of live chat requests also sent to the shadow")
    judge: str | None = Field(None, max_length=100, description="a single model comparing the answers; none: no judge")


def shadow_out(entry: Entry) -> dict[str, Any]:
    config = ShadowConfig.objects.filter(entry=entry).select_related("shadow", "judge").first()
    return {
        "entry": entry.name,
        "shadow": config.shadow.name if config else None,
        "rate": config.rate if config else 0.0,
        "judge": config.judge.name if config and config.judge else None,
        "comparisons": queries.shadow_comparisons(entry),
        "samples": queries.shadow_samples(entry),
    }


def _entry(request, name: str) -> Entry:
    return get_owned(Entry.objects.select_related("team"), request.auth.team, name=name)


@router.get("/shadows/{path:name}", response=dict[str, Any])
def get_shadow(request, name: str):
    """The entry's shadow, and per shadow compared so far: agreement, cost and latency side by side, the judge's preference."""
    return shadow_out(_entry(request, name))


@router.put("/shadows/{path:name}", response=dict[str, Any])
def put_shadow(request, name: str, body: ShadowIn):
    """Name the entry's shadow (422 for one of another team, the entry itself, or a rate outside [0, 1])."""
    require_role(request, Role.MEMBER)
    entry = _entry(request, name)
    shadows.set_shadow(entry, shadow=body.shadow, rate=body.rate, judge=body.judge)
    return shadow_out(entry)


@router.delete("/shadows/{path:name}", response={204: None})
def delete_shadow(request, name: str):
    """Stop shadowing the entry; the samples stored so far stay."""
    require_role(request, Role.MEMBER)
    shadows.clear_shadow(_entry(request, name))
    return 204, None
