"""Invitations bound to the invited address, and API tokens with a role, an expiry, a last use and a
limit on bad ones, read the same way by /api/v1 and /v1."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from arena.teams.models import ApiToken, Invitation, Membership, Role, Team
from tests.factories import UserFactory
from tests.helpers import PASSWORD, csrf_client, post_form

pytestmark = pytest.mark.django_db

ACCEPT = b"Accept invitation"


def invite(owner, team, email="ivy@example.com", role="viewer") -> str:
    """The path of a new invitation's link, sent from the team admin page."""
    response = post_form(
        csrf_client(owner), f"/t/{team.slug}/admin/", {"action": "invite", "email": email, "role": role}
    )
    link = response.context["invite_link"]
    return "/invite/" + link.rstrip("/").rsplit("/", 1)[1] + "/"


def user_with_email(username: str, email: str):
    return UserFactory(username=username, email=email)


# --- invitations ---------------------------------------------------------------------------------


def test_an_invitation_names_its_team_role_and_inviter_to_the_invited_account(owner, team):
    path = invite(owner, team)
    page = csrf_client(user_with_email("ivy", "ivy@example.com")).get(path)
    assert page.status_code == 200 and ACCEPT in page.content
    text = page.content.decode()
    assert (
        "olivia invited <strong>ivy@example.com</strong> to <strong>Red team</strong> as <strong>viewer</strong>"
        in text
    )


def test_an_anonymous_visitor_logs_in_or_signs_up_and_comes_back(owner, team):
    path = invite(owner, team)
    for response in (csrf_client().get(path), post_form(csrf_client(), path, {})):
        assert response.status_code == 302 and response["Location"] == f"/login/?next={path}"
    assert not Membership.objects.filter(team=team).exclude(user__username__in=["olivia", "tom", "vera"]).exists()
    login_page = csrf_client().get(f"/login/?next={path}")
    assert f'href="/signup/?next={path}"'.encode() in login_page.content


def test_an_invitation_for_one_address_is_refused_to_an_account_with_another(owner, team, outsider):
    path = invite(owner, team)
    outsider.email = "oscar@example.com"
    outsider.save()
    page = csrf_client(outsider).get(path)
    refusal = b"This invitation is for ivy@example.com, and you are signed in as oscar (oscar@example.com)"
    assert page.status_code == 200 and refusal in page.content
    # Only the invited account learns which team it is and who sent it.
    assert ACCEPT not in page.content and b"Red team" not in page.content and b"olivia" not in page.content
    refused = post_form(csrf_client(outsider), path, {})
    assert refused.status_code == 403 and refusal in refused.content and b"Red team" not in refused.content
    assert not Membership.objects.filter(team=team, user=outsider).exists()
    assert Invitation.objects.get().accepted_at is None
    # The invited address, in any case, joins with the invited role.
    ivy = user_with_email("ivy", "Ivy@Example.com")
    joined = post_form(csrf_client(ivy), path, {})
    assert joined.status_code == 302 and joined["Location"] == f"/t/{team.slug}/"
    assert Membership.objects.get(team=team, user=ivy).role == Role.VIEWER
    assert Invitation.objects.get().accepted_at is not None


def test_an_account_without_an_address_is_refused_and_told_what_to_do(owner, team, outsider):
    path = invite(owner, team)
    page = csrf_client(outsider).get(path)
    assert b"your account oscar has no email address" in page.content and ACCEPT not in page.content
    assert b"Red team" not in page.content
    assert post_form(csrf_client(outsider), path, {}).status_code == 403
    assert not Membership.objects.filter(team=team, user=outsider).exists()


@pytest.mark.parametrize("state", ["used", "expired", "unknown"])
def test_a_used_expired_or_unknown_link_is_no_longer_valid_and_has_no_accept_button(owner, team, outsider, state):
    path = invite(owner, team, email="oscar@example.com")
    outsider.email = "oscar@example.com"
    outsider.save()
    if state == "used":
        assert post_form(csrf_client(outsider), path, {}).status_code == 302
    elif state == "expired":
        Invitation.objects.update(created_at=timezone.now() - Invitation.LIFETIME - timedelta(minutes=1))
    else:
        path = "/invite/not-a-real-invitation/"
    latecomer = user_with_email("late", "oscar@example.com")
    for user in (outsider, latecomer):
        page = csrf_client(user).get(path)
        assert page.status_code == 404
        assert b"no longer valid" in page.content and ACCEPT not in page.content
    assert b"Red team" not in csrf_client(latecomer).get(path).content
    response = post_form(csrf_client(latecomer), path, {})
    assert response.status_code == 302 and response["Location"] == "/"
    assert not Membership.objects.filter(user=latecomer).exists()


def test_an_expired_invitation_is_no_longer_listed_as_pending(owner, team):
    invite(owner, team)
    assert b"Pending: ivy@example.com" in csrf_client(owner).get(f"/t/{team.slug}/admin/").content
    Invitation.objects.update(created_at=timezone.now() - Invitation.LIFETIME)
    assert b"Pending:" not in csrf_client(owner).get(f"/t/{team.slug}/admin/").content


def test_an_invitation_to_a_bad_address_stores_nothing(owner, team):
    url = f"/t/{team.slug}/admin/"
    for email in ("not an address", "ivy@exa\nmple.com", "", "ivy@" + "x" * 300 + ".com"):
        response = post_form(csrf_client(owner), url, {"action": "invite", "email": email})
        assert b"enter a valid email address" in response.content
    refused = post_form(csrf_client(owner), url, {"action": "invite", "email": "ivy@example.com\x00"})
    assert refused.status_code == 400 and b"email: must not contain NUL characters" in refused.content
    assert not Invitation.objects.exists()


def test_next_survives_sign_up_and_the_new_account_lands_on_the_invitation(owner, team):
    path = invite(owner, team)
    client = csrf_client()
    form = client.get(f"/signup/?next={path}&email=ivy@example.com")
    assert f'name="next" value="{path}"'.encode() in form.content and b'value="ivy@example.com"' in form.content
    signed_up = post_form(
        client,
        f"/signup/?next={path}",
        {"username": "ivy", "email": "ivy@example.com", "password1": PASSWORD, "password2": PASSWORD, "next": path},
    )
    assert signed_up.status_code == 302 and signed_up["Location"] == path
    assert ACCEPT in client.get(path).content
    joined = post_form(client, path, {})
    assert joined["Location"] == f"/t/{team.slug}/"
    assert Membership.objects.get(team=team, user__username="ivy").role == Role.VIEWER


def test_next_survives_sign_in(owner, team):
    path = invite(owner, team)
    ivy = user_with_email("ivy", "ivy@example.com")
    client = csrf_client()
    login_page = client.get(f"/login/?next={path}")
    assert f'name="next" value="{path}"'.encode() in login_page.content
    assert f'href="/signup/?next={path}"'.encode() in login_page.content
    logged_in = post_form(client, "/login/", {"username": ivy.username, "password": PASSWORD, "next": path})
    assert logged_in.status_code == 302 and logged_in["Location"] == path


def test_sign_up_does_not_follow_next_to_another_site():
    client = csrf_client()
    response = post_form(
        client,
        "/signup/",
        {"username": "newbie", "password1": PASSWORD, "password2": PASSWORD, "next": "https://evil.example/"},
    )
    assert response.status_code == 302 and response["Location"] == "/teams/new/"


# --- tokens --------------------------------------------------------------------------------------


def new_token(owner, team, **fields) -> tuple[str | None, bytes]:
    """A token made on the team admin page: (its plain text or None, the page)."""
    data = {"action": "token", "name": "ci", "password": PASSWORD, **fields}
    response = post_form(csrf_client(owner), f"/t/{team.slug}/admin/", data)
    return response.context["new_token"], response.content


def bearer(raw: str, scheme: str = "Bearer") -> dict:
    return {"HTTP_AUTHORIZATION": f"{scheme} {raw}"}


def v1_models(client, headers: dict):
    return client.get("/v1/models", **headers)


def test_an_owner_chooses_a_tokens_role_and_expiry(owner, team):
    raw, _ = new_token(owner, team, role="viewer", expires="30")
    token = ApiToken.objects.get()
    assert token.role == Role.VIEWER and token.created_by == owner
    assert abs(token.expires_at - (timezone.now() + timedelta(days=30))) < timedelta(minutes=1)
    page = csrf_client(owner).get(f"/t/{team.slug}/admin/").content.decode()
    assert f"{token.expires_at:%Y-%m-%d %H:%M}" in page and ">viewer<" in page
    # No role or expiry given: a member token that never expires, as tokens were before.
    new_token(owner, team, name="plain")
    plain = ApiToken.objects.get(name="plain")
    assert plain.role == Role.MEMBER and plain.expires_at is None


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"role": "owner"}, b"a token&#x27;s role is one of viewer, member"),
        ({"role": "admin"}, b"a token&#x27;s role is one of viewer, member"),
        ({"expires": "3"}, b"a token expires after 7, 30, 90, 365 days, or never"),
        ({"expires": "-7"}, b"a token expires after"),
        ({"expires": "soon"}, b"a number of days, or empty for never"),
        ({"expires": "9" * 5000}, b"a number of days, or empty for never"),
        ({"name": "c\u200bi"}, b"names are printable on one line"),
        ({"name": "x" * 101}, b"names are at most 100 characters"),
    ],
)
def test_a_bad_token_role_expiry_or_name_is_refused_and_stores_nothing(owner, team, fields, message):
    raw, page = new_token(owner, team, **fields)
    assert raw is None and message in page
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("name", ["ci\x00", "ci\x1b[2J"])
def test_a_control_character_in_a_token_name_is_a_400_and_stores_nothing(owner, team, name):
    data = {"action": "token", "name": name, "password": PASSWORD}
    assert post_form(csrf_client(owner), f"/t/{team.slug}/admin/", data).status_code == 400
    assert not ApiToken.objects.exists()


@pytest.mark.parametrize("persona, status", [("teammate", 403), ("viewer", 403), ("outsider", 404)])
def test_only_owners_create_or_revoke_tokens(request, team, persona, status):
    token, _ = ApiToken.issue(team, "ci")
    client = csrf_client(request.getfixturevalue(persona))
    url = f"/t/{team.slug}/admin/"
    assert post_form(client, url, {"action": "token", "name": "mine", "password": PASSWORD}).status_code == status
    assert post_form(client, url, {"action": "revoke", "token": token.pk}).status_code == status
    assert list(ApiToken.objects.all()) == [token]


def test_a_viewer_token_reads_but_cannot_write_on_the_api(owner, team, client):
    raw, _ = new_token(owner, team, role="viewer")
    assert client.get("/api/v1/entries", **bearer(raw)).status_code == 200
    body = '{"name": "x", "kind": "openai", "config": {"base_url": "http://h/v1", "model": "m"}}'
    refused = client.post("/api/v1/entries", body, content_type="application/json", **bearer(raw))
    assert refused.status_code == 403 and "needs member" in refused.json()["detail"]
    assert not team.entries.exists()


def test_a_viewer_token_may_call_v1_which_only_serves(owner, team, client):
    # /v1 answers from the team's entries and changes none of them, so a viewer's token may call it.
    raw, _ = new_token(owner, team, role="viewer")
    assert v1_models(client, bearer(raw)).status_code == 200
    body = '{"model": "no-such-entry", "messages": [{"role": "user", "content": "hi"}]}'
    response = client.post("/v1/chat/completions", body, content_type="application/json", **bearer(raw))
    assert response.status_code == 404 and response.json()["error"]["param"] == "model"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive_on_both_apis(team, client, scheme):
    _, raw = ApiToken.issue(team, "ci")
    assert client.get("/api/v1/entries", **bearer(raw, scheme)).status_code == 200
    assert v1_models(client, bearer(raw, scheme)).status_code == 200
    spaced = {"HTTP_AUTHORIZATION": f"  {scheme}   {raw}  "}
    assert client.get("/api/v1/entries", **spaced).status_code == 200
    assert v1_models(client, spaced).status_code == 200


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer   ", "Basic dG9tOnB3", "Token {raw}", "{raw}"])
def test_anything_but_a_bearer_token_is_401_on_both_apis(team, client, header):
    _, raw = ApiToken.issue(team, "ci")
    headers = {"HTTP_AUTHORIZATION": header.format(raw=raw)}
    assert client.get("/api/v1/entries", **headers).status_code == 401
    response = v1_models(client, headers)
    assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"


def test_an_expired_token_gets_401_on_both_apis(team, client):
    token, raw = ApiToken.issue(team, "ci", expires_at=timezone.now() + timedelta(days=1))
    assert client.get("/api/v1/entries", **bearer(raw)).status_code == 200
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    refused = client.get("/api/v1/entries", **bearer(raw))
    assert refused.status_code == 401 and "expired" in refused.json()["detail"]
    assert refused["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    served = v1_models(client, bearer(raw))
    assert served.status_code == 401 and "expired" in served.json()["error"]["message"]


def test_a_revoked_token_gets_401_on_both_apis(owner, team, client):
    token, raw = ApiToken.issue(team, "ci")
    assert client.get("/api/v1/entries", **bearer(raw)).status_code == 200
    page = post_form(csrf_client(owner), f"/t/{team.slug}/admin/", {"action": "revoke", "token": token.pk})
    assert b"Token revoked." in page.content and not ApiToken.objects.exists()
    assert client.get("/api/v1/entries", **bearer(raw)).status_code == 401
    assert v1_models(client, bearer(raw)).status_code == 401


def test_a_tokens_last_use_updates_on_both_apis_and_shows_on_the_admin_page(owner, team, client):
    token, raw = ApiToken.issue(team, "ci")
    url = f"/t/{team.slug}/admin/"
    assert b'<td class="last-used">never</td>' in csrf_client(owner).get(url).content
    client.get("/api/v1/entries", **bearer(raw))
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None and timezone.now() - first < timedelta(minutes=1)
    assert f'<td class="last-used">{first:%Y-%m-%d %H:%M}</td>'.encode() in csrf_client(owner).get(url).content
    v1_models(client, bearer(raw))
    token.refresh_from_db()
    assert token.last_used_at > first


def test_repeated_bad_tokens_from_one_address_get_429_on_both_apis(team, client, settings):
    settings.ARENA_TOKEN_FAILURE_LIMIT = 3
    _, raw = ApiToken.issue(team, "ci")
    for path in ("/api/v1/entries", "/v1/models", "/api/v1/suites"):
        assert client.get(path, **bearer("arena_guess")).status_code == 401
    # Past the limit every token from that address waits, the right one too (a guesser learns nothing).
    locked = client.get("/api/v1/entries", **bearer("arena_guess"))
    assert locked.status_code == 429 and locked["Retry-After"] == str(settings.ARENA_TOKEN_COOLOFF_S)
    assert client.get("/api/v1/entries", **bearer(raw)).status_code == 429
    served = v1_models(client, bearer(raw))
    assert served.status_code == 429 and served.json()["error"]["type"] == "rate_limit_error"
    # Another address is not held up, and a good token there counts no failure.
    assert client.get("/api/v1/entries", REMOTE_ADDR="10.0.0.7", **bearer(raw)).status_code == 200


def test_good_tokens_and_requests_without_one_count_no_failures(team, client, settings):
    settings.ARENA_TOKEN_FAILURE_LIMIT = 2
    _, raw = ApiToken.issue(team, "ci")
    for _ in range(5):
        assert client.get("/api/v1/entries", **bearer(raw)).status_code == 200
        assert client.get("/api/v1/entries").status_code == 401
    assert client.get("/api/v1/entries", **bearer("arena_guess")).status_code == 401
    assert client.get("/api/v1/entries", **bearer(raw)).status_code == 200


def test_another_teams_token_reads_only_its_own_team(team, client):
    _, blue = ApiToken.issue(Team.objects.get(slug="blue"), "blue", role=Role.VIEWER)
    team.entries.create(name="red-only", kind="openai", config={"base_url": "http://h/v1", "model": "m"})
    assert client.get("/api/v1/entries", **bearer(blue)).json() == []
    assert v1_models(client, bearer(blue)).json()["data"] == []
