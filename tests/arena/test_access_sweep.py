"""Every route, every persona: nobody reaches what is not theirs, and a new route cannot skip the check.

The routes are read from the URL configuration, the JSON API's OpenAPI document and the ASGI
websocket router, and each must be classified in tests/arena/routes.py. A route added without a classification fails
`test_every_route_is_classified` (and its own sweep case), so it cannot ship unchecked.

For each team route the sweep fills in the ids of the red team's objects and asserts: an outsider
gets 404 (also through their own team's slug), an anonymous visitor is sent to the login page,
a viewer reads but cannot POST (403) where a member can, and nobody below the needed role changes
a single row.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from django.apps import apps
from django.test import Client
from django.urls import URLResolver, get_resolver

from arena.teams.models import ROLE_RANK, ApiToken, Role, Team
from tests.arena.routes import (
    API_OPERATIONS,
    PAGE_ROUTES,
    PERSONA_ROLE,
    PUBLIC,
    SIGNED_IN,
    STAFF,
    WHOLE,
    WS_ROUTES,
    TeamRoute,
    arguments,
    client_for,
    fill,
    fill_body,
    post_with_token,
    shows_red,
)
from tests.factories import UserFactory
from tests.helpers import csrf_client, row_counts

# --- Discovery -----------------------------------------------------------------------------


def discovered_page_routes(resolver=None, prefix: str = "") -> list[str]:
    routes = []
    for pattern in (resolver or get_resolver()).url_patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver) and route not in WHOLE:
            routes.extend(discovered_page_routes(pattern, route))
        else:
            routes.append(route)
    return routes


def discovered_api_operations() -> set[tuple[str, str]]:
    from arena.api import api

    schema = api.get_openapi_schema()
    # The document also describes /v1 (its views are classified in PAGE_ROUTES as TOKEN routes).
    return {
        (method.upper(), path.removeprefix("/api/v1"))
        for path, operations in schema["paths"].items()
        if path.startswith("/api/v1/")
        for method in operations
    }


def discovered_ws_routes() -> set[str]:
    from arena.asgi import application

    app = application.application_mapping["websocket"]
    while not hasattr(app, "routes"):  # origin validator, cookies, session, auth: down to the URLRouter
        app = getattr(app, "application", None) or app.inner
    return {str(route.pattern) for route in app.routes}


def test_every_route_is_classified():
    routes = discovered_page_routes()
    unclassified = sorted(set(routes) - set(PAGE_ROUTES))
    gone = sorted(set(PAGE_ROUTES) - set(routes))
    assert not unclassified, f"classify these routes in PAGE_ROUTES ({routes.__name__}): {unclassified}"
    assert not gone, f"these classified routes no longer exist: {gone}"
    api_ops = discovered_api_operations()
    assert not api_ops - set(API_OPERATIONS), (
        f"classify these API operations in API_OPERATIONS: {sorted(api_ops - set(API_OPERATIONS))}"
    )
    assert not set(API_OPERATIONS) - api_ops, f"gone from the API: {sorted(set(API_OPERATIONS) - api_ops)}"
    assert discovered_ws_routes() == WS_ROUTES


# --- Pages ---------------------------------------------------------------------------------

TEAM_PAGES = sorted(r for r, kind in PAGE_ROUTES.items() if isinstance(kind, TeamRoute))


@pytest.mark.django_db
@pytest.mark.parametrize("route", TEAM_PAGES)
def test_team_page_answers_each_persona_as_its_role_allows(request, red, route):
    access = PAGE_ROUTES[route]
    url = fill(route, red.values)
    before = row_counts()

    # Outsiders: 404 on whatever the page serves, through the red slug and through their own.
    outsider = client_for(request.getfixturevalue("outsider"))
    blue_url = fill(route, {**red.values, "team": "blue"})
    for method, served in (("get", access.get), ("post", access.post or access.post_reads)):
        if not served:
            continue
        send = outsider.get if method == "get" else (lambda u: post_with_token(outsider, u))
        assert send(url).status_code == 404, f"outsider {method.upper()} {url}"
        if arguments(route) - {"team"}:
            # Red's ids through blue's own slug: still nothing of red's.
            response = send(blue_url)
            assert response.status_code == 404 or not shows_red(response), f"outsider {method.upper()} {blue_url}"
    # Anonymous visitors: to the login page.
    anonymous = client_for(None)
    for response in (anonymous.get(url), post_with_token(anonymous, url)):
        assert response.status_code == 302 and response["Location"].startswith("/login/"), url
    assert row_counts() == before, "an outsider or anonymous request changed rows"

    for persona, role in PERSONA_ROLE.items():
        client = client_for(request.getfixturevalue(persona))
        if access.get is None:
            assert client.get(url).status_code == 405, f"{persona} GET {url}"
        else:
            status = client.get(url).status_code
            expected = 200 if ROLE_RANK[role] >= ROLE_RANK[access.get] else 403
            assert status == expected, f"{persona} GET {url}: {status}, expected {expected}"
        if access.post is not None and ROLE_RANK[role] <= ROLE_RANK[access.post]:
            # Lower roles are refused; the role itself gets through (a higher one may find the row
            # already changed by it, so it is not asked).
            before = row_counts()
            status = post_with_token(client, url).status_code
            if ROLE_RANK[role] < ROLE_RANK[access.post]:
                assert status == 403, f"{persona} POST {url}: {status}, expected 403"
                assert row_counts() == before, f"{persona}'s refused POST to {url} changed rows"
            else:
                assert status not in (403, 404, 405) and status < 500, f"{persona} POST {url}: {status}"


@pytest.mark.django_db
@pytest.mark.parametrize("route", sorted(r for r, kind in PAGE_ROUTES.items() if kind == SIGNED_IN))
def test_signed_in_pages_send_anonymous_visitors_to_log_in_and_show_outsiders_nothing_of_red(request, red, route):
    url = fill(route, red.values)
    response = client_for(None).get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/")
    response = client_for(request.getfixturevalue("outsider")).get(url)
    assert response.status_code < 400
    assert not shows_red(response) and b"Red team" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("route", sorted(r for r, kind in PAGE_ROUTES.items() if kind == STAFF))
def test_staff_pages_are_closed_to_everyone_else(request, red, route):
    url = fill(route, red.values)
    for persona in (None, "owner", "outsider"):
        user = request.getfixturevalue(persona) if persona else None
        response = client_for(user).get(url)
        # The ops page answers 404; Django's admin answers with its own login page.
        assert response.status_code == 404 or (
            response.status_code == 302 and response["Location"].startswith("/admin/login/")
        ), f"{persona} GET {url}: {response.status_code}"
    staff = UserFactory(username="stella", is_staff=True, is_superuser=True)
    assert client_for(staff).get(url).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("route", sorted(r for r, kind in PAGE_ROUTES.items() if kind == PUBLIC))
def test_public_pages_answer_without_a_login(red, route):
    response = client_for(None).get(fill(route, red.values))
    assert not (response.status_code == 302 and response["Location"].startswith("/login/"))
    assert response.status_code != 404


# --- CSRF ----------------------------------------------------------------------------------

POST_PAGES = sorted(
    r
    for r, kind in PAGE_ROUTES.items()
    if (isinstance(kind, TeamRoute) and kind.post)
    or r in ("login/", "logout/", "signup/", "teams/new/")
    or r.startswith("invite/")
)


@pytest.mark.django_db
@pytest.mark.parametrize("route", POST_PAGES)
def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(owner, red, route):
    client = csrf_client(owner)
    before = row_counts()
    response = client.post(fill(route, red.values), {"name": "csrf-forged", "action": "token", "password": "x"})
    assert response.status_code == 403
    assert b"CSRF" in response.content
    assert row_counts() == before


# --- JSON API ------------------------------------------------------------------------------


def api_call(client: Client, method: str, path: str, token: str | None, body: dict | None = None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
    return getattr(client, method.lower())(f"/api/v1{path}", **kwargs, **headers)


def red_state(team: Team) -> dict:
    """Everything the red team owns, as a comparable value: counts of its rows and its entries' configs."""
    owned = [model for model in apps.get_models() if model.__module__.startswith("arena.") and "team" in _fields(model)]
    state = {model._meta.label: model.objects.filter(team=team).count() for model in owned}
    state["entries"] = sorted(
        (entry.name, entry.kind, json.dumps(entry.config, sort_keys=True)) for entry in team.entries.all()
    )
    return state


def _fields(model) -> set[str]:
    return {f.name for f in model._meta.get_fields()}


@pytest.mark.django_db
@pytest.mark.parametrize("operation", sorted(API_OPERATIONS), ids=lambda op: f"{op[0]} {op[1]}")
def test_api_operation_answers_each_token_as_its_role_allows(client, red, operation):
    method, path = operation
    op = API_OPERATIONS[operation]
    body = fill_body(op.body, red.values)
    url = fill(path, {**red.values, **op.values})
    before = row_counts()
    assert api_call(client, method, url, None, body).status_code == 401
    assert api_call(client, method, url, "arena_not-a-token", body).status_code == 401
    assert row_counts() == before

    # The blue team's most powerful token, aimed at red's ids and names: red's data stays out of
    # reach (404, or blue's own namespace), and whatever blue writes is blue's.
    red_before = red_state(red.team)
    _, blue = ApiToken.issue(Team.objects.get(slug="blue"), "blue", role=Role.OWNER)
    response = api_call(client, method, url, blue, body)
    assert response.status_code < 500
    if method == "GET":
        assert response.status_code == 404 or not shows_red(response), f"blue GET {url}: {response.content[:300]!r}"
    assert red_state(red.team) == red_before

    for lower in (r for r in (Role.VIEWER, Role.MEMBER) if ROLE_RANK[r] < ROLE_RANK[op.role]):
        _, weaker = ApiToken.issue(red.team, f"{lower}-token", role=lower)
        before = row_counts()
        refused = api_call(client, method, url, weaker, body)
        assert refused.status_code == 403, f"{lower} {method} {url}: {refused.status_code} {refused.content[:200]!r}"
        assert row_counts() == before
    _, enough = ApiToken.issue(red.team, "enough", role=op.role)
    allowed = api_call(client, method, url, enough, body)
    assert allowed.status_code < 300, f"{op.role} {method} {url}: {allowed.status_code} {allowed.content[:300]!r}"


@pytest.mark.django_db
def test_the_openai_compatible_endpoint_keeps_each_team_to_its_own_models(client, red):
    _, blue = ApiToken.issue(Team.objects.get(slug="blue"), "blue", role=Role.OWNER)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {blue}"}
    assert client.get("/v1/models").status_code == 401
    listed = client.get("/v1/models", **auth)
    assert listed.status_code == 200 and not shows_red(listed)
    body = json.dumps({"model": "red-model-a", "messages": [{"role": "user", "content": "hi"}]})
    assert client.post("/v1/chat/completions", body, content_type="application/json").status_code == 401
    assert client.post("/v1/chat/completions", body, content_type="application/json", **auth).status_code == 404
    assert client.get("/v1/models/red-model-a", **auth).status_code == 404
    assert client.get("/v1/models/red-model-a").status_code == 401
    prompt = json.dumps({"model": "red-model-a", "prompt": "hi", "max_tokens": 1})
    assert client.post("/v1/completions", prompt, content_type="application/json", **auth).status_code == 404


# --- Websockets ----------------------------------------------------------------------------


def ws_connect(path: str, user=None, origin: bytes = b"http://testserver"):
    """Open a websocket through the real ASGI stack (origin check, session cookie); (accepted, close code)."""
    from channels.testing import WebsocketCommunicator

    from arena.asgi import application

    headers = [(b"origin", origin), (b"host", b"testserver")]
    if user is not None:
        session = Client()
        session.force_login(user)
        headers.append((b"cookie", f"sessionid={session.cookies['sessionid'].value}".encode()))

    async def attempt():
        communicator = WebsocketCommunicator(application, path, headers=headers)
        connected, code = await communicator.connect(timeout=10)
        await communicator.disconnect()
        return connected, code

    return asyncio.run(attempt())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("route", sorted(WS_ROUTES))
def test_websocket_answers_each_persona_with_its_close_code(request, clean_redis, red, route):
    path = fill(route, red.values)
    assert ws_connect(path) == (False, 4401)
    outsider = request.getfixturevalue("outsider")
    assert ws_connect(path, outsider) == (False, 4404)
    blue_path = fill(route, {**red.values, "team": "blue"})
    if "run_id" in route:
        assert ws_connect(blue_path, outsider) == (False, 4404)  # red's run through blue's slug
    for persona in PERSONA_ROLE:
        assert ws_connect(path, request.getfixturevalue(persona))[0] is True, persona
    # The origin is checked before anything else: a foreign page cannot open the socket for a member.
    assert ws_connect(path, request.getfixturevalue("owner"), origin=b"http://evil.example")[0] is False


@pytest.mark.django_db(transaction=True)
def test_a_member_removed_while_watching_hears_nothing_more_and_is_closed(clean_redis, red, teammate):
    from channels.layers import get_channel_layer
    from channels.testing import WebsocketCommunicator

    from arena.asgi import application
    from arena.evaluations.events import board_group
    from arena.teams.models import Membership

    session = Client()
    session.force_login(teammate)
    headers = [
        (b"origin", b"http://testserver"),
        (b"host", b"testserver"),
        (b"cookie", f"sessionid={session.cookies['sessionid'].value}".encode()),
    ]
    event = {"type": "arena.event", "event": "progress", "run": red.values["run_id"]}

    async def watch():
        from asgiref.sync import sync_to_async

        communicator = WebsocketCommunicator(
            application, f"/ws/t/red/leaderboard/{red.values['suite']}/", headers=headers
        )
        assert (await communicator.connect(timeout=10))[0]
        layer = get_channel_layer()
        await layer.group_send(board_group(red.team.pk, red.values["suite"]), event)
        heard = await communicator.receive_json_from(timeout=10)
        await sync_to_async(Membership.objects.filter(team=red.team, user=teammate).delete)()
        await layer.group_send(board_group(red.team.pk, red.values["suite"]), event)
        closed = await communicator.receive_output(timeout=10)
        await communicator.disconnect()
        return heard, closed

    heard, closed = asyncio.run(watch())
    assert heard["event"] == "progress"
    assert closed == {"type": "websocket.close", "code": 4404}
