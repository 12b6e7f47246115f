"""Every worker process (and the beat) says, every few seconds, that it is alive and what it holds.

Celery's control commands cannot tell this: a solo-pool GPU worker answers none while it runs a
batch, and a prefork worker's models live in its child processes, not in the process that
answers. So each process that runs tasks writes its own short-lived Redis key from a daemon
thread; a key that stops being renewed expires with its process. With ARENA_HEARTBEAT_FILE set,
each beat also touches that file, which is what a container's health check looks at.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

import redis
from celery import current_app
from django.conf import settings

log = logging.getLogger(__name__)

KEY_PREFIX = "arena:heartbeat:"
INTERVAL_S = 10
# Three missed beats and the process counts as gone.
TTL_S = 3 * INTERVAL_S

_busy: dict | None = None


def on_task_start(sender=None, task_id=None, **kwargs) -> None:
    global _busy
    _busy = {"task": getattr(sender, "name", None), "task_id": task_id, "since": time.time()}


def on_task_end(**kwargs) -> None:
    global _busy
    _busy = None


def start(sender=None, **kwargs) -> threading.Thread:
    """worker_process_init: beat for this worker process (``sender`` is the worker's node name)."""
    return _start(str(sender), sorted(current_app.amqp.queues.consume_from or ()), role="worker")


def start_beat(sender=None, **kwargs) -> threading.Thread:
    """beat_init: the scheduler beats too, so that a missing or a second beat shows."""
    return _start(f"beat@{socket.gethostname()}", [], role="beat")


def _start(node: str, queues: list[str], role: str) -> threading.Thread:
    thread = threading.Thread(target=_beat_forever, args=(node, queues, role), name="arena-heartbeat", daemon=True)
    thread.start()
    return thread


def _beat_forever(node: str, queues: list[str], role: str) -> None:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
    touch = os.environ.get("ARENA_HEARTBEAT_FILE")
    started = time.time()
    while True:
        try:
            report(client, node, queues, role, started)
        except redis.RedisError as exc:
            # No beat, no touch: the health check sees a process that cannot reach its broker.
            log.warning("heartbeat not written: %s", exc)
        else:
            if touch:
                Path(touch).touch()
        time.sleep(INTERVAL_S)


def report(client: redis.Redis, node: str, queues: list[str], role: str, started: float) -> None:
    pid = os.getpid()
    state = {
        "node": node,
        "role": role,
        "pid": pid,
        "queues": queues,
        "models": _loaded_models() if role == "worker" else [],
        "busy": _busy,
        "started": started,
        "at": time.time(),
    }
    client.set(f"{KEY_PREFIX}{node}:{pid}", json.dumps(state), ex=TTL_S)


def _loaded_models() -> list[str]:
    from arena.evaluations.cache import POOL  # the worker has imported it already

    return POOL.loaded()


def alive(client: redis.Redis) -> list[dict]:
    """The state of every worker process and beat that reported within the last TTL_S seconds."""
    keys = sorted(client.scan_iter(match=f"{KEY_PREFIX}*", count=500))
    if not keys:
        return []
    return [json.loads(raw) for raw in client.mget(keys) if raw is not None]
