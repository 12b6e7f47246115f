"""Live channels: a page subscribes to one run or one leaderboard it may see."""

from __future__ import annotations

import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from arena.evaluations.events import board_group, run_group
from arena.evaluations.models import Run
from arena.teams.models import Membership

# Close codes: 4401 not signed in, 4404 not yours (the same answer as "does not exist").
NOT_SIGNED_IN, NOT_FOUND = 4401, 4404
# Membership is checked again before events once this many seconds have passed since the last
# check: a removed member stops hearing within that time, and an event to 200 open pages does not
# cost 200 queries (the snapshot each page then reloads is checked on every request).
RECHECK_S = 10.0


class _LiveConsumer(AsyncJsonWebsocketConsumer):
    group: str | None = None
    checked_at = 0.0  # time.monotonic() of the last membership check

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=NOT_SIGNED_IN)
            return
        self.group = await self.resolve_group(user, self.scope["url_route"]["kwargs"])
        if self.group is None:
            await self.close(code=NOT_FOUND)
            return
        self.checked_at = time.monotonic()
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
        # The group was checked on connect, and membership can end: check again every RECHECK_S.
        if time.monotonic() - self.checked_at >= RECHECK_S:
            if not await self.still_allowed():
                await self.close(code=NOT_FOUND)
                return
            self.checked_at = time.monotonic()
        await self.send_json({k: v for k, v in message.items() if k != "type"})

    @database_sync_to_async
    def still_allowed(self) -> bool:
        return Membership.objects.filter(team_id=self.team_id, user=self.scope["user"]).exists()


class RunConsumer(_LiveConsumer):
    @database_sync_to_async
    def resolve_group(self, user, kwargs) -> str | None:
        run = Run.objects.filter(pk=kwargs["run_id"], team__slug=kwargs["team"], team__memberships__user=user).first()
        if run is None:
            return None
        self.team_id = run.team_id
        return run_group(run.pk)


class BoardConsumer(_LiveConsumer):
    @database_sync_to_async
    def resolve_group(self, user, kwargs) -> str | None:
        membership = Membership.objects.filter(team__slug=kwargs["team"], user=user).first()
        if membership is None:
            return None
        self.team_id = membership.team_id
        return board_group(membership.team_id, kwargs["suite"])
