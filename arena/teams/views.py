"""Sign-up, teams, and the owners' team admin page."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.core.exceptions import ValidationError
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from arena.teams import services
from arena.teams.access import get_owned, membership_for
from arena.teams.models import ApiToken, Membership, Role


def home(request):
    if not request.user.is_authenticated:
        return redirect("login")
    memberships = list(request.user.memberships.select_related("team"))
    if len(memberships) == 1:
        return redirect("dashboard", team=memberships[0].team.slug)
    return render(request, "teams/home.html", {"memberships": memberships})


@require_http_methods(["GET", "POST"])
def signup(request):
    form = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(request.GET.get("next") or "new_team")
    return render(request, "registration/signup.html", {"form": form})


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
                _, new_token = ApiToken.issue(t, request.POST.get("name") or "token", user=request.user)
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
            "invitations": t.invitations.filter(accepted_at__isnull=True),
            "roles": Role.choices,
            "new_token": new_token,
            "invite_link": invite_link,
        },
    )


@login_required
def accept_invite(request, token: str):
    if request.method == "POST":
        try:
            membership = services.accept_invitation(token, request.user)
        except ValidationError as exc:
            messages.error(request, "; ".join(exc.messages))
            return redirect("home")
        return redirect("dashboard", team=membership.team.slug)
    return render(request, "teams/accept.html", {"token": token})
