"""Team logic: creating teams, invitations, roles and tokens."""

from __future__ import annotations

import secrets

from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from arena.teams.models import ApiToken, Invitation, Membership, Role, Team, hash_token


def create_team(name: str, owner) -> Team:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "a team needs a name"})
    base = slugify(name)[:50] or "team"
    slug, n = base, 1
    while Team.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    with transaction.atomic():
        team = Team.objects.create(name=name, slug=slug)
        Membership.objects.create(team=team, user=owner, role=Role.OWNER)
    return team


def invite(team: Team, email: str, role: str, invited_by, accept_url_for) -> tuple[Invitation, str]:
    """Record an invitation and mail its link; returns the invitation and the link."""
    if role not in Role.values:
        raise ValidationError({"role": f"role must be one of {', '.join(Role.values)}"})
    raw = secrets.token_urlsafe(24)
    invitation = Invitation.objects.create(
        team=team, email=email, role=role, digest=hash_token(raw), invited_by=invited_by
    )
    link = accept_url_for(raw)
    send_mail(
        f"Join {team.name} on Ensemble Arena",
        f"{invited_by} invited you to {team.name} as {role}. Accept: {link}",
        None,
        [email],
        fail_silently=True,
    )
    return invitation, link


def accept_invitation(raw: str, user) -> Membership:
    with transaction.atomic():
        invitation = (
            Invitation.objects.select_for_update()
            .filter(digest=hash_token(raw), accepted_at__isnull=True)
            .select_related("team")
            .first()
        )
        if invitation is None:
            raise ValidationError("this invitation is unknown or was already used")
        membership, _ = Membership.objects.get_or_create(
            team=invitation.team, user=user, defaults={"role": invitation.role}
        )
        invitation.accepted_at = timezone.now()
        invitation.save(update_fields=["accepted_at"])
    return membership


def change_role(membership: Membership, role: str) -> None:
    if role not in Role.values:
        raise ValidationError({"role": f"role must be one of {', '.join(Role.values)}"})
    with transaction.atomic():
        if membership.role == Role.OWNER and role != Role.OWNER:
            _keep_an_owner(membership)
        membership.role = role
        membership.save(update_fields=["role"])


def remove_member(membership: Membership) -> None:
    with transaction.atomic():
        if membership.role == Role.OWNER:
            _keep_an_owner(membership)
        membership.delete()


def _keep_an_owner(membership: Membership) -> None:
    owners = Membership.objects.select_for_update().filter(team=membership.team, role=Role.OWNER)
    if owners.exclude(pk=membership.pk).count() == 0:
        raise ValidationError("a team needs at least one owner")


def authenticate_token(raw: str) -> ApiToken | None:
    token = ApiToken.objects.select_related("team").filter(digest=hash_token(raw)).first()
    if token is not None:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token
