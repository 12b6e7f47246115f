"""The arena's own fixtures: the JSON API as the red team's token calls it, and no login failures left over."""

from __future__ import annotations

import json

import pytest

from arena.teams.services import forget_token_failures


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
