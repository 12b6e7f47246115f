"""Health: database, Redis and worker reachability."""

from __future__ import annotations

import redis
from django.conf import settings
from django.db import connection
from django.http import JsonResponse


def healthz(request):
    checks: dict[str, dict] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = {"ok": True, "engine": connection.vendor}
    except Exception as exc:  # noqa: BLE001 - report any failure as unhealthy
        checks["database"] = {"ok": False, "error": str(exc)}
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1).ping()
        checks["redis"] = {"ok": True}
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = {"ok": False, "error": str(exc)}
    if checks["redis"]["ok"]:
        from arena.celery import app

        try:
            replies = app.control.ping(timeout=1.0) or []
            workers = sorted(name for reply in replies for name in reply)
            checks["workers"] = {"ok": bool(workers), "alive": workers}
        except Exception as exc:  # noqa: BLE001
            checks["workers"] = {"ok": False, "error": str(exc)}
    else:
        checks["workers"] = {"ok": False, "error": "redis unreachable"}
    ok = all(c["ok"] for c in checks.values())
    return JsonResponse({"ok": ok, **checks}, status=200 if ok else 503)
