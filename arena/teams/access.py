"""Team-scoped accessors: every view reaches team-owned rows through these.

An outsider gets 404, never 403, so ids of other teams' objects reveal nothing. A member
whose role is too low for an action gets 403: they may know the object exists.
"""

from __future__ import annotations

from typing import TypeVar

from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404
from ninja.errors import HttpError

from arena.teams.models import ROLE_RANK, Membership, Role, Team

M = TypeVar("M", bound=Model)


def membership_for(user, slug: str, role: str = Role.VIEWER) -> Membership:
    """The user's membership in team ``slug``; 404 for outsiders, 403 when the role is too low."""
    if not user.is_authenticated:
        raise Http404("no such team")
    membership = Membership.objects.select_related("team").filter(team__slug=slug, user=user).first()
    if membership is None:
        raise Http404("no such team")
    if not membership.allows(role):
        raise PermissionDenied(f"this needs the {role} role in {membership.team.name}")
    return membership


def team_for(user, slug: str, role: str = Role.VIEWER) -> Team:
    return membership_for(user, slug, role).team


def require_role(request, role: str) -> None:
    """403 unless the API token of ``request`` holds at least ``role`` in its team."""
    if ROLE_RANK[Role(request.auth.role)] < ROLE_RANK[Role(role)]:
        raise HttpError(403, f"this token's role cannot do this (needs {role})")


def get_owned(queryset: QuerySet[M], team: Team, **lookup) -> M:
    """One row of ``team``; 404 when it does not exist or belongs to another team."""
    obj = queryset.filter(team=team, **lookup).first()
    if obj is None:
        raise Http404("not found")
    return obj
