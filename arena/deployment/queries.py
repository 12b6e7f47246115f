"""What staff need to see of a running deployment: queues, workers, their models, failures."""

from __future__ import annotations

import time
from collections import defaultdict

import redis
from django.conf import settings
from django.db.models import F

from arena.core.routing import gpu_queues
from arena.deployment import heartbeat
from arena.evaluations.models import RunEntry, State, WorkItem

RECENT_FAILURES = 20
# Kombu's Redis transport keeps delivered but unacknowledged messages (running, or reserved by
# a worker) in this hash; with late acks that is every task a worker has taken and not finished.
UNACKED_KEY = "unacked"


def snapshot() -> dict:
    result: dict = {"gpu_shards": settings.ARENA_GPU_SHARDS, "failures": failures(), "redis_error": None}
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        reports = heartbeat.alive(client)
        processes = [p for p in reports if p["role"] == "worker"]
        result.update(
            queues=queues(client, processes),
            unacked=client.hlen(UNACKED_KEY),
            workers=workers(processes),
            beats=[{"node": p["node"], "pid": p["pid"]} for p in reports if p["role"] == "beat"],
        )
    except redis.RedisError as exc:
        # The database half of the page still helps when the broker is down.
        result.update(queues=[], unacked=None, workers=[], beats=[], redis_error=str(exc))
    return result


def queues(client: redis.Redis, processes: list[dict]) -> list[dict]:
    """Depth and consumers of every queue in use, and of any queue left over that still holds tasks.

    A GPU queue from an earlier ARENA_GPU_SHARDS (say gpu.7 after going from 8 shards to 4)
    keeps its tasks with nobody to take them; it is listed so that someone notices.
    """
    expected = [*gpu_queues(), settings.CELERY_TASK_DEFAULT_QUEUE]
    leftover = sorted(
        name
        for key in client.scan_iter(match="gpu*", count=500, _type="list")
        if (name := key.decode()) not in expected and client.llen(name)
    )
    consumers: dict[str, int] = defaultdict(int)
    for p in processes:
        for q in p["queues"]:
            consumers[q] += 1
    return [
        {"name": name, "depth": client.llen(name), "consumers": consumers[name], "in_use": name in expected}
        for name in [*expected, *leftover]
    ]


def workers(processes: list[dict]) -> list[dict]:
    """One row per worker node: its processes, queues, loaded models (with entry names) and tasks."""
    fingerprints = {fp for p in processes for fp in p["models"]}
    names: dict[str, set[str]] = defaultdict(set)
    for fp, team, entry in (
        RunEntry.objects.filter(fingerprint__in=fingerprints)
        .values_list("fingerprint", "entry__team__slug", "entry__name")
        .distinct()
    ):
        names[fp].add(f"{team}/{entry}")
    now = time.time()
    nodes: dict[str, dict] = {}
    for p in sorted(processes, key=lambda p: (p["node"], p["pid"])):
        node = nodes.setdefault(p["node"], {"node": p["node"], "queues": set(), "processes": []})
        node["queues"].update(p["queues"])
        node["processes"].append(
            {
                "pid": p["pid"],
                "seen_s_ago": round(now - p["at"], 1),
                "up_s": round(now - p["started"]),
                "busy": p["busy"] and {**p["busy"], "for_s": round(now - p["busy"]["since"], 1)},
                "models": [{"fingerprint": fp, "entries": sorted(names.get(fp, ()))} for fp in p["models"]],
            }
        )
    return [{**n, "queues": sorted(n["queues"])} for n in nodes.values()]


def failures(limit: int = RECENT_FAILURES) -> dict:
    """The latest failed batches and failed entries, with their reasons."""
    batches = (
        WorkItem.objects.filter(state=State.FAILED)
        .select_related("entry", "run__team")
        .order_by(F("finished_at").desc(nulls_last=True), "-pk")[:limit]
    )
    entries = (
        RunEntry.objects.filter(state=State.FAILED)
        .select_related("entry", "run__team")
        .order_by(F("finished_at").desc(nulls_last=True), "-pk")[:limit]
    )
    return {
        "batches": [
            {
                "run": wi.run_id,
                "team": wi.run.team.slug,
                "entry": wi.entry.name,
                "batch": wi.batch_index,
                "attempts": wi.attempts,
                "error": wi.error,
                "at": wi.finished_at,
            }
            for wi in batches
        ],
        "entries": [
            {
                "run": re.run_id,
                "team": re.run.team.slug,
                "entry": re.entry.name,
                "error": re.error,
                "at": re.finished_at,
            }
            for re in entries
        ],
    }
