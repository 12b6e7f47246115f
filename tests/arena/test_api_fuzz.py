"""The JSON API fuzzed from its own OpenAPI document (schemathesis): no 5xx, no response off its schema.

Every operation the document lists is called with generated inputs, valid and not, over real HTTP
against a live server and the test database, with a member token of a team that has entries, a
suite and a finished run to find. Bounded: a few dozen examples per operation.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.test import Client
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from arena.registry.models import Kind
from arena.teams.models import ApiToken, Role
from tests.factories import BlendFactory, EntryFactory, RunEntryFactory, RunFactory, SuiteFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def member_token(team) -> str:
    suite = SuiteFactory(team=team, size=4)
    endpoint = {"base_url": "http://127.0.0.1:9/v1", "max_retries": 0, "timeout_s": 1}
    a = EntryFactory(team=team, name="a", kind=Kind.OPENAI, config={**endpoint, "model": "a"})
    b = EntryFactory(team=team, name="b", kind=Kind.OPENAI, config={**endpoint, "model": "b"})
    vote = BlendFactory(team=team, name="vote", members=[a, b])
    run = RunFactory(suite=suite)
    for entry in (a, b, vote):
        RunEntryFactory(run=run, entry=entry, total_items=2, done_items=2, score=0.5, ci_low=0.2, ci_high=0.8, n=2)
    return ApiToken.issue(team, "fuzz", role=Role.MEMBER)[1]


def openapi_document() -> dict:
    """The document the app serves at /api/v1/openapi.json (its generation reads no database)."""
    response = Client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json()


# /v1, which the document describes too, is OpenAI's protocol with its own tests (test_serving*.py).
schema = schemathesis.openapi.from_dict(openapi_document()).exclude(path_regex="^/v1/")


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_no_operation_answers_5xx_or_off_its_schema(case, live_server, member_token):
    case.call_and_validate(
        base_url=live_server.url,
        headers={"Authorization": f"Bearer {member_token}"},
        checks=[not_a_server_error, response_schema_conformance],
        timeout=30,
    )
