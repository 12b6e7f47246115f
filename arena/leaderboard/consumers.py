"""Live channels: a page subscribes to one run or one leaderboard it may see.

Each event goes out with the snapshot the page shows (arena/leaderboard/snapshots.py for a board,
arena/evaluations/snapshots.py for a run), built once per process for each version of the team's
results and each set of page filters, so 200 open pages cost one build and 200 sends instead of 200
requests that each build it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from urllib.parse import parse_qsl

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from arena.core import cache
from arena.evaluations.events import board_group, run_group
from arena.evaluations.models import Run
from arena.evaluations.snapshots import run_push
from arena.leaderboard import snapshots
from arena.teams.models import Membership

log = logging.getLogger(__name__)

# Close codes: 4401 not signed in, 4404 not yours (the same answer as "does not exist").
NOT_SIGNED_IN, NOT_FOUND = 4401, 4404


def memberships_key(user_id: int) -> str:
    """The cache version of a user's memberships, replaced whenever one of them (or the account) changes."""
    return f"memberships:{user_id}"


# What this process built for recent (page, version) pairs: the JSON text, or the build under way.
PUSHED: OrderedDict[tuple, str | asyncio.Future] = OrderedDict()
PUSHED_KEEP = 64


async def shared_build(key: tuple, build: Callable[[], str]) -> str:
    """``build()`` (blocking) run once for ``key`` in this process, however many pages wait for it."""
    kept = PUSHED.get(key)
    if isinstance(kept, str):
        return kept
    if kept is None or kept.get_loop() is not asyncio.get_running_loop():
        kept = asyncio.ensure_future(database_sync_to_async(build)())
        PUSHED[key] = kept
        while len(PUSHED) > PUSHED_KEEP:
            PUSHED.popitem(last=False)
    try:
        text = await kept
    except BaseException:
        if PUSHED.get(key) is kept:
            del PUSHED[key]
        raise
    if PUSHED.get(key) is kept:
        PUSHED[key] = text
    return text


class _LiveConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None
    team_id: int | None = None
    # The version of the user's memberships when they were last checked against the database.
    checked_version: str | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=NOT_SIGNED_IN)
            return
        # Read before the database: a change committed in between replaces it, and is seen next time.
        version = await cache.acurrent(memberships_key(user.pk))
        self.group = await self.resolve_group(user, self.scope["url_route"]["kwargs"])
        if self.group is None:
            await self.close(code=NOT_FOUND)
            return
        self.checked_version = version
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def resolve_group(self, user, kwargs) -> str | None:
        """The group this user may join for these URL arguments; None serves nothing."""
        return None

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content, **kwargs) -> None:
        # Pages only listen; anything they send is ignored.
        return

    async def arena_event(self, message: dict) -> None:
        # Membership can end while a page is open: checked before every message, so a removed
        # member hears nothing more.
        if not await self.still_allowed():
            await self.close(code=NOT_FOUND)
            return
        text = json.dumps({k: v for k, v in message.items() if k not in ("type", "version")})
        # Built once per version of the team's results, which the publisher just replaced. Without
        # the cache (no version) every page would build its own: those pages reload instead.
        version, pushed = message.get("version"), ""
        if version:
            try:
                pushed = await shared_build((*self.page(), version), self.push)
            except Exception:  # noqa: BLE001 - the page still hears of the event, and reloads
                log.warning("snapshot for %s not built", self.page(), exc_info=True)
        await self.send(text_data=text[:-1] + ", " + pushed + "}" if pushed else text)

    def page(self) -> tuple:
        """What sets this page's snapshot apart from other pages' (besides the version)."""
        return ()

    def push(self) -> str:
        """The page's snapshot as JSON members (blocking; run once per page and version)."""
        return ""

    async def still_allowed(self) -> bool:
        """One cache read per message; the database only when the user's memberships changed since the
        last check (an event to 200 open pages must not cost 200 queries), or the cache is unreachable."""
        version = await cache.acurrent(memberships_key(self.scope["user"].pk))
        if version is not None and version == self.checked_version:
            return True
        allowed = await self.member_in_database()
        self.checked_version = version if allowed else None
        return allowed

    @database_sync_to_async
    def member_in_database(self) -> bool:
        return Membership.objects.filter(team_id=self.team_id, user=self.scope["user"], user__is_active=True).exists()


class RunConsumer(_LiveConsumer):
    @database_sync_to_async
    def resolve_group(self, user, kwargs) -> str | None:
        run = Run.objects.filter(pk=kwargs["run_id"], team__slug=kwargs["team"], team__memberships__user=user).first()
        if run is None:
            return None
        self.team_id, self.run_id = run.team_id, run.pk
        return run_group(run.pk)

    def page(self) -> tuple:
        return ("run", self.run_id)

    def push(self) -> str:
        return run_push(self.run_id)


class BoardConsumer(_LiveConsumer):
    @database_sync_to_async
    def resolve_group(self, user, kwargs) -> str | None:
        membership = Membership.objects.select_related("team").filter(team__slug=kwargs["team"], user=user).first()
        if membership is None:
            return None
        self.team, self.team_id, self.suite = membership.team, membership.team_id, kwargs["suite"]
        # The page's filters ride on its socket's query string (?kind=&version=&sort=).
        query = parse_qsl(self.scope.get("query_string", b"").decode("latin-1"))
        self.filters = {k: v for k, v in query if k in ("kind", "version", "sort")}
        return board_group(membership.team_id, kwargs["suite"])

    def page(self) -> tuple:
        return ("board", self.team_id, self.suite, tuple(sorted(self.filters.items())))

    def push(self) -> str:
        return snapshots.board_push(self.team, self.suite, self.filters)
