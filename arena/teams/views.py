"""Sign-up, teams, and the owners' team admin page."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model, login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_http_methods

from arena.core.lifecycle import confirm_delete
from arena.teams import lifecycle, services
from arena.teams.access import get_owned, membership_for, team_for
from arena.teams.models import TOKEN_ROLES, ApiToken, Invitation, Membership, Role


def home(request):
    if not request.user.is_authenticated:
        return redirect("login")
    memberships = list(request.user.memberships.select_related("team"))
    if len(memberships) == 1:
        return redirect("dashboard", team=memberships[0].team.slug)
    return render(request, "teams/home.html", {"memberships": memberships})


class SignupForm(UserCreationForm):
    email = forms.EmailField(
        required=False, help_text="Optional; an invitation is accepted by the account with the invited address."
    )

    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username", "email")


def _next_url(request) -> str | None:
    """Where to go after signing up: ``next`` when it stays on this site (no open redirect)."""
    url = request.POST.get("next") or request.GET.get("next")
    if url and url_has_allowed_host_and_scheme(
        url, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return url
    return None


@require_http_methods(["GET", "POST"])
def signup(request):
    form = SignupForm(request.POST or None, initial={"email": request.GET.get("email", "")})
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(_next_url(request) or "new_team")
    return render(request, "registration/signup.html", {"form": form, "next": _next_url(request) or ""})


@login_required
@require_http_methods(["GET", "POST"])
def new_team(request):
    if request.method == "POST":
        try:
            team = services.create_team(request.POST.get("name", ""), request.user)
        except ValidationError as exc:
            messages.error(request, "; ".join(exc.messages))
        else:
            return redirect("dashboard", team=team.slug)
    return render(request, "teams/new_team.html")


def _password_ok(request) -> bool:
    # Sensitive actions ask for the password again.
    return request.user.check_password(request.POST.get("password", ""))


def _expiry_days(value: str) -> int | None:
    """The token form's expiry: empty for never, else a number of days (create_token checks which)."""
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationError({"expires": "a token's expiry is a number of days, or empty for never"}) from None


@login_required
@require_http_methods(["GET", "POST"])
def team_admin(request, team: str):
    membership = membership_for(request.user, team, Role.OWNER)
    t = membership.team
    new_token = invite_link = None
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "invite":
                _, invite_link = services.invite(
                    t,
                    request.POST.get("email", ""),
                    request.POST.get("role", Role.MEMBER),
                    request.user,
                    lambda raw: request.build_absolute_uri(reverse("accept_invite", args=[raw])),
                )
                messages.success(request, "Invitation sent.")
            elif action == "role":
                m = get_owned(Membership.objects.all(), t, pk=request.POST.get("membership", 0))
                services.change_role(m, request.POST.get("role", ""))
                messages.success(request, f"{m.user} is now {m.role}.")
            elif action == "remove":
                if not _password_ok(request):
                    raise ValidationError("wrong password")
                m = get_owned(Membership.objects.all(), t, pk=request.POST.get("membership", 0))
                services.remove_member(m)
                messages.success(request, f"Removed {m.user}.")
            elif action == "token":
                if not _password_ok(request):
                    raise ValidationError("wrong password")
                _, new_token = services.create_token(
                    t,
                    request.POST.get("name", ""),
                    request.POST.get("role", Role.MEMBER),
                    _expiry_days(request.POST.get("expires", "")),
                    request.user,
                )
            elif action == "revoke":
                get_owned(ApiToken.objects.all(), t, pk=request.POST.get("token", 0)).delete()
                messages.success(request, "Token revoked.")
        except (ValidationError, ValueError) as exc:
            messages.error(request, "; ".join(getattr(exc, "messages", [str(exc)])))
    return render(
        request,
        "teams/admin.html",
        {
            "team": t,
            "members": t.memberships.select_related("user"),
            "tokens": t.tokens.all(),
            "invitations": Invitation.pending().filter(team=t),
            "roles": Role.choices,
            "token_roles": [(value, label) for value, label in Role.choices if value in TOKEN_ROLES],
            "token_expiry_days": [d for d in services.TOKEN_EXPIRY_DAYS if d],
            "new_token": new_token,
            "invite_link": invite_link,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def accept_invite(request, token: str):
    """An invitation's page: who invites whom to which team as what, shown to the invited account only;
    anyone else signed in learns only which address it is for."""
    invitation = services.pending_invitation(token)
    if request.method == "POST":
        if invitation is None:
            messages.error(request, services.NO_LONGER_VALID)
            return redirect("home")
        try:
            membership = services.accept_invitation(token, request.user)
        except ValidationError as exc:
            refused = "; ".join(exc.messages)
        else:
            messages.success(request, f"You joined {membership.team.name} as {membership.role}.")
            return redirect("dashboard", team=membership.team.slug)
    else:
        refused = services.refusal(invitation, request.user) if invitation else None
    context = {"invitation": invitation, "refused": refused, "no_longer_valid": services.NO_LONGER_VALID}
    # A refused GET is a page like any other; a refused POST, an action that was not allowed.
    status = 404 if invitation is None else 403 if refused and request.method == "POST" else 200
    return render(request, "teams/accept.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def delete_team(request, team: str):
    """What deleting the team takes (everything it owns); deleting it once the owner types its name."""
    t = team_for(request.user, team, Role.OWNER)
    return confirm_delete(
        request,
        team=t,
        account_of=lambda: lifecycle.account(t),
        delete=lambda: lifecycle.delete(t, request.POST.get("name", "")),
        back=reverse("team_admin", args=[t.slug]),
        done=reverse("home"),
        typed=t.name,
    )
