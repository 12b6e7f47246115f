"""Team logic: creating teams, invitations, roles and tokens, and authenticating API requests."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify
from redis import RedisError

from arena.core.text import check_name
from arena.teams.models import TOKEN_ROLES, ApiToken, Invitation, Membership, Role, Team, hash_token

log = logging.getLogger(__name__)

NO_LONGER_VALID = "this invitation link is no longer valid: it was used, it expired, or it never existed"
# A token's lifetime is chosen from these at creation (days; None: it never expires).
TOKEN_EXPIRY_DAYS = (None, 7, 30, 90, 365)


def create_team(name: str, owner) -> Team:
    name = name.strip()
    if not name:
        raise ValidationError({"name": "a team needs a name"})
    name = check_name("name", name)
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
    """Record an invitation for ``email`` and mail its link; returns the invitation and the link."""
    email = email.strip()
    try:
        validate_email(email)
    except ValidationError:
        raise ValidationError({"email": "enter a valid email address"}) from None
    if role not in Role.values:
        raise ValidationError({"role": f"role must be one of {', '.join(Role.values)}"})
    raw = secrets.token_urlsafe(24)
    invitation = Invitation.objects.create(
        team=team, email=email, role=role, digest=hash_token(raw), invited_by=invited_by
    )
    link = accept_url_for(raw)
    send_mail(
        f"Join {team.name} on Ensemble Arena",
        f"{invited_by} invited you ({email}) to {team.name} as {role}. "
        f"The link works once, until {invitation.expires_at:%Y-%m-%d %H:%M} UTC: {link}",
        None,
        [email],
        fail_silently=True,
    )
    return invitation, link


def pending_invitation(raw: str) -> Invitation | None:
    """The invitation behind link ``raw`` while it can be accepted; None when used, expired or unknown."""
    return Invitation.pending().select_related("team", "invited_by").filter(digest=hash_token(raw)).first()


def refusal(invitation: Invitation, user) -> str | None:
    """Why ``user`` may not accept ``invitation``, which is bound to its address; None when they may."""
    if user.email and user.email.casefold() == invitation.email.casefold():
        return None
    if user.email:
        return (
            f"this invitation is for {invitation.email}, and you are signed in as {user.username} ({user.email}): "
            "log in as the invited account to accept it"
        )
    return (
        f"this invitation is for {invitation.email}, and your account {user.username} has no email address: "
        f"log in as the account with {invitation.email}, or sign up with it, to accept it"
    )


def accept_invitation(raw: str, user) -> Membership:
    with transaction.atomic():
        invitation = Invitation.pending().select_for_update().filter(digest=hash_token(raw)).first()
        if invitation is None:
            raise ValidationError(NO_LONGER_VALID, code="invalid")
        reason = refusal(invitation, user)
        if reason:
            raise ValidationError(reason, code="wrong_account")
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


def create_token(team: Team, name: str, role: str, expires_in_days: int | None, user) -> tuple[ApiToken, str]:
    """A new token of ``team`` with ``role`` (viewer or member), expiring after ``expires_in_days``
    (None: never); returns it with its plain text, shown once."""
    name = check_name("name", name.strip() or "token")
    if role not in TOKEN_ROLES:
        raise ValidationError({"role": f"a token's role is one of {', '.join(TOKEN_ROLES)}"})
    if expires_in_days not in TOKEN_EXPIRY_DAYS:
        choices = ", ".join(str(d) for d in TOKEN_EXPIRY_DAYS if d)
        raise ValidationError({"expires": f"a token expires after {choices} days, or never"})
    expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    return ApiToken.issue(team, name, role=role, user=user, expires_at=expires_at)


class TokenRefused(Exception):
    """A bearer token that does not authenticate (401), or any token from an address that sent too
    many bad ones (429)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message
        if status == 429:
            # The window's whole length: a bound on the wait, as the cache does not say what is left.
            self.headers = {"Retry-After": str(settings.ARENA_TOKEN_COOLOFF_S)}
        else:
            self.headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (the scheme in any case, RFC 6750); None
    for no header or another scheme."""
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def authenticate_request(request) -> ApiToken | None:
    """The API token that ``request`` carries, as every API reads it; None when it carries none.

    Raises TokenRefused for an unknown, revoked or expired token, and for any token once the address
    has sent ``ARENA_TOKEN_FAILURE_LIMIT`` bad ones within the cool-off window.
    """
    raw = bearer_token(request.headers.get("Authorization"))
    if raw is None:
        return None
    address = request.META.get("REMOTE_ADDR") or "unknown"
    if _failures(address) >= settings.ARENA_TOKEN_FAILURE_LIMIT:
        raise TokenRefused(429, "too many bad API tokens from this address: try again later")
    token = ApiToken.objects.select_related("team").filter(digest=hash_token(raw)).first()
    if token is None or token.expired:
        _count_failure(address)
        if token is None:
            raise TokenRefused(401, "this API token is unknown or was revoked")
        raise TokenRefused(401, f"this API token expired at {token.expires_at:%Y-%m-%d %H:%M} UTC")
    token.last_used_at = timezone.now()
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=token.last_used_at)
    return token


# Failures live in the shared cache (Redis), so every web process counts toward the same limit; a
# fixed window from the first failure. When the cache is unreachable tokens are checked without a
# limit: guessing a 256-bit token is hopeless anyway, and refusing them all would take the API down too.
def _failures_key(address: str) -> str:
    return f"token-failures:{address}"


def _failures(address: str) -> int:
    try:
        return int(cache.get(_failures_key(address)) or 0)
    except RedisError:
        log.warning("cache unreachable: API token failures are not limited", exc_info=True)
        return 0


def _count_failure(address: str) -> None:
    key = _failures_key(address)
    try:
        cache.add(key, 0, settings.ARENA_TOKEN_COOLOFF_S)
        cache.incr(key)
    except (RedisError, ValueError):  # ValueError: the window ended between the two calls
        log.warning("API token failure from %s not counted", address, exc_info=True)


def forget_token_failures(address: str) -> None:
    """Lift ``address``'s lock-out now (an operator's fix for a client that was misconfigured)."""
    try:
        cache.delete(_failures_key(address))
    except RedisError:
        log.warning("cache unreachable: no API token failures of %s to forget", address, exc_info=True)
