"""JSON API for the team's regression notifications (mounted on /api/v1 by arena/api.py)."""

from __future__ import annotations

from ninja import Field, Router, Schema

from arena.alerts import queries, services
from arena.teams.access import require_role
from arena.teams.models import Role

router = Router(tags=["notifications"])


class WebhookIn(Schema):
    webhook_url: str = Field(
        "", max_length=500, description="http(s) URL that receives a POST on a regression; empty: none"
    )


@router.get("/notifications", response=WebhookIn)
def get_notifications(request):
    """The team's regression webhook (owner tokens only: such a URL often carries its own secret)."""
    require_role(request, Role.OWNER)
    return {"webhook_url": queries.notifications_for(request.auth.team).webhook_url}


@router.put("/notifications", response=WebhookIn)
def put_notifications(request, body: WebhookIn):
    require_role(request, Role.OWNER)
    return {"webhook_url": services.set_webhook(request.auth.team, body.webhook_url).webhook_url}
