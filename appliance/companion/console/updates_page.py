"""The console's Updates page: admins publish signed releases to channels and stage their rollout.

Apart from views.py because it is its own job: deciding which release the fleet runs. The decisions live
in appliance/companion/rollout.py (the same code answers the kiosks); this module only reads forms,
shows the state, and turns a refused change into a message on the page. Each change is written to the
access log by rollout.py, in the change's own transaction.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from dataclasses import dataclass

from aiohttp import web

from appliance.companion import rollout
from appliance.companion.console import groups, queries
from appliance.companion.console.views import FORM, PREFIX, Console, ConsoleError, _param, access, signed_in
from appliance.contract.updates import CHANNELS

GROUP_ID = re.compile(r"^[1-9][0-9]{0,14}$")
CHANNEL = re.compile(r"^[a-z]{1,20}$")
NOTICES = {
    "published": "Release published: the kiosks it reaches take it at their next check.",
    "rolled-back": "Channel rolled back: every kiosk of it is told to run the earlier release.",
    "rollout": "Rollout saved.",
    "paused": "Rollout paused: no kiosk is told to update until you resume it.",
    "resumed": "Rollout resumed.",
    "channel": "Kiosk moved to its new channel.",
}


@dataclass(frozen=True)
class ChannelView:
    """A channel as the page shows it, with how far its release has gone."""

    channel: rollout.Channel
    kiosks: int
    told: int
    """Kiosks the companion now tells to run the published version."""
    running: int
    """Kiosks whose latest heartbeat reports the published version."""
    newer: list[str]
    older: list[str]


class UpdatesPage:
    def __init__(self, console: Console) -> None:
        self.console = console

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/updates", self.page)
        r.add_post("/updates/{channel}/publish", self.publish)
        r.add_post("/updates/{channel}/rollback", self.roll_back)
        r.add_post("/updates/{channel}/rollout", self.set_rollout)
        r.add_post("/updates/{channel}/pause", self.pause)
        r.add_post("/updates/{channel}/resume", self.resume)
        r.add_post("/kiosk-channel", self.move_kiosk)

    async def _available(self) -> list[str]:
        updates = self.console.server.updates
        return await asyncio.to_thread(rollout.available_versions, updates.repository if updates else None)

    @access("admin")
    async def page(self, request: web.Request, status: int = 200, message: str = "") -> web.Response:
        db = self.console.db
        available = await self._available()
        kiosks = [k for k in await queries.fleet(db, groups.Scope.everything()) if k.active]
        views = []
        for channel in await rollout.channels(db):
            mine = [k for k in kiosks if k.channel == channel.name]
            current = rollout.parse_version(channel.version) if channel.version else None
            views.append(ChannelView(
                channel, len(mine),
                told=sum(1 for k in mine if channel.assigned(k.kiosk_id, k.group_id) is not None),
                running=sum(1 for k in mine if channel.version is not None and k.version == channel.version),
                newer=[v for v in reversed(available) if current is None or rollout.parse_version(v) > current],
                older=[v for v in reversed(available) if current is not None and rollout.parse_version(v) < current]))
        return self.console.render(
            request, "updates.html", status=status, message=message, channels=views, available=available,
            has_repository=self.console.server.updates is not None, kiosks=kiosks,
            groups=await groups.list_groups(db), notice=NOTICES.get(request.query.get("done", ""), ""))

    def _channel(self, request: web.Request) -> str:
        name = _param(request, "channel", CHANNEL)
        if name not in CHANNELS:
            raise ConsoleError(404, f"There is no update channel {name}.")
        return name

    async def _change(self, request: web.Request, notice: str, change: Awaitable[object]) -> web.Response:
        """Run a rollout change; a refused one shows the page again with the reason, nothing changed."""
        try:
            await change
        except rollout.RolloutError as exc:
            return await self.page(request, 400, str(exc))
        raise web.HTTPSeeOther(f"{PREFIX}/updates?done={notice}")

    def _share(self, request: web.Request) -> int:
        try:
            return rollout.parse_share(self.console.field(request, "share", 10))
        except rollout.RolloutError as exc:
            raise _Refused(str(exc)) from None

    @access("admin")
    async def publish(self, request: web.Request) -> web.Response:
        name, actor = self._channel(request), signed_in(request).username
        version = self.console.field(request, "version", 64).strip()
        try:
            share = self._share(request)
        except _Refused as exc:
            return await self.page(request, 400, str(exc))
        return await self._change(request, "published", rollout.publish(self.console.db, name, version, share, actor,
                                                                        await self._available()))

    @access("admin")
    async def roll_back(self, request: web.Request) -> web.Response:
        name, actor = self._channel(request), signed_in(request).username
        version = self.console.field(request, "version", 64).strip()
        return await self._change(request, "rolled-back", rollout.roll_back(self.console.db, name, version, actor,
                                                                           await self._available()))

    @access("admin")
    async def set_rollout(self, request: web.Request) -> web.Response:
        name, actor = self._channel(request), signed_in(request).username
        chosen = request[FORM].getall("group", [])
        if not all(isinstance(g, str) and GROUP_ID.match(g) for g in chosen):
            return await self.page(request, 400, "groups: choose groups from the list")
        try:
            share = self._share(request)
        except _Refused as exc:
            return await self.page(request, 400, str(exc))
        return await self._change(request, "rollout", rollout.set_rollout(self.console.db, name, share,
                                                                         [int(g) for g in chosen], actor))

    @access("admin")
    async def pause(self, request: web.Request) -> web.Response:
        name = self._channel(request)
        return await self._change(request, "paused", rollout.set_paused(self.console.db, name, True,
                                                                       signed_in(request).username))

    @access("admin")
    async def resume(self, request: web.Request) -> web.Response:
        name = self._channel(request)
        return await self._change(request, "resumed", rollout.set_paused(self.console.db, name, False,
                                                                        signed_in(request).username))

    @access("admin")
    async def move_kiosk(self, request: web.Request) -> web.Response:
        kiosk = self.console.field(request, "kiosk_id", 100).strip()
        name = self.console.field(request, "channel", 20).strip()
        if not queries.KIOSK_ID.match(kiosk):
            return await self.page(request, 400, "kiosk_id: choose a kiosk from the list")
        return await self._change(request, "channel", rollout.set_kiosk_channel(self.console.db, kiosk, name,
                                                                               signed_in(request).username))


class _Refused(Exception):
    """A form field that cannot be used; the message names it."""
