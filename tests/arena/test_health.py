"""/healthz tells what is reachable, with 503 when something is not."""

from __future__ import annotations

import time

import pytest

from arena.deployment import heartbeat

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


def test_healthz_counts_a_worker_by_the_heartbeat_it_writes_and_a_beat_alone_is_not_one(client, clean_redis):
    # What each worker process and the beat write every few seconds (arena.celery connects them).
    heartbeat.report(clean_redis, "beat@host", [], "beat", time.time())
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json()["workers"] == {"ok": False, "alive": []}

    heartbeat.report(clean_redis, "gpu-0@host", ["gpu"], "worker", time.time())
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["workers"] == {"ok": True, "alive": ["gpu-0@host"]}
