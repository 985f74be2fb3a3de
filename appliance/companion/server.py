"""The companion service: device-key auth, lesson planning, Realtime tokens, lesson records.

It is the only place that holds the OpenAI key. Kiosks authenticate with their own device key and
only ever see their own data. Errors are JSON ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NotRequired, TypedDict, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

from appliance import __version__
from appliance.common.httpserve import start_http
from appliance.common.safe_text import constant_error, loads_marking
from appliance.companion import limits, rollout
from appliance.companion.access_log import purge_access_log
from appliance.companion.db import RETRY_AFTER_S, DatabaseError
from appliance.companion.edge import (
    MAX_BODY,
    bounded_bodies,
    client_address,
    json_error,
    json_response,
    trusted_proxies,
)
from appliance.companion.heartbeat import InvalidHeartbeat, validate_heartbeat
from appliance.companion.models import DEFAULT_MODELS, MODEL_RETRY_S, ModelChoice, ModelStatus, model_list
from appliance.companion.storage import CONFLICT, CORRECTED, DUPLICATE, UNKNOWN, Caller, Storage, open_storage
from appliance.companion.updates import UpdateService
from appliance.companion.upstream import (
    LessonPlan,
    Upstream,
    UpstreamError,
    fallback_pack,
    new_plan_id,
    tutor_instructions,
    validate_pack,
)
from appliance.contract.record import InvalidRecord, SessionRecord, validate_record
from appliance.contract.voices import DEFAULT_VOICE

log = logging.getLogger(__name__)

SINCE = re.compile(r"^\d{4}-\d\d-\d\d[0-9T:.Z+-]{0,30}$")
#: The console's own libraries (the companion extra); without them the kiosk API still serves.
CONSOLE_LIBRARIES = frozenset({"jinja2", "argon2", "markupsafe"})
MAX_BATCH = 100
REQUEST_LOG_SIZE = 1000
MODEL_CHECK_INTERVAL_S = 24 * 3600
MAINTENANCE_INTERVAL_S = 24 * 3600
HOUR_S = 3600.0


@dataclass(frozen=True)
class CompanionConfig:
    host: str = "127.0.0.1"
    port: int = 0
    db_path: Path | str = Path("companion.db")
    """A SQLite file, or a postgresql:// DSN for a district's shared database."""
    openai_base_url: str = "https://api.openai.com"
    openai_api_key: str = field(default="", repr=False)
    realtime_model: str | tuple[str, ...] = DEFAULT_MODELS["realtime"]
    """One model, or an ordered list: on ``model_not_found`` the next one is used (same for the others)."""
    voice: str = DEFAULT_VOICE
    """The tutor's voice for every level without its own (one of the GA voices)."""
    level_voices: Mapping[str, str] = field(default_factory=dict)
    """CEFR level → the tutor's voice for lessons planned at that level (over ``voice``). A kiosk whose own
    config names a voice uses that one instead."""
    transcription_model: str | tuple[str, ...] = DEFAULT_MODELS["transcription"]
    planner_model: str | tuple[str, ...] = DEFAULT_MODELS["planner"]
    default_level: str = "A2"
    token_ttl_s: int = 600
    silence_ms: int = 500
    tokens_per_hour: int = 60
    """Per-kiosk cap on ephemeral tokens (each can start a paid call), over a sliding hour, shared by every
    companion on the same database."""
    plans_per_hour: int = 120
    """Per-kiosk cap on lesson plans (each may cost an upstream planner call), over a sliding hour."""
    daily_minutes: float = 0.0
    """Default daily budget of lesson minutes per kiosk (the companion's UTC day; a kiosk's own budget set
    with `companion set-budget` overrides it); 0 = no budget."""
    auth_failures: int = 20
    """Wrong or missing device keys allowed per client address in auth_window_s; then that address's wrong keys
    get 429 until the window has passed (a right key is always served, and never counted)."""
    auth_window_s: float = 600.0
    trust_proxy: bool | str | tuple[str, ...] = False
    """The reverse proxy (nginx) in front of the companion, by address (one, or a list): requests from it
    are counted by the last X-Forwarded-For entry (the one it appended). ``true`` means a proxy on this
    machine (127.0.0.1 and ::1). Off by default: anyone could otherwise pick their own address."""
    transcript_days: int = 365
    """Transcripts of lessons received longer ago are reduced to their metrics (daily); 0 keeps them forever."""
    access_log_days: int = 365
    """Access-log rows (who viewed, exported or changed what) older than this are removed (daily); 0 keeps them."""
    upstream_timeout_s: float = 10.0
    model_retry_s: float = MODEL_RETRY_S
    """A model that failed with ``model_not_found`` is skipped this long, then tried again (a retired
    model costs one refused request per period; a model that was only briefly gone comes back)."""
    updates_dir: Path | None = None
    """The signed update repository served to kiosks (docs/UPDATES.md); None serves none."""

    def models(self) -> dict[str, tuple[str, ...]]:
        """Each role's ordered model list (a single name is a list of one)."""
        return {"planner": model_list(self.planner_model), "realtime": model_list(self.realtime_model),
                "transcription": model_list(self.transcription_model)}


def error(status: int, code: str, message: str) -> web.Response:
    return json_error(status, code, message)


T = TypeVar("T")
#: The model each role uses for one attempt (None: a role a lesson can do without, e.g. transcription).
Picked = dict[str, str | None]


def blamed_role(roles: tuple[str, ...], picked: Picked, exc: UpstreamError) -> str:
    """The role a ``model_not_found`` is about: the one its ``param`` names (``…transcription.model``), else
    the one whose model its message quotes (a proxy may leave ``param`` out), else the first role."""
    for role in roles:
        if role in (exc.param or ""):
            return role
    for role in roles:
        model = picked[role]
        if model is not None and f"'{model}'" in exc.message:
            return role
    return roles[0]


def required(picked: Picked, role: str) -> str:
    """The model picked for a role every request needs (only optional roles are ever None)."""
    model = picked[role]
    if model is None:
        raise UpstreamError(f"no {role} model to use", upstream_code="model_not_found")
    return model


class ResultError(TypedDict):
    code: str
    message: str


class StoreResult(TypedDict):
    """One record's outcome in a summarize or batch answer (PROTOCOL §2)."""

    session_id: str | None
    stored: NotRequired[bool]
    duplicate: NotRequired[bool]
    error: NotRequired[ResultError]


HOLDS_NAN: web.RequestKey[bool] = web.RequestKey("holds_nan", bool)
"""Whether the request's body held NaN or Infinity (left as markers for per-record refusal)."""
PER_RECORD = frozenset({"/api/sessions/batch", "/api/sessions/corrections"})
"""Routes whose ``sessions`` are answered one by one."""

KioskRoute = Callable[["CompanionServer", web.Request, Caller, dict[str, Any]], Awaitable[web.Response]]


def kiosk_json(handler: KioskRoute) -> Callable[[CompanionServer, web.Request], Awaitable[web.Response]]:
    """A kiosk route with a JSON object body: every refusal (401, 429, 400, 403, 413) is answered before
    ``handler`` runs, and it gets the kiosk behind the device key and the cleaned body."""
    @functools.wraps(handler)
    async def route(self: CompanionServer, request: web.Request) -> web.Response:
        parsed = await self._body(request)
        if isinstance(parsed, web.Response):
            return parsed
        return await handler(self, request, *parsed)
    return route


class CompanionServer:
    def __init__(self, config: CompanionConfig, storage: Storage | None = None,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        """Wall time for limits, budgets and retention (tests move it instead of waiting)."""
        self.monotonic = monotonic
        """Elapsed time for how long a failed model is skipped (tests move it instead of waiting)."""
        self._storage = storage
        self.upstream = Upstream(config.openai_base_url, config.openai_api_key, timeout_s=config.upstream_timeout_s)
        self.requests: deque[tuple[str, str]] = deque(maxlen=REQUEST_LOG_SIZE)
        """(method, path) of the latest requests served, for tests and benchmarks (bounded: a
        companion runs for months)."""
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.proxies = trusted_proxies(config.trust_proxy)
        self.app = self._build_app()
        self.model_choice = ModelChoice(config.models(), retry_s=config.model_retry_s, clock=monotonic)
        self.models_checked = asyncio.Event()
        """Set after each check of the configured models (at start, then daily)."""
        self._model_watch: asyncio.Task[None] | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self._update_refresh: asyncio.Task[None] | None = None
        self.maintained = asyncio.Event()
        """Set after each retention and pruning round (at start, then daily)."""

    # -- lifecycle --------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[bounded_bodies, self._errors])
        app.router.add_get("/api/health", self.health)
        app.router.add_post("/api/planner", self.planner)
        app.router.add_post("/api/realtime-token", self.realtime_token)
        app.router.add_post("/api/summarize", self.summarize)
        app.router.add_post("/api/sessions/batch", self.batch)
        app.router.add_post("/api/sessions/corrections", self.corrections)
        app.router.add_get("/api/sessions", self.list_sessions)
        app.router.add_post("/api/heartbeat", self.heartbeat)
        app.router.add_get("/api/updates/assignment", self.update_assignment)
        self.updates = UpdateService(self.config.updates_dir) if self.config.updates_dir else None
        if self.updates is not None:
            app.router.add_get("/updates/{kind:metadata|targets}/{name}", self.update_file)
        try:  # jinja2 and argon2-cffi: the companion's extra, not needed on a kiosk that runs the demo
            from appliance.companion.console import setup_console
        except ModuleNotFoundError as exc:
            if exc.name not in CONSOLE_LIBRARIES:
                raise  # our own code is broken: say so, do not hide it as "console off"
            log.warning("web console off: %s (pip install 'stella-kiosk[companion]')", exc)
        else:
            setup_console(app, self)
        return app

    async def open_storage(self) -> Storage:
        """Open the database (and migrate it) unless it was given or is open already."""
        if self._storage is None:
            self._storage = await open_storage(self.config.db_path)
        storage = self._storage
        storage.clock = self.clock
        storage.transcript_days = self.config.transcript_days
        return storage

    @property
    def storage(self) -> Storage:
        """The database, once :meth:`start` (or :meth:`open_storage`) has opened it."""
        if self._storage is None:
            raise RuntimeError("the companion's storage is not open: start() opens it")
        return self._storage

    async def start(self) -> None:
        await self.open_storage()
        self._runner, self.port = await start_http(self.app, self.config.host, self.config.port)
        self._model_watch = asyncio.create_task(self._watch_models())
        self._maintenance = asyncio.create_task(self._maintain())
        if self.updates is not None:
            self._update_refresh = asyncio.create_task(self.updates.keep_fresh())

    async def check_models(self) -> list[ModelStatus]:
        """Look up every configured model upstream now (shutdown dates); warnings go to the log and health."""
        self.models_checked.clear()
        try:
            return await self.model_choice.check(self.upstream.model)
        finally:
            self.models_checked.set()

    async def _watch_models(self) -> None:
        """At start and then daily: a shutdown is announced months ahead, a daily look is plenty."""
        while True:
            await self.check_models()
            await asyncio.sleep(MODEL_CHECK_INTERVAL_S)

    async def maintain(self) -> None:
        """Reduce transcripts past the retention period, drop rate events older than every window, and remove
        access-log rows past theirs."""
        try:
            reduced = await self.storage.reduce_old_transcripts()
            if reduced:
                log.info("retention: reduced %d lesson(s) older than %d days to their metrics", reduced,
                         self.config.transcript_days)
            await limits.prune(self.storage.db, self.clock() - max(HOUR_S, self.config.auth_window_s))
            purged = await purge_access_log(self.storage.db, self.config.access_log_days, self.clock())
            if purged:
                log.info("retention: removed %d access-log row(s) older than %d days", purged,
                         self.config.access_log_days)
        finally:
            self.maintained.set()

    async def _maintain(self) -> None:
        """At start, then daily; several companions may do it at once (each step is idempotent)."""
        while True:
            try:
                await self.maintain()
            except Exception as exc:  # a database hiccup must not end the daily rounds
                log.error("retention and pruning failed (will retry tomorrow): %s", exc)
            await asyncio.sleep(MAINTENANCE_INTERVAL_S)

    @property
    def base_url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        for task in (self._model_watch, self._maintenance, self._update_refresh):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._model_watch = self._maintenance = self._update_refresh = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.upstream.aclose()
        if self._storage is not None:
            await self._storage.close()

    async def provision(self, kiosk_id: str, key: str) -> None:
        await (await self.open_storage()).add_kiosk(kiosk_id, key)

    # -- plumbing ---------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return error(413, "too_large", f"request bodies are limited to {MAX_BODY} bytes")
        except web.HTTPException as exc:
            if exc.status >= 400:
                return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
            raise
        except DatabaseError as exc:
            # Restarting, unreachable or locked: the client's request was fine, so it may come back soon.
            log.error("%s %s: %s", request.method, request.path, exc)
            response = error(503, "database_unavailable", "the companion cannot reach its database right now; "
                                                          "try again shortly")
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
            return response
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error(500, "internal_error", "the companion failed to answer; its log says why")

    def client_address(self, request: web.Request) -> str:
        """Who is knocking: the peer, or for our own reverse proxy (trust_proxy) the address it appended."""
        return client_address(request, self.proxies)

    async def _kiosk(self, request: web.Request) -> Caller | web.Response:
        """The kiosk of the request's device key, or the answer to give: 401, or 429 for an address that
        guessed wrong too often. A right key is always let in and never counted: behind a school's NAT
        every kiosk shares one address with the laptop that guesses."""
        bucket = f"authfail:{self.client_address(request)}"
        window = self.config.auth_window_s
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth.startswith("Bearer ") else ""
        found = await self.storage.authenticate(key, bucket, window)
        if found.caller is not None:
            return found.caller
        if found.failures >= self.config.auth_failures:
            verdict = limits.Verdict(False, retry_after_s=limits.retry_after(found.oldest_failure, window,
                                                                             self.clock()))
            return self._too_many("too many wrong device keys from this address; try again later", verdict)
        verdict = await limits.reserve(self.storage.db, bucket, self.config.auth_failures, window, self.clock())
        if not verdict.allowed:
            return self._too_many("too many wrong device keys from this address; try again later", verdict)
        return error(401, "unauthorized", "a valid device key is required (Authorization: Bearer …)")

    @staticmethod
    def _too_many(message: str, verdict: limits.Verdict, code: str = "rate_limited") -> web.Response:
        response = error(429, code, message)
        response.headers["Retry-After"] = str(int(verdict.retry_after_s + 0.999))
        return response

    async def _body(self, request: web.Request) -> tuple[Caller, dict[str, Any]] | web.Response:
        caller = await self._kiosk(request)
        if isinstance(caller, web.Response):
            return caller
        try:
            # Cleaned once at the edge: lone surrogates and NULs would fail in the database driver, and
            # nesting past MAX_DEPTH is no record or plan request.
            body, marked = loads_marking(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return error(413, "too_large", f"request bodies are limited to {MAX_BODY} bytes")
        except (ValueError, RecursionError):  # UnicodeDecodeError and UnsafeJSON are ValueErrors
            return error(400, "bad_request", "the body is not valid JSON (UTF-8, nested at most 32 levels)")
        if not isinstance(body, dict):
            return error(400, "bad_request", "the body must be a JSON object")
        request[HOLDS_NAN] = marked
        if marked:
            # NaN and Infinity are refused where they are: in a batch, only the records holding one (the
            # others are stored, so a kiosk's batch cannot fail on every retry); elsewhere the whole body.
            outside = {k: v for k, v in body.items() if k != "sessions"} if request.path in PER_RECORD else body
            problem = constant_error(outside)
            if problem:
                return error(400, "bad_request", f"the body is not valid JSON: {problem}")
        claimed = body.get("kiosk_id")
        if claimed is not None and claimed != caller.kiosk_id:
            return error(403, "forbidden", "kiosk_id does not match the device key")
        return caller, body

    # -- routes -----------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        """200 ``ok: true``; 503 ``ok: false`` with the reason when no lesson can start because no realtime
        model works (a monitor or the kiosk's doctor then sees it, not just a log line)."""
        choice = self.model_choice
        body: dict[str, Any] = {"ok": True, "version": __version__, "warnings": choice.warnings(),
                                "models": {role: choice.current(role) for role in choice.models},
                                "retention": await self.storage.retention_policy()}
        reason = choice.no_realtime_reason()
        if reason is None:
            return json_response(body)
        body.update(ok=False, reason=reason, error={"code": "no_realtime_model", "message": reason})
        return json_response(body, status=503)

    @kiosk_json
    async def planner(self, request: web.Request, caller: Caller, body: dict[str, Any]) -> web.Response:
        kiosk = caller.kiosk_id
        learner = body.get("learner")
        level = (learner.get("level") if isinstance(learner, dict) else None) or self.config.default_level
        if level not in ("A1", "A2", "B1", "B2", "C1", "C2"):
            return error(400, "bad_request", f"learner.level {level!r} is not a CEFR level A1..C2")
        recent = [t for t in body.get("recent_targets", []) if isinstance(t, str)][:50] \
            if isinstance(body.get("recent_targets"), list) else []
        # Counted before the (possibly paid) upstream call, whether it then succeeds or falls back.
        verdict = await limits.reserve(self.storage.db, f"plan:{kiosk}", self.config.plans_per_hour, HOUR_S,
                                       self.clock())
        if not verdict.allowed:
            return self._too_many(f"at most {self.config.plans_per_hour} lesson plans per hour per kiosk", verdict)
        plan_id = new_plan_id()
        source = "upstream"
        try:
            _, pack = await self._with_fallback(
                ("planner",), lambda picked: self.upstream.plan(model=required(picked, "planner"), level=level,
                                                                recent=recent))
        except UpstreamError as exc:
            log.warning("planner upstream failed (%s); serving the built-in curriculum", exc.message)
            pack = validate_pack(fallback_pack(level, recent, plan_id))
            source = "curriculum"
        plan: LessonPlan = {"plan_id": plan_id, **pack, "level": level}  # the level asked for: teachers filter by it
        await self.storage.save_plan(plan, kiosk, source)
        return json_response(plan)

    @kiosk_json
    async def realtime_token(self, request: web.Request, caller: Caller, body: dict[str, Any]) -> web.Response:
        kiosk = caller.kiosk_id
        exhausted = self._budget_exhausted(caller)
        if exhausted:
            return exhausted
        plan = None
        plan_id = body.get("plan_id")
        if plan_id is not None:
            if not isinstance(plan_id, str):
                return error(400, "bad_request", "plan_id must be a string")
            plan = await self.storage.get_plan(plan_id, kiosk)
            if plan is None:
                return error(404, "unknown_plan", f"no plan {plan_id} for this kiosk")
        prompt = tutor_instructions(plan, self.config.default_level)
        level = (plan or {}).get("level") or self.config.default_level
        voice = self.config.level_voices.get(str(level), self.config.voice)
        # The slot is taken before the upstream call (so concurrent requests cannot all slip through) and
        # given back when no token came of it.
        verdict = await limits.reserve(self.storage.db, f"token:{kiosk}", self.config.tokens_per_hour, HOUR_S,
                                       self.clock())
        if not verdict.allowed:
            return self._too_many(f"at most {self.config.tokens_per_hour} lessons per hour per kiosk", verdict)
        try:
            picked, (value, expires_at) = await self._with_fallback(
                ("realtime", "transcription"), lambda picked: self._mint(prompt, voice, picked))
        except BaseException as exc:
            await limits.release(self.storage.db, verdict.event_id)
            if not isinstance(exc, UpstreamError):
                raise
            log.warning("token upstream failed: %s", exc.message)
            if exc.upstream_code == "model_not_found":
                return error(502, "model_not_found",
                             f"could not mint a Realtime token: {exc.message}; every configured model failed "
                             f"(realtime_model / transcription_model in the companion config)")
            return error(exc.status, exc.code, f"could not mint a Realtime token: {exc.message}")
        return json_response({"token": value, "expires_at": expires_at,
                              "expires_in": self._expires_in(expires_at), "model": picked["realtime"],
                              "voice": voice, "prompt": prompt,
                              # What the token's session holds, so a kiosk can send it again itself
                              # to servers that ignore token-embedded config; null: no input
                              # transcription (every transcription model failed), the kiosk then keeps
                              # the learner's turns as audio only.
                              "transcription_model": picked["transcription"],
                              "silence_ms": self.config.silence_ms,
                              "activeTargets": plan["targets"] if plan else []})

    def _expires_in(self, expires_at: float) -> float:
        """Seconds the token still lives, by this companion's clock (never more than it was minted for).

        Why: ``expires_at`` is an instant on the companion's (and OpenAI's) clock, and a kiosk's clock may be
        years off (a Pi without a battery-backed clock). A lifetime lets the kiosk place the expiry on its own
        monotonic clock without reading its wall clock. Capped at the configured lifetime, so a companion
        clock behind OpenAI's never makes a token look longer-lived than it can be."""
        return round(max(0.0, min(float(self.config.token_ttl_s), expires_at - self.clock())), 3)

    async def _mint(self, prompt: str, voice: str, picked: Picked) -> tuple[str, float]:
        return await self.upstream.client_secret(
            model=required(picked, "realtime"), voice=voice, instructions=prompt,
            ttl_s=self.config.token_ttl_s, transcription_model=picked["transcription"],
            silence_ms=self.config.silence_ms)

    async def _with_fallback(self, roles: tuple[str, ...],
                             attempt: Callable[[Picked], Awaitable[T]]) -> tuple[Picked, T]:
        """Run ``attempt`` with the models picked for it; on ``model_not_found`` skip the model *that attempt
        used* for the role the error blames (by ``param``) and try again with the next choice.

        Why the models are picked once per attempt and passed in: requests run concurrently, and by the
        time one fails another may already have moved on to the fallback; marking "whatever is current
        now" would skip the working fallback and fail requests it would have served."""
        for _ in range(1 + sum(len(self.model_choice.models[role]) for role in roles)):
            picked = {role: self.model_choice.choose(role) for role in roles}
            try:
                return picked, await attempt(picked)
            except UpstreamError as exc:
                if exc.upstream_code != "model_not_found":
                    raise
                role = blamed_role(roles, picked, exc)
                failed = picked[role]
                if failed is None or not self.model_choice.mark_failed(role, failed, exc.message):
                    raise
        raise UpstreamError("every configured model failed", upstream_code="model_not_found")

    def _budget_exhausted(self, caller: Caller) -> web.Response | None:
        """The kiosk's own daily budget, else the configured default (0 = none), against the day's counter
        (read with the device key, in the same round trip)."""
        budget = caller.daily_minutes if caller.daily_minutes is not None else self.config.daily_minutes
        if budget > 0 and caller.minutes_today >= budget:
            return error(429, "daily_budget_exhausted", f"this kiosk used its {budget:g} lesson minutes for today")
        return None

    async def _store(self, kiosk: str, records: list[Any], holds_nan: bool) -> list[StoreResult]:
        """One result per record: stored (maybe a duplicate), or an error the kiosk can act on."""
        results: list[StoreResult] = []
        valid: list[tuple[int, SessionRecord]] = []
        for raw in records:
            try:
                record = _validated(raw, holds_nan)
            except InvalidRecord as exc:
                session_id = raw.get("session_id") if isinstance(raw, dict) else None
                results.append({"session_id": session_id if isinstance(session_id, str) else None,
                                "error": {"code": "invalid_record", "message": str(exc)}})
                continue
            if record["kiosk_id"] != kiosk:
                results.append({"session_id": record["session_id"],
                                "error": {"code": "forbidden", "message": "kiosk_id does not match the device key"}})
                continue
            valid.append((len(results), record))
            results.append({"session_id": record["session_id"]})  # replaced once stored
        outcomes = await self.storage.store_sessions([r for _, r in valid]) if valid else []
        for (index, record), outcome in zip(valid, outcomes, strict=True):
            session_id = record["session_id"]
            if outcome == CONFLICT:
                log.warning("kiosk %s sent session %s, which another kiosk already stored; refused", kiosk,
                            session_id)
                results[index] = {"session_id": session_id, "error": {
                    "code": "conflict", "message": "another kiosk already stored a lesson with this session_id"}}
                continue
            if outcome != DUPLICATE:
                log.info("stored session %s from %s", session_id, kiosk)
            results[index] = {"session_id": session_id, "stored": True, "duplicate": outcome == DUPLICATE}
        return results

    @kiosk_json
    async def summarize(self, request: web.Request, caller: Caller, body: dict[str, Any]) -> web.Response:
        kiosk = caller.kiosk_id
        [result] = await self._store(kiosk, [body], request[HOLDS_NAN])
        if "error" in result:
            status = {"forbidden": 403, "conflict": 409}.get(result["error"]["code"], 400)
            return error(status, result["error"]["code"], result["error"]["message"])
        return json_response({"stored": True, "session_id": result["session_id"]})

    @kiosk_json
    async def batch(self, request: web.Request, caller: Caller, body: dict[str, Any]) -> web.Response:
        kiosk = caller.kiosk_id
        sessions = body.get("sessions")
        if not isinstance(sessions, list) or len(sessions) > MAX_BATCH:
            return error(400, "bad_request", f"sessions must be a list of at most {MAX_BATCH}")
        return json_response({"results": await self._store(kiosk, sessions, request[HOLDS_NAN])})

    @kiosk_json
    async def corrections(self, request: web.Request, caller: Caller, body: dict[str, Any]) -> web.Response:
        """Corrected dates of lessons a kiosk delivered before its clock was synchronized: each one is the
        stored lesson with every date moved by ``metrics.clock_corrected_s`` (nothing else may change)."""
        sessions = body.get("sessions")
        if not isinstance(sessions, list) or len(sessions) > MAX_BATCH:
            return error(400, "bad_request", f"sessions must be a list of at most {MAX_BATCH}")
        results: list[dict[str, Any]] = []
        valid: list[tuple[int, dict[str, Any]]] = []
        for record in sessions:
            session_id = record.get("session_id") if isinstance(record, dict) else None
            session_id = session_id if isinstance(session_id, str) else None
            try:
                _validated(record, request[HOLDS_NAN])
            except InvalidRecord as exc:
                results.append({"session_id": session_id, "error": {"code": "invalid_record", "message": str(exc)}})
                continue
            if record["kiosk_id"] != caller.kiosk_id:
                results.append({"session_id": session_id,
                                "error": {"code": "forbidden", "message": "kiosk_id does not match the device key"}})
                continue
            valid.append((len(results), record))
            results.append({})
        outcomes = await self.storage.correct_dates([r for _, r in valid]) if valid else []
        codes = {UNKNOWN: "unknown_session", CONFLICT: "conflict", "invalid": "invalid_correction"}
        for (index, record), (outcome, message) in zip(valid, outcomes, strict=True):
            session_id = record["session_id"]
            if outcome == CORRECTED:
                log.info("corrected the dates of session %s from %s", session_id, caller.kiosk_id)
                results[index] = {"session_id": session_id, "corrected": True}
                continue
            log.warning("kiosk %s sent corrected dates for session %s; refused: %s", caller.kiosk_id, session_id,
                        message)
            results[index] = {"session_id": session_id, "error": {"code": codes[outcome], "message": message}}
        return json_response({"results": results})

    async def list_sessions(self, request: web.Request) -> web.Response:
        caller = await self._kiosk(request)
        if isinstance(caller, web.Response):
            return caller
        kiosk = caller.kiosk_id
        requested = request.query.get("kiosk")
        if requested and requested != kiosk:
            return error(403, "forbidden", "a kiosk can only read its own sessions")
        since = request.query.get("since")
        if since is not None and not SINCE.match(since):
            return error(400, "bad_request", "since must be an ISO date or time, e.g. 2026-11-24")
        return json_response({"sessions": await self.storage.sessions(kiosk, since)})

    @kiosk_json
    async def heartbeat(self, request: web.Request, caller: Caller, body: dict[str, Any]) -> web.Response:
        """A kiosk's latest state for the fleet view, stamped with the companion's clock."""
        kiosk = caller.kiosk_id
        try:
            report = validate_heartbeat(body)
        except InvalidHeartbeat as exc:
            return error(400, "bad_request", str(exc))
        await self.storage.save_heartbeat(kiosk, report)
        return json_response({"ok": True})

    async def update_assignment(self, request: web.Request) -> web.Response:
        """The release this kiosk should run by its channel's staged rollout (appliance/companion/rollout.py)."""
        caller = await self._kiosk(request)
        if isinstance(caller, web.Response):
            return caller
        return json_response(await rollout.assignment(self.storage.db, caller.kiosk_id))

    async def update_file(self, request: web.Request) -> web.StreamResponse:
        """A file of the signed update repository, for a kiosk with its device key (every byte is also
        verified by the kiosk against signed metadata: the key only keeps releases within the district)."""
        caller = await self._kiosk(request)
        if isinstance(caller, web.Response):
            return caller
        assert self.updates is not None  # the route exists only with a repository
        return self.updates.file_response(request.match_info["kind"], request.match_info["name"])


def _validated(raw: Any, holds_nan: bool) -> SessionRecord:
    """The record checked (:func:`validate_record`), first for NaN or Infinity anywhere in it when the body
    held any: a metric the schema does not name would otherwise be stored as one."""
    problem = constant_error(raw) if holds_nan else None
    if problem:
        raise InvalidRecord(problem)
    return validate_record(raw)
