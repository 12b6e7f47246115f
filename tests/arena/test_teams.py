"""Sign-up, roles, the team admin page and API tokens, through a CSRF-enforcing client."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from arena.teams.models import ApiToken, Invitation, Membership, Role, hash_token
from tests.helpers import PASSWORD, csrf_client, post_form

pytestmark = pytest.mark.django_db


def test_a_new_user_signs_up_creates_a_team_and_becomes_its_owner():
    client = csrf_client()
    response = post_form(client, "/signup/", {"username": "newbie", "password1": PASSWORD, "password2": PASSWORD})
    assert response.status_code == 302
    response = post_form(client, "/teams/new/", {"name": "Green team"})
    assert response.status_code == 302 and response["Location"] == "/t/green-team/"
    user = get_user_model().objects.get(username="newbie")
    assert Membership.objects.get(user=user).role == Role.OWNER
    assert client.get("/t/green-team/").status_code == 200


def test_a_post_without_csrf_token_is_refused(owner, team):
    client = csrf_client(owner)
    response = client.post(f"/t/{team.slug}/admin/", {"action": "invite", "email": "x@example.com"})
    assert response.status_code == 403
    assert not Invitation.objects.exists()


def test_login_with_wrong_password_shows_an_error():
    response = post_form(csrf_client(), "/login/", {"username": "nobody", "password": "wrong"})
    assert response.status_code == 200
    assert b"did not match" in response.content


@pytest.mark.parametrize("persona, status", [("owner", 200), ("teammate", 403), ("viewer", 403), ("outsider", 404)])
def test_only_owners_open_the_team_admin_and_outsiders_see_nothing(request, team, persona, status):
    user = request.getfixturevalue(persona)
    assert csrf_client(user).get(f"/t/{team.slug}/admin/").status_code == status


@pytest.mark.parametrize("persona, status", [("owner", 200), ("teammate", 200), ("viewer", 200), ("outsider", 404)])
def test_the_dashboard_is_for_members_only(request, team, persona, status):
    user = request.getfixturevalue(persona)
    assert csrf_client(user).get(f"/t/{team.slug}/").status_code == status


def test_an_owner_invites_and_the_invitee_joins_with_the_given_role(owner, team, outsider):
    outsider.email = "o@example.com"  # an invitation is accepted by the account with the invited address
    outsider.save()
    client = csrf_client(owner)
    response = post_form(
        client, f"/t/{team.slug}/admin/", {"action": "invite", "email": "o@example.com", "role": "viewer"}
    )
    link = response.context["invite_link"]
    raw = link.rstrip("/").rsplit("/", 1)[1]
    assert Invitation.objects.get().digest == hash_token(raw)
    joined = post_form(csrf_client(outsider), f"/invite/{raw}/", {})
    assert joined.status_code == 302
    assert Membership.objects.get(team=team, user=outsider).role == Role.VIEWER
    again = post_form(csrf_client(outsider), f"/invite/{raw}/", {})
    assert again.status_code == 302 and again["Location"] == "/"


def test_an_owner_changes_a_role(owner, teammate, team):
    membership = Membership.objects.get(team=team, user=teammate)
    post_form(
        csrf_client(owner), f"/t/{team.slug}/admin/", {"action": "role", "membership": membership.pk, "role": "viewer"}
    )
    membership.refresh_from_db()
    assert membership.role == Role.VIEWER


def test_removing_a_member_asks_for_the_password_again(owner, teammate, team):
    membership = Membership.objects.get(team=team, user=teammate)
    url = f"/t/{team.slug}/admin/"
    post_form(csrf_client(owner), url, {"action": "remove", "membership": membership.pk, "password": "wrong"})
    assert Membership.objects.filter(pk=membership.pk).exists()
    post_form(csrf_client(owner), url, {"action": "remove", "membership": membership.pk, "password": PASSWORD})
    assert not Membership.objects.filter(pk=membership.pk).exists()


def test_the_last_owner_cannot_be_removed_or_demoted(owner, team):
    membership = Membership.objects.get(team=team, user=owner)
    url = f"/t/{team.slug}/admin/"
    response = post_form(csrf_client(owner), url, {"action": "role", "membership": membership.pk, "role": "member"})
    assert b"at least one owner" in response.content
    post_form(csrf_client(owner), url, {"action": "remove", "membership": membership.pk, "password": PASSWORD})
    membership.refresh_from_db()
    assert membership.role == Role.OWNER


def test_an_owner_cannot_touch_a_membership_of_another_team(owner, outsider, team):
    other = Membership.objects.get(user=outsider)
    response = post_form(
        csrf_client(owner), f"/t/{team.slug}/admin/", {"action": "role", "membership": other.pk, "role": "viewer"}
    )
    assert response.status_code == 404
    other.refresh_from_db()
    assert other.role == Role.OWNER


def test_api_tokens_are_shown_once_and_stored_hashed(owner, team):
    url = f"/t/{team.slug}/admin/"
    refused = post_form(csrf_client(owner), url, {"action": "token", "name": "ci", "password": "wrong"})
    assert not ApiToken.objects.exists() and b"wrong password" in refused.content
    response = post_form(csrf_client(owner), url, {"action": "token", "name": "ci", "password": PASSWORD})
    raw = response.context["new_token"]
    token = ApiToken.objects.get()
    assert token.digest == hash_token(raw)
    assert raw not in str(ApiToken.objects.values_list()[0])
    page = csrf_client(owner).get(url)
    assert raw.encode() not in page.content
