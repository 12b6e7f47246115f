"""Concurrent /v1 requests for one model, generated together in one batch on a GPU worker.

The web process pushes each request onto its lane, a Redis list per (model fingerprint, decoding
params), that is what one batched ``generate`` call can share; it sends the serving task by name on
the model's GPU queue and waits for its reply. The task takes up to the backend's batch size of
requests from the lane, generates them in one call through the generations cache and replies to
each. Requests that arrive while a batch is generating wait in the lane and go together in the
next one, so batches grow with the load; a task that finds its lane empty, or already served by
another, returns at once.

Only local models come here: an endpoint member batches on its own server.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import secrets
import time
from typing import Any

import redis
from celery import current_task
from django.conf import settings
from redis.exceptions import LockError
from redis.lock import Lock

from arena.core.queue import send
from arena.core.routing import gpu_queue
from arena.evaluations import cache
from arena.evaluations.models import Generation
from arena.registry.backends import backend_for
from arena.registry.models import Entry
from arena.serving.protocol import Refused
from ensembles.backends import Backend, BackendError, DecodingParams, Prompt, TransientBackendError
from ensembles.backends.base import digest_json
from ensembles.backends.hf import TransformersBackend
from ensembles.errors import EnsembleError

log = logging.getLogger(__name__)

SERVE_TASK = "arena.serving.tasks.serve_lane"
# One record per batch served (lane, size, how many were generated), the latest thousand: how
# requests were grouped, for an operator, the benchmark and the tests (recent_batches).
BATCHES_KEY = "serving:batches"
BATCHES_KEPT = 1000
# A reply nobody waits for any more (its client timed out) is dropped after this long.
REPLY_TTL_S = 60


@functools.cache
def _redis() -> redis.Redis:
    # No socket timeout: a reply is awaited with a blocking pop that has its own.
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)


def serves_on_worker(backend: Backend) -> bool:
    """Whether this request goes to a worker: a local model, the setting on, and not already in a task.

    A task that serves (a shadow's answer) generates where it runs: waiting on another task from
    inside one could wait for its own worker process, which is busy waiting.
    """
    in_task = bool(current_task)  # a proxy: false outside a task
    return settings.ARENA_SERVE_ON_WORKER and isinstance(backend, TransformersBackend) and not in_task


def lane_of(fingerprint: str, params: DecodingParams) -> str:
    return "serving:lane:" + digest_json({"fingerprint": fingerprint, "params": params.model_dump(mode="json")})


def _reply_key(request_id: str) -> str:
    return f"serving:reply:{request_id}"


def generate_on_worker(
    entry: Entry, fingerprint: str, prompt: Prompt, params: DecodingParams
) -> tuple[Generation, bool]:
    """``prompt``'s generation by ``entry``'s model, from the cache or made in a batch on a worker; (row, made now).

    A request no worker took within ARENA_SERVE_TIMEOUT_S leaves its lane, unanswered and unstored, as
    a 503; one a worker took but did not answer in time is a 504 (what that worker then stores, the
    client's retry reads from the cache).
    """
    found = cache.cached(fingerprint, prompt, params)
    if found is not None:  # what is cached costs no trip to the worker
        return found, False
    request_id = secrets.token_hex(16)
    lane = lane_of(fingerprint, params)
    payload = json.dumps({"id": request_id, "prompt": prompt}, ensure_ascii=False)
    timeout = settings.ARENA_SERVE_TIMEOUT_S
    client = _redis()
    queue = gpu_queue(fingerprint)
    try:
        with client.pipeline() as pipe:
            pipe.rpush(lane, payload)
            pipe.expire(lane, timeout + REPLY_TTL_S)
            pipe.execute()
        send(SERVE_TASK, lane, entry.pk, fingerprint, params.model_dump(mode="json"), queue=queue)
        got = client.blpop([_reply_key(request_id)], timeout=timeout)
        if got is None and client.lrem(lane, 1, payload):
            raise Refused(
                503,
                f"no worker took this request within {timeout} s: the arena's workers for the {queue!r} queue are "
                "down or busy; try again later",
                code="worker_unavailable",
            )
    except redis.RedisError as exc:
        log.warning("serving queue unreachable", exc_info=True)
        raise Refused(503, "the serving queue is unreachable; try again later", code="queue_unavailable") from exc
    if got is None:
        raise Refused(504, f"the model's worker did not answer within {timeout} s; try again", code="timeout")
    reply = json.loads(got[1])
    if "error" in reply:
        if reply.get("transient"):
            raise Refused(503, reply["error"], code="worker_error")
        raise BackendError(reply["error"])
    row = cache.cached(fingerprint, prompt, params)
    if row is None:  # the cache lost the row it just answered from (a database reset): answer as a lost reply
        raise Refused(503, "the worker's answer could not be read back; try again", code="worker_error")
    return row, bool(reply["new"])


def serve_lane(lane: str, entry_id: int, fingerprint: str, params_data: dict[str, Any]) -> int:
    """Generate the requests waiting in ``lane``, a batch at a time, until it is empty; how many.

    At most ARENA_SERVE_PARALLEL tasks serve a lane at once: the requests that arrive while a batch
    generates make the next batch, rather than another worker process taking each of them alone. The
    other tasks return at once.
    """
    client = _redis()
    entry = Entry.objects.filter(pk=entry_id).first()
    backend: Backend | None = None
    failure: dict[str, Any] | None = None
    try:
        backend = backend_for(entry) if entry else None
    except (BackendError, EnsembleError) as exc:
        failure = {"error": str(exc)}
    if failure is None and (backend is None or backend.fingerprint() != fingerprint):
        # The entry was removed or now names other weights: its old answers are not this model's to give.
        failure = {"error": "this model was changed or removed while the request waited; send it again"}
    params = DecodingParams.model_validate(params_data)
    served = 0
    while True:
        busy = _claim(client, lane)
        if busy is None:
            return served  # the lane's servers take these requests into their next batches
        try:
            while taken := _serve_batch(client, lane, backend, failure, fingerprint, params):
                served += taken
                busy.reacquire()
        finally:
            with contextlib.suppress(LockError):  # expired during a long batch: nothing left to release
                busy.release()
        # A request pushed while the lock was being released found it held; look once more.
        if not client.llen(lane):
            return served


def _claim(client: redis.Redis, lane: str) -> Lock | None:
    """One of the lane's ARENA_SERVE_PARALLEL server slots, or None when every one is taken.

    Held no longer than a client waits: a server that died frees its slot by then.
    """
    for slot in range(settings.ARENA_SERVE_PARALLEL):
        busy = client.lock(f"{lane}:busy:{slot}", timeout=settings.ARENA_SERVE_TIMEOUT_S)
        if busy.acquire(blocking=False):
            return busy
    return None


def _gather(client: redis.Redis, lane: str, size: int) -> None:
    """Wait a moment (ARENA_SERVE_GATHER_MS at most) for a lane that holds requests to fill a batch.

    Clients that send together reach the lane some milliseconds apart; without the wait the first of
    them would go alone and the rest in the batch after. An empty lane waits for nothing.
    """
    deadline = time.monotonic() + settings.ARENA_SERVE_GATHER_MS / 1000
    while 0 < client.llen(lane) < size and time.monotonic() < deadline:
        time.sleep(0.005)


def _serve_batch(
    client: redis.Redis,
    lane: str,
    backend: Backend | None,
    failure: dict[str, Any] | None,
    fingerprint: str,
    params: DecodingParams,
) -> int:
    """Up to the backend's batch size of ``lane``'s requests generated in one call, each answered; how many.

    A backend's error goes back to each request as its answer, so no client waits out its timeout for
    a batch that failed.
    """
    size = backend.config.batch_size if isinstance(backend, TransformersBackend) else settings.ARENA_BATCH_SIZE
    _gather(client, lane, size)
    taken = client.lpop(lane, size) or []
    if not taken:
        return 0
    requests = [json.loads(raw) for raw in taken]
    replies: list[dict[str, Any]] = []
    made = 0
    if failure is None and backend is not None:
        try:
            read = cache.generations(fingerprint, lambda: backend, [r["prompt"] for r in requests], params)
        except TransientBackendError as exc:
            failure = {"error": str(exc), "transient": True}
        except (BackendError, EnsembleError) as exc:
            failure = {"error": str(exc)}
        except Exception:
            log.exception("serving batch failed")
            failure = {"error": "the model's worker failed on this request; try again", "transient": True}
        else:
            made = read.new
            replies = [{"size": len(requests), "new": gen.key in read.computed} for gen in read.generations]
    batch = secrets.token_hex(8)
    with client.pipeline() as pipe:
        for request, reply in zip(requests, replies or [failure] * len(requests), strict=True):
            pipe.rpush(_reply_key(request["id"]), json.dumps({"batch": batch, **(reply or {})}))
            pipe.expire(_reply_key(request["id"]), REPLY_TTL_S)
        record = {"batch": batch, "lane": lane, "size": len(requests), "generated": made, "failed": int(not replies)}
        pipe.xadd(BATCHES_KEY, record, maxlen=BATCHES_KEPT, approximate=True)
        pipe.execute()
    log.info("served a batch of %d requests (%d generated) from %s", len(requests), made, lane)
    return len(requests)


def recent_batches(lane: str | None = None) -> list[dict[str, Any]]:
    """The batches served lately, oldest first (all lanes, or ``lane``'s): batch id, lane, size, generated."""
    rows = []
    for _, fields in _redis().xrange(BATCHES_KEY):
        row = {k.decode(): v.decode() for k, v in fields.items()}
        if lane is None or row["lane"] == lane:
            rows.append({**row, "size": int(row["size"]), "generated": int(row["generated"])})
    return rows
