"""The admin pages for groups (who sees which kiosks) and for the access log (who saw or changed what).

Apart from views.py because they are their own job: deciding and auditing access, not reading lessons.
Every change here is written to the access log, and so is every export of the log itself.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from urllib.parse import urlencode

from aiohttp import web

from appliance.companion import access_log
from appliance.companion.console import accounts, groups, queries
from appliance.companion.console.views import NOTICES, PREFIX, Console, ConsoleError, _cell, _param, access

GROUP_ID = re.compile(r"^[1-9][0-9]{0,14}$")


class AdminPages:
    def __init__(self, console: Console) -> None:
        self.console = console

    def add_routes(self, r: web.UrlDispatcher) -> None:
        r.add_get("/groups", self.groups_page)
        r.add_post("/groups", self.add_group)
        r.add_post("/groups/{group_id}/rename", self.rename_group)
        r.add_post("/groups/{group_id}/delete", self.delete_group)
        r.add_post("/groups/{group_id}/members", self.add_member)
        r.add_post("/groups/{group_id}/members/{username}/remove", self.remove_member)
        r.add_post("/kiosk-group", self.assign_kiosk)
        r.add_get("/access-log", self.log_page)
        r.add_get("/access-log.csv", self.log_csv)

    # -- groups -----------------------------------------------------------------------------
    @access("admin")
    async def groups_page(self, request: web.Request, status: int = 200, message: str = "") -> web.Response:
        db = self.console.db
        users = await accounts.list_users(db)
        return self.console.render(
            request, "groups.html", status=status, groups=await groups.list_groups(db),
            kiosks=await queries.fleet(db, groups.Scope.everything()), message=message,
            teachers=[u.username for u in users if not u.is_admin],
            notice=NOTICES.get(request.query.get("done", ""), ""))

    def _group_id(self, request: web.Request) -> int:
        return int(_param(request, "group_id", GROUP_ID))

    async def _done(self, request: web.Request, action: str, subject: str, notice: str) -> web.Response:
        await self.console.log(request, action, subject)
        raise web.HTTPSeeOther(f"{PREFIX}/groups?done={notice}")

    @access("admin")
    async def add_group(self, request: web.Request) -> web.Response:
        name = self.console.field(request, "name", 200)
        try:
            group_id = await groups.add_group(self.console.db, name)
        except groups.GroupError as exc:
            return await self.groups_page(request, 400, str(exc))
        return await self._done(request, "add-group", f"group {group_id} {name.strip()!r}", "group-added")

    @access("admin")
    async def rename_group(self, request: web.Request) -> web.Response:
        group_id, name = self._group_id(request), self.console.field(request, "name", 200)
        try:
            old = await groups.rename_group(self.console.db, group_id, name)
        except groups.GroupError as exc:
            return await self.groups_page(request, 400, str(exc))
        return await self._done(request, "rename-group", f"group {group_id} {old!r} -> {name.strip()!r}",
                                "group-renamed")

    @access("admin")
    async def delete_group(self, request: web.Request) -> web.Response:
        group_id = self._group_id(request)
        try:
            old = await groups.delete_group(self.console.db, group_id)
        except groups.GroupError as exc:
            raise ConsoleError(404, f"Cannot delete: {exc}.") from None
        return await self._done(request, "delete-group", f"group {group_id} {old!r}", "group-deleted")

    @access("admin")
    async def add_member(self, request: web.Request) -> web.Response:
        group_id = self._group_id(request)
        username = self.console.field(request, "username", 100).strip()
        try:
            await groups.add_member(self.console.db, group_id, username)
        except groups.GroupError as exc:
            return await self.groups_page(request, 400, str(exc))
        name = await groups.group_name(self.console.db, group_id)
        return await self._done(request, "add-member", f"{username} into group {group_id} {name!r}", "member-added")

    @access("admin")
    async def remove_member(self, request: web.Request) -> web.Response:
        group_id = self._group_id(request)
        username = _param(request, "username", accounts.USERNAME)
        if not await groups.remove_member(self.console.db, group_id, username):
            raise ConsoleError(404, f"{username} is not in that group.")
        name = await groups.group_name(self.console.db, group_id)
        return await self._done(request, "remove-member", f"{username} out of group {group_id} {name!r}",
                                "member-removed")

    @access("admin")
    async def assign_kiosk(self, request: web.Request) -> web.Response:
        kiosk = self.console.field(request, "kiosk_id", 100).strip()
        chosen = self.console.field(request, "group_id", 20).strip()
        if chosen and not GROUP_ID.match(chosen):
            return await self.groups_page(request, 400, "group_id: choose a group from the list")
        group_id = int(chosen) if chosen else None
        try:
            if not queries.KIOSK_ID.match(kiosk):
                raise groups.GroupError("kiosk_id: choose a kiosk from the list")
            await groups.assign_kiosk(self.console.db, kiosk, group_id)
        except groups.GroupError as exc:
            return await self.groups_page(request, 400, str(exc))
        name = await groups.group_name(self.console.db, group_id) if group_id is not None else None
        target = f"group {group_id} {name!r}" if group_id is not None else "no group"
        return await self._done(request, "assign-kiosk", f"kiosk {kiosk} to {target}", "kiosk-assigned")

    # -- the access log ---------------------------------------------------------------------
    def _log_filter(self, request: web.Request) -> access_log.LogFilter:
        try:
            return access_log.LogFilter.parse(request.query)
        except access_log.LogFilterError as exc:
            raise ConsoleError(400, f"Cannot filter by {exc}.") from None

    @access("admin")
    async def log_page(self, request: web.Request) -> web.Response:
        flt = self._log_filter(request)
        db = self.console.db
        rows = await access_log.entries(db, flt)
        return self.console.render(
            request, "access_log.html", entries=rows, flt=flt, actions=access_log.ACTIONS,
            actors=await access_log.actors(db), limit=access_log.LIST_LIMIT, query=urlencode(flt.params()),
            days=self.console.server.config.access_log_days)

    @access("admin")
    async def log_csv(self, request: web.Request) -> web.Response:
        flt = self._log_filter(request)
        rows = await access_log.entries(self.console.db, flt, limit=access_log.EXPORT_LIMIT)
        described = " ".join(f"{k}={v}" for k, v in flt.params().items()) or "everything"
        await self.console.log(request, "export-access-log", f"access-log.csv: {described} ({len(rows)} rows)")
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["id", "at_utc", "user", "action", "subject", "lessons"])
        for e in rows:
            at = datetime.fromtimestamp(e.at, UTC).isoformat(timespec="seconds")
            writer.writerow([_cell(v) for v in (e.id, at, e.username, e.action, e.subject, e.lessons)])
        name = "access-log" + "".join(f"-{v}" for v in flt.params().values()) + ".csv"
        return web.Response(body=("\ufeff" + out.getvalue()).encode("utf-8"), content_type="text/csv",
                            charset="utf-8", headers={"Content-Disposition": f'attachment; filename="{name}"'})
