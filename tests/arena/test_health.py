"""/healthz tells what is reachable, with 503 when something is not."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_healthz_reports_an_unreachable_redis_with_503(client, settings):
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["database"]["ok"] is True
    assert body["redis"]["ok"] is False
    assert body["workers"] == {"ok": False, "error": "redis unreachable"}


def test_healthz_reports_no_workers_with_503(client, clean_redis):
    body = client.get("/healthz").json()
    assert body["database"]["ok"] and body["redis"]["ok"]
    assert body["workers"]["ok"] is False
