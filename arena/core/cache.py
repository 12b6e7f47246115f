"""The shared cache (Redis): JSON only, versions replaced on every change, one build per version.

Readers that many clients hit at once (a leaderboard under 200 open pages) keep what they build
under the current *version* of the data it came from. A writer replaces the version when the data
changes, so nothing stale is ever served under a new version, and the first reader of a version
builds it while the others wait for that build instead of repeating it. The database stays the
truth: when the cache is unreachable every reader builds from it, as if nothing were cached.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import transaction
from redis import RedisError

log = logging.getLogger(__name__)

# A version lives a day without changes; a lost one is simply replaced (tokens are random, so a new
# one can never meet values kept under an old one).
VERSION_TTL_S = 24 * 3600
# Bounds how long a value can outlive a change whose version bump was lost (a worker killed between
# its commit and the bump, Redis down at that moment).
VALUE_TTL_S = 120
# How long the first reader may take to build a value before the others stop waiting and build it too.
BUILD_WAIT_S = 5.0
POLL_S = 0.02


class JSONSerializer:
    """Values as JSON, never pickle (like Celery's messages); integers stay raw so incr() works."""

    def dumps(self, obj: Any) -> int | bytes:
        if type(obj) is int:
            return obj
        return json.dumps(obj, separators=(",", ":")).encode()

    def loads(self, data: bytes) -> Any:
        try:
            return int(data)
        except ValueError:
            return json.loads(data)


def current(key: str) -> str | None:
    """The version of ``key``, created when there is none; None when the cache is unreachable."""
    try:
        version = cache.get(f"version:{key}")
        if version is None:
            cache.add(f"version:{key}", secrets.token_hex(8), VERSION_TTL_S)
            version = cache.get(f"version:{key}")
        return version
    except RedisError:
        log.warning("cache unreachable: reading %s without it", key, exc_info=True)
        return None


async def acurrent(key: str) -> str | None:
    # Not thread_sensitive: 200 consumers reading at once must not queue on one thread.
    return await sync_to_async(current, thread_sensitive=False)(key)


def bump(key: str) -> str | None:
    """Give ``key`` a new version now, and again once the current transaction commits; the newest
    (None when the cache is unreachable).

    The second bump matters: a reader between the two may have cached what it read before the
    commit, under the first new version. Without a transaction both happen now.
    """
    newest: list[str | None] = [None]

    def replace() -> None:
        version = secrets.token_hex(8)
        try:
            cache.set(f"version:{key}", version, VERSION_TTL_S)
            newest[0] = version
        except RedisError:
            newest[0] = None
            log.warning("cache unreachable: %s keeps its version for at most %d s", key, VALUE_TTL_S, exc_info=True)

    replace()
    transaction.on_commit(replace)
    return newest[0]


def cached(key: str, version_key: str, build: Callable[[], Any]) -> Any:
    """``build()``'s value for the current version of ``version_key``, built once per version."""
    version = current(version_key)
    if version is None:
        return build()
    full, lock = f"{key}@{version}", f"building:{key}@{version}"
    try:
        value = cache.get(full)
        if value is not None:
            return value
        if not cache.add(lock, 1, int(BUILD_WAIT_S) + 1):
            # Another reader builds this very value: wait for it rather than build it again (and
            # build it after all if that reader gave up or failed).
            deadline = time.monotonic() + BUILD_WAIT_S
            while time.monotonic() < deadline:
                time.sleep(POLL_S)
                found = cache.get_many([full, lock])
                if full in found:
                    return found[full]
                if lock not in found:
                    break
    except RedisError:
        log.warning("cache unreachable: building %s without it", key, exc_info=True)
        return build()
    try:
        value = build()
    except BaseException:
        _forget(lock)
        raise
    try:
        cache.set(full, value, VALUE_TTL_S)
    except RedisError:
        log.warning("cache unreachable: %s not kept", key, exc_info=True)
    _forget(lock)
    return value


def _forget(key: str) -> None:
    try:
        cache.delete(key)
    except RedisError:
        pass  # the lock expires by itself
