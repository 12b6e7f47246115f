"""Every route of the arena, classified by who may reach it, and how the red team's objects fill them in.

The access sweep (test_access_sweep) checks that each route answers every persona as classified here and
that none is left out; the hostile fuzz (test_hostile_fuzz) sends each of them values nobody should.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from django.test import Client

from arena.teams.models import Role, Team
from tests.helpers import csrf_client

# --- Classification ------------------------------------------------------------------------

PUBLIC = "public"  # anyone, signed in or not
SIGNED_IN = "signed-in"  # any signed-in user; shows only the user's own teams
STAFF = "staff"  # staff only; a 404 (or the admin's login page) to anyone else
TOKEN = "token"  # bearer-token API outside /api/v1/, scoped to the token's team
WHOLE = {"admin/": STAFF, "api/v1/": "ninja"}  # resolvers classified as a whole (the API op by op below)


@dataclass(frozen=True)
class TeamRoute:
    """A page of one team: the role GET needs and the role a POST (a write) needs; None: not served."""

    get: str | None = Role.VIEWER
    post: str | None = None
    # Served but not a write: a POST renders the same page as a GET (views without a method filter).
    post_reads: bool = False


PAGE_ROUTES: dict[str, str | TeamRoute] = {
    "": SIGNED_IN,
    "healthz": PUBLIC,
    "ops/": STAFF,
    "admin/": STAFF,
    "api/v1/": "ninja",
    "v1/models": TOKEN,
    "v1/models/<path:model_id>": TOKEN,
    "v1/chat/completions": TOKEN,
    "v1/completions": TOKEN,
    "login/": PUBLIC,
    "logout/": PUBLIC,
    "signup/": PUBLIC,
    "teams/new/": SIGNED_IN,
    "invite/<str:token>/": SIGNED_IN,
    "t/<slug:team>/": TeamRoute(post_reads=True),
    "t/<slug:team>/admin/": TeamRoute(get=Role.OWNER, post=Role.OWNER),
    "t/<slug:team>/delete/": TeamRoute(get=Role.OWNER, post=Role.OWNER),
    "t/<slug:team>/entries/": TeamRoute(get=None, post=Role.MEMBER),
    "t/<slug:team>/entries/<int:entry_id>/": TeamRoute(post_reads=True),
    "t/<slug:team>/entries/<int:entry_id>/materialize/": TeamRoute(get=None, post=Role.MEMBER),
    "t/<slug:team>/entries/<int:entry_id>/archive/": TeamRoute(get=None, post=Role.MEMBER),
    "t/<slug:team>/entries/<int:entry_id>/unarchive/": TeamRoute(get=None, post=Role.MEMBER),
    "t/<slug:team>/entries/<int:entry_id>/delete/": TeamRoute(get=Role.MEMBER, post=Role.MEMBER),
    "t/<slug:team>/entries/<int:entry_id>/shadow/": TeamRoute(get=None, post=Role.MEMBER),
    "t/<slug:team>/suites/": TeamRoute(post_reads=True),
    "t/<slug:team>/suites/upload/": TeamRoute(get=None, post=Role.MEMBER),
    "t/<slug:team>/suites/<int:suite_id>/": TeamRoute(post_reads=True),
    "t/<slug:team>/suites/builtin/": TeamRoute(get=None, post=Role.MEMBER),
    "t/<slug:team>/suites/<int:suite_id>/archive/": TeamRoute(get=None, post=Role.MEMBER),
    "t/<slug:team>/suites/<int:suite_id>/unarchive/": TeamRoute(get=None, post=Role.MEMBER),
    "t/<slug:team>/suites/<int:suite_id>/delete/": TeamRoute(get=Role.MEMBER, post=Role.MEMBER),
    "t/<slug:team>/runs/": TeamRoute(get=None, post=Role.MEMBER),
    "t/<slug:team>/runs/<int:run_id>/": TeamRoute(post_reads=True),
    "t/<slug:team>/runs/<int:run_id>/retry/": TeamRoute(get=None, post=Role.MEMBER),
    "t/<slug:team>/runs/<int:run_id>/delete/": TeamRoute(get=Role.MEMBER, post=Role.MEMBER),
    "t/<slug:team>/runs/<int:run_id>/items/": TeamRoute(post_reads=True),
    "t/<slug:team>/runs/<int:run_id>/items/<int:item_id>/": TeamRoute(post_reads=True),
    "t/<slug:team>/leaderboard/<slug:suite>/": TeamRoute(post_reads=True),
    "t/<slug:team>/leaderboard/": TeamRoute(post_reads=True),
    "t/<slug:team>/compare/": TeamRoute(post_reads=True),
    "t/<slug:team>/queue/": TeamRoute(post_reads=True),
    "t/<slug:team>/schedules/": TeamRoute(post=Role.MEMBER),
    "t/<slug:team>/schedules/<int:schedule_id>/": TeamRoute(post=Role.MEMBER),
    "t/<slug:team>/schedules/<int:schedule_id>/delete/": TeamRoute(get=None, post=Role.MEMBER),
    "t/<slug:team>/schedules/<int:schedule_id>/run/": TeamRoute(get=None, post=Role.MEMBER),
    "t/<slug:team>/schedules/webhook/": TeamRoute(get=None, post=Role.OWNER),
    "t/<slug:team>/runs/<int:run_id>/searches/": TeamRoute(post=Role.MEMBER),
    "t/<slug:team>/searches/<int:search_id>/": TeamRoute(post_reads=True),
    "t/<slug:team>/searches/<int:search_id>/register/": TeamRoute(get=None, post=Role.MEMBER),
}


@dataclass(frozen=True)
class ApiOp:
    """A JSON API operation: the token role it needs and a valid body (writes need one to get past validation)."""

    role: str = Role.VIEWER
    body: dict | None = None
    # URL arguments other than the red fixture's: the object the operation succeeds on.
    values: dict = field(default_factory=dict)


# An endpoint is registered once it answers a test call: a body names the red fixture's loopback endpoint
# by this placeholder, which fill_body replaces.
ENDPOINT = "{endpoint}"


def fill_body(body: dict | None, values: dict) -> dict | None:
    """The body with ENDPOINT replaced by the address of the red fixture's endpoint."""
    return None if body is None else json.loads(json.dumps(body).replace(ENDPOINT, values["endpoint"]))


def _suite_upload_body(name: str) -> dict:
    manifest = (
        f"name: {name}\nversion: '1'\ntask_type: generation\nprompt_template: 'Q: {{input}}'\n"
        "answer_extraction: first_line\nmetric: exact_match\n"
    )
    items = "".join(
        json.dumps({"id": str(i), "input": f"{i}+1", "reference": str(i + 1), "split": "test"}) + "\n" for i in range(3)
    )
    return {"format": "suite", "files": {"manifest": manifest, "items": items}}


API_OPERATIONS: dict[tuple[str, str], ApiOp] = {
    ("GET", "/entries"): ApiOp(),
    ("POST", "/entries"): ApiOp(
        Role.MEMBER,
        {"name": "new-model", "kind": "openai", "config": {"base_url": ENDPOINT, "model": "m"}},
    ),
    ("PUT", "/entries/{name}"): ApiOp(Role.MEMBER, {"kind": "openai", "config": {"base_url": ENDPOINT, "model": "m2"}}),
    ("POST", "/entries/{name}/archive"): ApiOp(Role.MEMBER),
    ("POST", "/entries/{name}/unarchive"): ApiOp(Role.MEMBER),
    # A blend: red-model-a is one of its members, which refuses (409) its deletion.
    ("DELETE", "/entries/{name}"): ApiOp(Role.MEMBER, values={"name": "red-blend"}),
    ("POST", "/blends"): ApiOp(
        Role.MEMBER, {"name": "new-blend", "strategy": "majority_vote", "members": ["red-model-a", "red-model-b"]}
    ),
    ("GET", "/suites"): ApiOp(),
    ("POST", "/suites"): ApiOp(Role.MEMBER, _suite_upload_body("swept")),
    ("POST", "/suites/builtin"): ApiOp(Role.MEMBER, {"name": "arithmetic", "size": 4, "seed": 7}),
    ("POST", "/suites/{suite_id}/archive"): ApiOp(Role.MEMBER),
    ("POST", "/suites/{suite_id}/unarchive"): ApiOp(Role.MEMBER),
    ("DELETE", "/suites/{suite_id}"): ApiOp(Role.MEMBER),
    ("POST", "/runs"): ApiOp(Role.MEMBER, {"suite": "arithmetic", "entries": ["red-model-a"]}),
    ("GET", "/runs"): ApiOp(),
    ("GET", "/runs/{run_id}"): ApiOp(),
    ("GET", "/runs/{run_id}/items"): ApiOp(),
    ("POST", "/runs/{run_id}/retry"): ApiOp(Role.MEMBER),
    ("DELETE", "/runs/{run_id}"): ApiOp(Role.MEMBER),
    ("GET", "/leaderboard/{suite}"): ApiOp(),
    ("GET", "/schedules"): ApiOp(),
    ("POST", "/schedules"): ApiOp(
        Role.MEMBER, {"name": "new-schedule", "suite": "arithmetic", "entries": ["red-model-a"]}
    ),
    ("GET", "/schedules/{schedule_id}"): ApiOp(),
    ("PUT", "/schedules/{schedule_id}"): ApiOp(
        Role.MEMBER, {"name": "red-nightly", "suite": "arithmetic", "entries": ["red-model-b"], "cron": "0 3 * * *"}
    ),
    ("DELETE", "/schedules/{schedule_id}"): ApiOp(Role.MEMBER),
    ("POST", "/schedules/{schedule_id}/run"): ApiOp(Role.MEMBER),
    ("GET", "/notifications"): ApiOp(Role.OWNER),
    ("PUT", "/notifications"): ApiOp(Role.OWNER, {"webhook_url": "https://hooks.example.com/arena"}),
    ("GET", "/queue"): ApiOp(),
    ("GET", "/merges"): ApiOp(),
    ("GET", "/merges/{merge}"): ApiOp(),
    ("POST", "/merges/{merge}/materialize"): ApiOp(Role.MEMBER),
    ("POST", "/runs/{run_id}/searches"): ApiOp(
        Role.MEMBER, {"members": ["red-model-a", "red-model-b"], "budget_metric": "calls", "budget": 1.5}
    ),
    ("GET", "/searches/{search_id}"): ApiOp(),
    ("GET", "/shadows/{name}"): ApiOp(),
    ("PUT", "/shadows/{name}"): ApiOp(Role.MEMBER, {"shadow": "red-blend", "rate": 0.5}),
    ("DELETE", "/shadows/{name}"): ApiOp(Role.MEMBER),
}

# Websocket routes: every one is a team's live channel, open to its members (any role).
WS_ROUTES = {"ws/t/<slug:team>/runs/<int:run_id>/", "ws/t/<slug:team>/leaderboard/<slug:suite>/"}

# Strings only the red team's data contains: none may reach a blue client.
RED_MARKERS = ("red-model-a", "red-model-b", "red-blend", "red-merge")


# --- The red team's objects ----------------------------------------------------------------


@dataclass
class Red:
    team: Team
    values: dict = field(default_factory=dict)  # URL argument name -> the red object's id or name


ARGUMENT = re.compile(r"<(?:\w+:)?(\w+)>|\{(?:\w+:)?(\w+)\}")  # <conv:name> (Django) or {name} (OpenAPI)


def arguments(route: str) -> set[str]:
    return {a or b for a, b in ARGUMENT.findall(route)}


def fill(route: str, values: dict) -> str:
    """The route with every argument replaced by the red object's id or name."""
    missing = arguments(route) - set(values)
    assert not missing, f"the sweep has no red object for URL arguments {missing}: add them to the red fixture"
    return "/" + ARGUMENT.sub(lambda match: str(values[match.group(1) or match.group(2)]), route).lstrip("/")


def shows_red(response) -> bool:
    return any(marker.encode() in response.content for marker in RED_MARKERS)


def client_for(user) -> Client:
    client = csrf_client(user)
    client.get("/login/")  # the CSRF cookie a browser would hold
    return client


def post_with_token(client: Client, url: str, data: dict | None = None):
    return client.post(url, {**(data or {}), "csrfmiddlewaretoken": client.cookies["csrftoken"].value})


PERSONA_ROLE = {"viewer": Role.VIEWER, "teammate": Role.MEMBER, "owner": Role.OWNER}
