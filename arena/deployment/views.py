"""Health (database, Redis and worker reachability) and the staff operations page."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.http import Http404, JsonResponse
from django.shortcuts import render

from arena.deployment import heartbeat, queries


def healthz(request):
    """Database, Redis and at least one live worker; 503 when any is missing.

    Workers are read from the heartbeats each worker process already writes (arena/deployment/heartbeat.py)
    rather than a broadcast ping, which waits out its whole timeout for replies (a second per call) and
    gets none from a solo-pool worker busy with a batch. The trade-off: a killed worker still counts for
    up to heartbeat.TTL_S seconds.
    """
    checks: dict[str, dict] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True, "engine": connection.vendor}
    except Exception as exc:  # noqa: BLE001 - report any failure as unhealthy
        checks["database"] = {"ok": False, "error": str(exc)}
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
        checks["redis"] = {"ok": True}
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = {"ok": False, "error": str(exc)}
    if checks["redis"]["ok"]:
        try:
            workers = sorted({p["node"] for p in heartbeat.alive(client) if p["role"] == "worker"})
            checks["workers"] = {"ok": bool(workers), "alive": workers}
        except Exception as exc:  # noqa: BLE001
            checks["workers"] = {"ok": False, "error": str(exc)}
    else:
        checks["workers"] = {"ok": False, "error": "redis unreachable"}
    client.close()
    ok = all(c["ok"] for c in checks.values())
    return JsonResponse({"ok": ok, **checks}, status=200 if ok else 503)


def ops(request):
    """Queues, workers and their models, recent failures: staff only, a 404 to anyone else."""
    if not (request.user.is_authenticated and request.user.is_staff):
        raise Http404
    snapshot = queries.snapshot()
    if request.GET.get("format") == "json":
        return JsonResponse(snapshot)
    return render(request, "deployment/ops.html", {"ops": snapshot})
