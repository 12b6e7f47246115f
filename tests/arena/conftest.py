"""The arena's own fixtures: the JSON API as the red team's token calls it, the red team's objects, and no
login failures left over."""

from __future__ import annotations

import json

import pytest

from arena.evaluations.models import EntryState, State
from arena.registry.models import Kind, Materialization, MergeState
from arena.schedules.services import save_schedule
from arena.search.models import BlendSearch
from arena.teams.models import ApiToken, Invitation, Role, hash_token
from arena.teams.services import forget_token_failures
from tests.arena.routes import Red
from tests.factories import BlendFactory, EntryFactory, RunEntryFactory, RunFactory, SuiteFactory


@pytest.fixture(autouse=True)
def no_token_failures():
    """Every test client calls from 127.0.0.1: one test's bad tokens must not lock the next test out."""
    forget_token_failures("127.0.0.1")
    yield
    forget_token_failures("127.0.0.1")


@pytest.fixture
def api(client, token):
    """Call the JSON API: api("post", "/entries", {...}); ``auth=None`` sends no token."""

    def call(method: str, path: str, body=None, auth=token):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {auth}"} if auth else {}
        kwargs = {"data": json.dumps(body), "content_type": "application/json"} if body is not None else {}
        return getattr(client, method)(f"/api/v1{path}", **kwargs, **headers)

    return call


@pytest.fixture
def red(team, owner, serve) -> Red:
    """The red team with one object of every kind a route can name; its ids and names fill in the routes,
    and a loopback endpoint that answers the test call of an endpoint a route registers."""
    suite = SuiteFactory(team=team, size=4)
    endpoint = {"base_url": "http://127.0.0.1:9/v1"}
    a = EntryFactory(team=team, name="red-model-a", kind=Kind.OPENAI, config={**endpoint, "model": "a"})
    b = EntryFactory(team=team, name="red-model-b", kind=Kind.OPENAI, config={**endpoint, "model": "b"})
    blend = BlendFactory(team=team, name="red-blend", members=[a, b])
    recipe = {"method": "linear", "members": [{"entry": a.name}, {"entry": b.name}]}
    merge = EntryFactory(team=team, name="red-merge", kind=Kind.MERGE, config=recipe)
    Materialization.objects.create(entry=merge, state=MergeState.FAILED, reason="a failed merge can be started again")
    # With dev, as a run of a learned blend has it: a blend search reads dev only. Finished with errors
    # (the merge failed), so that retrying its failed entries is a route to sweep too.
    run = RunFactory(suite=suite, splits=["dev", "test"], state=State.PARTIAL)
    for entry in (a, b, blend):
        RunEntryFactory(run=run, entry=entry, total_items=2, done_items=2, score=0.5, ci_low=0.2, ci_high=0.8, n=2)
    RunEntryFactory(run=run, entry=merge, total_items=2, state=EntryState.FAILED, error="its weights were not built")
    item = suite.items.filter(split="test").first()
    raw_invite = "red-invitation-secret"
    Invitation.objects.create(
        team=team, email="new@example.com", role=Role.MEMBER, digest=hash_token(raw_invite), invited_by=owner
    )
    ApiToken.issue(team, "red-ci")
    schedule = save_schedule(team, name="red-nightly", suite=suite.name, entries=[a.name, blend.name], user=owner)
    search = BlendSearch.objects.create(team=team, run=run, members=[a.name, b.name], state=State.DONE)
    return Red(
        team,
        {
            "team": team.slug,
            "entry_id": a.pk,
            "suite_id": suite.pk,
            "run_id": run.pk,
            "item_id": item.pk,
            "suite": suite.name,
            "token": raw_invite,
            "name": a.name,
            "schedule_id": schedule.pk,
            "merge": merge.name,
            "search_id": search.pk,
            "endpoint": f"{serve().url}/v1",
        },
    )
