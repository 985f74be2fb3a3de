"""The console's pages: one middleware for sessions, roles, CSRF and security headers; small handlers.

Every rule that guards a page lives in the middleware, keyed by the access level each handler declares
(``public``, ``teacher`` or ``admin``), so a new page cannot forget a check. Handlers return HTML (or CSV);
errors become HTML pages here, before the companion's JSON error middleware sees them.
"""

from __future__ import annotations

import csv
import hmac
import io
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web
from jinja2 import Environment, PackageLoader, select_autoescape

from appliance.companion import access_log
from appliance.companion.console import accounts, groups, queries
from appliance.companion.console.chart import cost_chart, minutes_chart
from appliance.companion.db import RETRY_AFTER_S, Database, DatabaseError
from appliance.companion.erasure import NothingToErase
from appliance.contract.record import UncheckedRecord, is_uuid

if TYPE_CHECKING:  # the server imports the console when it builds its app
    from appliance.companion.server import CompanionServer

log = logging.getLogger(__name__)

PREFIX = "/console"
SESSION_COOKIE = "stella_console"
LOGIN_COOKIE = "stella_login"
"""Before login there is no session to hold a CSRF token: the login form's token is this cookie's value."""
COOKIE_PATH = PREFIX + "/"
LOGIN_TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
CSP = ("default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
SAFE_NEXT = re.compile(r"^/console/[\x21-\x5b\x5d-\x7e]{0,400}$")
"""A console path of printable ASCII (no backslash, no spaces or line breaks that could split a header)."""
USAGE_DAYS = 14
"""The usage page without a filter shows the last two weeks."""
NOTICES = {
    "revoked": "Kiosk revoked: its device key no longer works.",
    "budget": "Daily budget saved.",
    "disabled": "Account disabled and signed out everywhere.",
    "enabled": "Account enabled.",
    "group-added": "Group created.",
    "group-renamed": "Group renamed.",
    "group-deleted": "Group deleted: its kiosks are in no group now, and its teachers no longer see them.",
    "kiosk-assigned": "Kiosk moved.",
    "member-added": "Teacher added to the group.",
    "member-removed": "Teacher taken out of the group.",
}

SESSION: web.RequestKey[accounts.WebSession | None] = web.RequestKey("console_session", accounts.WebSession)
FORM: web.RequestKey[Any] = web.RequestKey("console_form", object)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: A console handler: a method taking the request (some take more, with defaults), returning a response.
HandlerMethod = TypeVar("HandlerMethod", bound=Callable[..., Awaitable[web.StreamResponse]])
ResponseT = TypeVar("ResponseT", bound=web.StreamResponse)
ACCESS_MARK = "console_access"
"""The handler attribute that holds its access level (read through the route's bound method)."""


def access(level: str) -> Callable[[HandlerMethod], HandlerMethod]:
    """Mark who may use a handler; the middleware enforces it (no mark = admin only, the safe default).
    The handler keeps its own signature, so handlers can still call each other with their extra arguments."""
    def mark(fn: HandlerMethod) -> HandlerMethod:
        setattr(fn, ACCESS_MARK, level)
        return fn
    return mark


def signed_in(request: web.Request) -> accounts.WebSession:
    """The session of a teacher or admin page: the middleware sends anyone without one to sign in first."""
    session = request[SESSION]
    if session is None:
        raise web.HTTPSeeOther(f"{PREFIX}/login")
    return session


class ConsoleError(Exception):
    """Stop a handler with an HTML error page (status + a message that says what to do)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Console:
    def __init__(self, server: CompanionServer) -> None:
        self.server = server
        self.env = Environment(loader=PackageLoader("appliance.companion.console", "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True))
        self.env.filters["when"] = _when
        self.env.filters["money"] = lambda v: f"${v:.4f}" if v < 0.01 and v else f"${v:.2f}"
        self.css = resources.files("appliance.companion.console").joinpath("static/console.css").read_bytes()

    @property
    def db(self) -> Database:
        return self.server.storage.db

    # -- plumbing ---------------------------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await self._guarded(request, handler)
        except ConsoleError as exc:
            response = self.render(request, "error.html", status=exc.status, message=exc.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise _with_headers(exc, request) from None
            response = self.render(request, "error.html", status=exc.status, message=exc.reason)
        except DatabaseError as exc:
            log.error("console: %s", exc)
            response = self.render(request, "error.html", status=503,
                                   message="The companion cannot reach its database right now. Try again in a "
                                           "minute; if it persists, check the companion's log.")
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
        except Exception:  # a bug must still answer with the console's own page and headers, not a bare 500
            log.exception("console: %s %s failed", request.method, request.path)
            response = self.render(request, "error.html", status=500,
                                   message="Something went wrong on the companion. Try again; if it persists, "
                                           "the companion's log says what happened.")
        return _with_headers(response, request)

    async def _guarded(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        level = getattr(route.handler, ACCESS_MARK, "admin") if route.resource is not None else "public"
        session = await accounts.session_for(self.db, request.cookies.get(SESSION_COOKIE, ""))
        request[SESSION] = session
        if level != "public" and session is None:
            # Back to the page after signing in; a form posted with an expired session cannot be replayed.
            back = request.path_qs if request.method == "GET" else ""
            raise web.HTTPSeeOther(f"{PREFIX}/login" + (f"?{urlencode({'next': back})}" if back else ""))
        if level == "admin" and (session is None or session.role != "admin"):
            raise ConsoleError(403, "This page is for admins. Ask an admin if you need something changed.")
        if request.method == "POST":
            form = await request.post()
            # Signed-in pages check the session's token (the checks above made sure there is a session).
            expected = (session.csrf_token if level != "public" and session is not None
                        else request.cookies.get(LOGIN_COOKIE, ""))
            sent = form.get("csrf")
            if not expected or not isinstance(sent, str) or not _same(sent, expected):
                raise ConsoleError(403, "This form has expired or did not come from this console. Go back, reload "
                                        "the page and try again.")
            request[FORM] = form
        return await handler(request)

    def render(self, request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
        session: accounts.WebSession | None = request.get(SESSION)
        html = self.env.get_template(template).render(session=session, prefix=PREFIX, path=request.path,
                                                      is_admin=bool(session and session.role == "admin"),
                                                      **context)
        return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")

    def field(self, request: web.Request, name: str, limit: int = 200) -> str:
        value = request[FORM].get(name, "")
        if not isinstance(value, str):
            raise ConsoleError(400, f"{name}: expected text, not a file")
        if len(value) > limit:
            raise ConsoleError(400, f"{name}: at most {limit} characters")
        return value

    async def viewer(self, request: web.Request) -> tuple[groups.Scope, list[str] | None]:
        """What the signed-in person may read, and their groups' names (None for an admin, who sees all)."""
        session = signed_in(request)
        scope = groups.Scope.of(session.username, session.role)
        if scope.username is None:
            return scope, None
        return scope, await groups.groups_of(self.db, session.username)

    async def log(self, request: web.Request, action: str, subject: str, lessons: int = 0) -> None:
        """One access-log row for the signed-in person (see :func:`access_log.record_access`)."""
        await access_log.record_access(self.db, signed_in(request).username, action, subject, lessons)

    # -- signing in and out -----------------------------------------------------------------
    @access("public")
    async def css_file(self, request: web.Request) -> web.Response:
        return web.Response(body=self.css, content_type="text/css", headers={"Cache-Control": "max-age=3600"})

    @access("public")
    async def root(self, request: web.Request) -> web.Response:
        raise web.HTTPSeeOther(f"{PREFIX}/lessons" if request[SESSION] else f"{PREFIX}/login")

    @access("public")
    async def login_page(self, request: web.Request) -> web.Response:
        if request[SESSION]:
            raise web.HTTPSeeOther(f"{PREFIX}/lessons")
        return self._login_form(request, 200, "")

    def _login_form(self, request: web.Request, status: int, message: str, username: str = "") -> web.Response:
        # The same token while the cookie lives, so two open sign-in tabs do not invalidate each other.
        kept = request.cookies.get(LOGIN_COOKIE, "")
        token = kept if LOGIN_TOKEN.match(kept) else secrets.token_urlsafe(32)
        response = self.render(request, "login.html", status=status, csrf=token, message=message, username=username,
                               next=_safe_next(request.query.get("next", "")))
        response.set_cookie(LOGIN_COOKIE, token, path=COOKIE_PATH, max_age=3600, httponly=True, secure=True,
                            samesite="Strict")
        return response

    @access("public")
    async def login(self, request: web.Request) -> web.Response:
        username = self.field(request, "username", 200).strip()
        password = self.field(request, "password", accounts.MAX_PASSWORD)
        if not username or not password:
            return self._login_form(request, 400, "Enter your username and password.", username)
        address = self.server.client_address(request)
        result = await accounts.login(self.db, username, password, address)
        if result.throttled:
            return self._login_form(request, 429, "Too many failed sign-ins for this account or from this address. "
                                                  "Wait 15 minutes, or ask an admin to reset your password.",
                                    username)
        if result.token is None:
            log.info("console: failed sign-in for %r from %s", username[:64], address)
            return self._login_form(request, 401, "Wrong username or password.", username)
        log.info("console: %s signed in from %s", username, address)
        response = web.HTTPSeeOther(_safe_next(self.field(request, "next", 500)) or f"{PREFIX}/lessons")
        response.set_cookie(SESSION_COOKIE, result.token, path=COOKIE_PATH, max_age=accounts.ABSOLUTE_S,
                            httponly=True, secure=True, samesite="Strict")
        response.del_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
        raise response

    @access("teacher")
    async def logout(self, request: web.Request) -> web.Response:
        await accounts.close_session(self.db, signed_in(request).token_hash)
        response = web.HTTPSeeOther(f"{PREFIX}/login")
        response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
        raise response

    # -- lessons (teachers) -----------------------------------------------------------------
    def _filter(self, request: web.Request) -> queries.LessonFilter:
        try:
            return queries.LessonFilter.parse(request.query)
        except queries.FilterError as exc:
            raise ConsoleError(400, f"Cannot filter by {exc}.") from None

    @access("teacher")
    async def lessons(self, request: web.Request) -> web.Response:
        flt = self._filter(request)
        scope, my_groups = await self.viewer(request)
        rows = await queries.lessons(self.db, flt, scope)
        return self.render(request, "lessons.html", lessons=rows, flt=flt, levels=queries.LEVELS, my_groups=my_groups,
                           kiosks=await queries.kiosk_ids(self.db, scope), limit=queries.LIST_LIMIT,
                           total_minutes=sum(r.minutes for r in rows), total_cost=sum(r.cost_usd for r in rows),
                           query=urlencode(flt.params()), retention=await self.server.storage.retention_policy())

    @access("teacher")
    async def lesson(self, request: web.Request) -> web.Response:
        scope, _ = await self.viewer(request)
        found = await queries.lesson(self.db, _param(request, "session_id", is_uuid), scope)
        if found is None:  # not there and not yours read the same: a teacher learns nothing of other groups
            raise ConsoleError(404, "No lesson with this id. It may have been removed by retention.")
        await self.log(request, "view-lesson", f"lesson {found.session_id} on {found.kiosk_id}", 1)
        record = found.record or {}
        metrics = _object(record, "metrics")
        return self.render(request, "lesson.html", lesson=found, turns=_objects(record, "turns"),
                           metrics=sorted((k, v) for k, v in metrics.items() if not isinstance(v, dict | list)),
                           targets=_objects(record, "targets"), errors=_objects(record, "errors"),
                           retention=await self.server.storage.retention_policy())

    @access("teacher")
    async def lessons_csv(self, request: web.Request) -> web.Response:
        flt = self._filter(request)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["session_id", "kiosk_id", "day", "started_at", "ended_at", "end_reason", "level", "voice",
                         "duration_s", "est_cost_usd", "learner_turns", "tutor_turns", "transcript"])
        scope, _ = await self.viewer(request)
        items = await queries.lessons_with_records(self.db, flt, scope)
        described = " ".join(f"{k}={v}" for k, v in flt.params().items()) or "all lessons"
        await self.log(request, "export-lessons", f"lessons.csv: {described}", len(items))
        for item in items:
            record = item.record or {}
            metrics = _object(record, "metrics")
            turns = _objects(record, "turns")
            transcript = " | ".join(f"{t.get('role')}: {t.get('text')}" for t in turns)
            writer.writerow([_cell(v) for v in (
                item.session_id, item.kiosk_id, item.day, item.started_at, item.ended_at, item.end_reason,
                item.level or "", item.voice or "", round(item.duration_s, 3), round(item.cost_usd, 6),
                metrics.get("learner_turns", ""), metrics.get("tutor_turns", ""), transcript)])
        name = "lessons" + "".join(f"-{v}" for v in flt.params().values()) + ".csv"
        # A BOM so that spreadsheet programs read the children's words as UTF-8.
        return web.Response(body=("\ufeff" + out.getvalue()).encode("utf-8"), content_type="text/csv",
                            charset="utf-8", headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @access("teacher")
    async def usage(self, request: web.Request) -> web.Response:
        flt = self._filter(request)
        if not flt.params():
            start = (datetime.now(UTC).date() - timedelta(days=USAGE_DAYS - 1)).isoformat()
            flt = queries.LessonFilter(day_from=start)
        scope, my_groups = await self.viewer(request)
        usage = await queries.daily_usage(self.db, flt, scope)
        return self.render(request, "usage.html", flt=flt, usage=usage, levels=queries.LEVELS, my_groups=my_groups,
                           kiosks=await queries.kiosk_ids(self.db, scope),
                           charts=[minutes_chart(usage), cost_chart(usage)])

    # -- erasure (admins) -------------------------------------------------------------------
    @access("admin")
    async def erase_lesson_page(self, request: web.Request) -> web.Response:
        found = await queries.lesson(self.db, _param(request, "session_id", is_uuid), groups.Scope.everything())
        if found is None:
            raise ConsoleError(404, "No lesson with this id: it was erased already, or never stored.")
        return self.render(request, "erase.html", lesson=found, kiosk_id=found.kiosk_id, lessons=1)

    @access("admin")
    async def erase_lesson(self, request: web.Request) -> web.Response:
        session_id = _param(request, "session_id", is_uuid)
        try:
            result = await self.server.storage.erase_lesson(session_id, signed_in(request).username)
        except NothingToErase:
            raise ConsoleError(404, "No lesson with this id: it was erased already, or never stored.") from None
        return self.render(request, "erased.html", result=result)

    async def _erasable_kiosk(self, request: web.Request) -> str:
        kiosk = _param(request, "kiosk_id", queries.KIOSK_ID)
        if kiosk not in await queries.kiosk_ids(self.db, groups.Scope.everything()):
            raise ConsoleError(404, f"No kiosk named {kiosk}.")
        return kiosk

    @access("admin")
    async def erase_kiosk_page(self, request: web.Request, status: int = 200, message: str = "") -> web.Response:
        kiosk = await self._erasable_kiosk(request)
        return self.render(request, "erase.html", status=status, message=message, lesson=None, kiosk_id=kiosk,
                           lessons=await queries.lesson_count(self.db, kiosk))

    @access("admin")
    async def erase_kiosk(self, request: web.Request) -> web.Response:
        kiosk = await self._erasable_kiosk(request)
        if self.field(request, "confirm", 100).strip() != kiosk:
            return await self.erase_kiosk_page(request, 400, f"Type the kiosk's name, {kiosk}, to confirm. "
                                                             "Nothing was erased.")
        result = await self.server.storage.erase_kiosk(kiosk, signed_in(request).username)
        return self.render(request, "erased.html", result=result)

    # -- the fleet (admins run it; teachers see their groups' kiosks) -------------------------
    @access("teacher")
    async def fleet(self, request: web.Request, status: int = 200, message: str = "") -> web.Response:
        notice = NOTICES.get(request.query.get("done", ""), "")
        scope, my_groups = await self.viewer(request)
        admin = my_groups is None
        return self.render(request, "fleet.html", status=status, kiosks=await queries.fleet(self.db, scope),
                           my_groups=my_groups, groups=await groups.list_groups(self.db) if admin else [],
                           warnings=self.server.model_choice.warnings() if admin else [], notice=notice,
                           message=message,
                           default_minutes=self.server.config.daily_minutes)

    @access("admin")
    async def add_kiosk(self, request: web.Request) -> web.Response:
        name = self.field(request, "kiosk_id", 100).strip()
        try:
            key = await queries.add_kiosk(self.db, name)
        except queries.KioskError as exc:
            return await self.fleet(request, 400, str(exc))
        log.info("console: %s added kiosk %s", signed_in(request).username, name)
        await self.log(request, "add-kiosk", f"kiosk {name}")
        return self.render(request, "kiosk_added.html", kiosk_id=name, key=key)

    @access("admin")
    async def revoke_kiosk(self, request: web.Request) -> web.Response:
        kiosk = _param(request, "kiosk_id", queries.KIOSK_ID)
        if not await self.server.storage.revoke_kiosk(kiosk):
            raise ConsoleError(404, f"No active kiosk named {kiosk}.")
        log.info("console: %s revoked kiosk %s", signed_in(request).username, kiosk)
        await self.log(request, "revoke-kiosk", f"kiosk {kiosk}")
        raise web.HTTPSeeOther(f"{PREFIX}/fleet?done=revoked")

    @access("admin")
    async def set_budget(self, request: web.Request) -> web.Response:
        kiosk = _param(request, "kiosk_id", queries.KIOSK_ID)
        try:
            minutes = queries.parse_minutes(self.field(request, "daily_minutes", 50))
        except queries.KioskError as exc:
            return await self.fleet(request, 400, f"{kiosk}: {exc}")
        if not await self.server.storage.set_daily_minutes(kiosk, minutes):
            raise ConsoleError(404, f"No kiosk named {kiosk}.")
        shown = "default" if minutes is None else f"{minutes:g} min"
        await self.log(request, "set-budget", f"kiosk {kiosk}: {shown}")
        raise web.HTTPSeeOther(f"{PREFIX}/fleet?done=budget")

    # -- accounts (admins) ------------------------------------------------------------------
    @access("admin")
    async def users(self, request: web.Request, status: int = 200, message: str = "") -> web.Response:
        member_of: dict[str, list[str]] = {}
        for group in await groups.list_groups(self.db):
            for name in group.members:
                member_of.setdefault(name, []).append(group.name)
        return self.render(request, "users.html", status=status, users=await accounts.list_users(self.db),
                           member_of=member_of,
                           notice=NOTICES.get(request.query.get("done", ""), ""), message=message,
                           min_password=accounts.MIN_PASSWORD)

    @access("admin")
    async def add_user(self, request: web.Request) -> web.Response:
        username = self.field(request, "username", 100).strip()
        role = self.field(request, "role", 20) or "teacher"
        password = accounts.new_password()
        try:
            await accounts.add_user(self.db, username, password, role)
        except accounts.AccountError as exc:
            return await self.users(request, 400, str(exc))
        log.info("console: %s added %s account %s", signed_in(request).username, role, username)
        await self.log(request, "add-user", f"{role} {username}")
        return self.render(request, "password.html", username=username, password=password, created=True)

    async def _target_user(self, request: web.Request) -> str:
        name = _param(request, "username", accounts.USERNAME)
        if await accounts.get_user(self.db, name) is None:
            raise ConsoleError(404, f"No account named {name}.")
        if name == signed_in(request).username:
            raise ConsoleError(400, "You cannot disable or reset your own account here: ask another admin, or use "
                                    "`stella-kiosk companion add-user` on the companion.")
        return name

    @access("admin")
    async def disable_user(self, request: web.Request) -> web.Response:
        name = await self._target_user(request)
        await accounts.set_disabled(self.db, name, True)
        await self.log(request, "disable-user", f"account {name}")
        raise web.HTTPSeeOther(f"{PREFIX}/users?done=disabled")

    @access("admin")
    async def enable_user(self, request: web.Request) -> web.Response:
        name = await self._target_user(request)
        await accounts.set_disabled(self.db, name, False)
        await self.log(request, "enable-user", f"account {name}")
        raise web.HTTPSeeOther(f"{PREFIX}/users?done=enabled")

    @access("admin")
    async def reset_password(self, request: web.Request) -> web.Response:
        name = await self._target_user(request)
        password = accounts.new_password()
        await accounts.set_password(self.db, name, password)
        log.info("console: %s reset the password of %s", signed_in(request).username, name)
        await self.log(request, "reset-password", f"account {name}")
        return self.render(request, "password.html", username=name, password=password, created=False)


def _with_headers(response: ResponseT, request: web.Request) -> ResponseT:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.endswith(".css"):
        # Lessons, keys and passwords must not stay in a shared computer's cache.
        response.headers["Cache-Control"] = "no-store"
    return response


def _same(sent: str, expected: str) -> bool:
    """Constant-time, so the token cannot be guessed a character at a time from response times."""
    return hmac.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def _param(request: web.Request, name: str, pattern: re.Pattern[str] | Callable[[str], bool]) -> str:
    """A name from the URL, checked before it reaches SQL (PostgreSQL refuses NUL characters, for one): a
    malformed one names nothing, so it is a 404."""
    value = request.match_info[name]
    valid = pattern.match(value) if isinstance(pattern, re.Pattern) else pattern(value)
    if not valid:
        raise ConsoleError(404, f"There is no {name.replace('_', ' ')} like that.")
    return value


def _object(record: UncheckedRecord, key: str) -> dict[str, Any]:
    """A stored record's object field, or an empty one: records reduced by retention, or stored by older
    companions, may lack it."""
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def _objects(record: UncheckedRecord, key: str) -> list[dict[str, Any]]:
    """The objects in a stored record's list field (anything else in it is skipped)."""
    value = record.get(key)
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _safe_next(target: str) -> str:
    """Only a path inside the console: a login link must not send anyone to another site."""
    return target if SAFE_NEXT.match(target) else ""


def _cell(value: Any) -> Any:
    """Spreadsheets run cells that start with = + - @ as formulas: a transcript must never become one."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _when(value: float | None) -> str:
    if value is None:
        return "never"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M UTC")


def setup_console(app: web.Application, server: CompanionServer) -> None:
    """Mount the console under /console/ on the companion's app (``/`` redirects there)."""
    console = Console(server)
    sub = web.Application(middlewares=[console.middleware])
    r = sub.router
    r.add_get("/", console.root)
    r.add_get("/console.css", console.css_file)
    r.add_get("/login", console.login_page)
    r.add_post("/login", console.login)
    r.add_post("/logout", console.logout)
    r.add_get("/lessons", console.lessons)
    r.add_get("/lessons.csv", console.lessons_csv)
    r.add_get("/lessons/{session_id}", console.lesson)
    r.add_get("/lessons/{session_id}/erase", console.erase_lesson_page)
    r.add_post("/lessons/{session_id}/erase", console.erase_lesson)
    r.add_get("/kiosks/{kiosk_id}/erase", console.erase_kiosk_page)
    r.add_post("/kiosks/{kiosk_id}/erase", console.erase_kiosk)
    r.add_get("/usage", console.usage)
    r.add_get("/fleet", console.fleet)
    r.add_post("/kiosks", console.add_kiosk)
    r.add_post("/kiosks/{kiosk_id}/revoke", console.revoke_kiosk)
    r.add_post("/kiosks/{kiosk_id}/budget", console.set_budget)
    r.add_get("/users", console.users)
    r.add_post("/users", console.add_user)
    r.add_post("/users/{username}/disable", console.disable_user)
    r.add_post("/users/{username}/enable", console.enable_user)
    r.add_post("/users/{username}/reset", console.reset_password)
    # Imported here: these pages build on this module's Console, access marks and helpers.
    from appliance.companion.console.admin_pages import AdminPages

    AdminPages(console).add_routes(r)
    from appliance.companion.console.updates_page import UpdatesPage

    UpdatesPage(console).add_routes(r)
    app.add_subapp(PREFIX, sub)

    async def to_console(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{PREFIX}/")
    app.router.add_get("/", to_console)

