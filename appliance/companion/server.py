"""The companion service: device-key auth, lesson planning, Realtime tokens, lesson records.

It is the only place that holds the OpenAI key. Kiosks authenticate with their own device key and
only ever see their own data. Errors are JSON ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance import __version__
from appliance.companion.models import DEFAULT_MODELS, ModelChoice, ModelStatus, model_list
from appliance.companion.records import InvalidRecord, validate_record
from appliance.companion.storage import Storage, open_storage
from appliance.companion.upstream import (
    Upstream,
    UpstreamError,
    fallback_pack,
    new_plan_id,
    tutor_instructions,
    validate_pack,
)
from appliance.httpserve import start_http

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
MAX_BATCH = 100
REQUEST_LOG_SIZE = 1000
MODEL_CHECK_INTERVAL_S = 24 * 3600


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
    voice: str = "marin"
    transcription_model: str | tuple[str, ...] = DEFAULT_MODELS["transcription"]
    planner_model: str | tuple[str, ...] = DEFAULT_MODELS["planner"]
    default_level: str = "A2"
    token_ttl_s: int = 600
    silence_ms: int = 500
    tokens_per_hour: int = 60
    """Per-kiosk cap on ephemeral tokens (each can start a paid call)."""
    daily_minutes: float = 0.0
    """Per-kiosk daily budget of lesson minutes (from stored records); 0 = no budget."""
    upstream_timeout_s: float = 10.0

    def models(self) -> dict[str, tuple[str, ...]]:
        """Each role's ordered model list (a single name is a list of one)."""
        return {"planner": model_list(self.planner_model), "realtime": model_list(self.realtime_model),
                "transcription": model_list(self.transcription_model)}


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class CompanionServer:
    def __init__(self, config: CompanionConfig, storage: Storage | None = None) -> None:
        self.config = config
        self.storage: Storage = storage  # type: ignore[assignment]  # opened in start()
        self.upstream = Upstream(config.openai_base_url, config.openai_api_key, timeout_s=config.upstream_timeout_s)
        self._token_times: dict[str, list[float]] = {}
        self.requests: deque[tuple[str, str]] = deque(maxlen=REQUEST_LOG_SIZE)
        """(method, path) of the latest requests served, for tests and benchmarks (bounded: a
        companion runs for months)."""
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app = self._build_app()
        self.model_choice = ModelChoice(config.models())
        self.models_checked = asyncio.Event()
        """Set after each check of the configured models (at start, then daily)."""
        self._model_watch: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._errors])
        app.router.add_get("/api/health", self.health)
        app.router.add_post("/api/planner", self.planner)
        app.router.add_post("/api/realtime-token", self.realtime_token)
        app.router.add_post("/api/summarize", self.summarize)
        app.router.add_post("/api/sessions/batch", self.batch)
        app.router.add_get("/api/sessions", self.list_sessions)
        try:  # jinja2 and argon2-cffi: the companion's extra, not needed on a kiosk that runs the demo
            from appliance.companion.console import setup_console
        except ImportError as exc:
            log.warning("web console off: %s (pip install 'stella-kiosk[companion]')", exc)
        else:
            setup_console(app, self)
        return app

    async def open_storage(self) -> Storage:
        """Open the database (and migrate it) unless it was given or is open already."""
        if self.storage is None:
            self.storage = await open_storage(self.config.db_path)
        return self.storage

    async def start(self) -> None:
        await self.open_storage()
        self._runner, self.port = await start_http(self.app, self.config.host, self.config.port)
        self._model_watch = asyncio.create_task(self._watch_models())

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

    @property
    def base_url(self) -> str:
        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        if self._model_watch is not None:
            self._model_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._model_watch
            self._model_watch = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.upstream.aclose()
        if self.storage is not None:
            await self.storage.close()

    async def provision(self, kiosk_id: str, key: str) -> None:
        await (await self.open_storage()).add_kiosk(kiosk_id, key)

    # -- plumbing ---------------------------------------------------------------------------
    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return error(413, "too_large", f"request bodies are limited to {MAX_BODY} bytes")
        except web.HTTPException as exc:
            if exc.status >= 400:
                return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
            raise

    async def _kiosk(self, request: web.Request) -> str | None:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return None
        return await self.storage.kiosk_for_key(auth[7:].strip())

    async def _body(self, request: web.Request) -> tuple[str, dict[str, Any]] | web.Response:
        kiosk = await self._kiosk(request)
        if kiosk is None:
            return error(401, "unauthorized", "a valid device key is required (Authorization: Bearer …)")
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            return error(413, "too_large", f"request bodies are limited to {MAX_BODY} bytes")
        except ValueError:
            return error(400, "bad_request", "the body is not valid JSON")
        if not isinstance(body, dict):
            return error(400, "bad_request", "the body must be a JSON object")
        claimed = body.get("kiosk_id")
        if claimed is not None and claimed != kiosk:
            return error(403, "forbidden", "kiosk_id does not match the device key")
        return kiosk, body

    # -- routes -----------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        choice = self.model_choice
        return web.json_response({"ok": True, "version": __version__, "warnings": choice.warnings(),
                                  "models": {role: choice.current(role) for role in choice.models}})

    async def planner(self, request: web.Request) -> web.Response:
        parsed = await self._body(request)
        if isinstance(parsed, web.Response):
            return parsed
        kiosk, body = parsed
        learner = body.get("learner") if isinstance(body.get("learner"), dict) else {}
        level = learner.get("level") or self.config.default_level
        if level not in ("A1", "A2", "B1", "B2", "C1", "C2"):
            return error(400, "bad_request", f"learner.level {level!r} is not a CEFR level A1..C2")
        recent = [t for t in body.get("recent_targets", []) if isinstance(t, str)][:50] \
            if isinstance(body.get("recent_targets"), list) else []
        plan_id = new_plan_id()
        source = "upstream"
        try:
            pack = await self._with_fallback(
                ("planner",), lambda: self.upstream.plan(model=self.model_choice.current("planner"), level=level,
                                                         recent=recent))
        except UpstreamError as exc:
            log.warning("planner upstream failed (%s); serving the built-in curriculum", exc.message)
            pack = validate_pack(fallback_pack(level, recent, plan_id))
            source = "curriculum"
        plan = {"plan_id": plan_id, **pack}
        await self.storage.save_plan(plan, kiosk, source)
        return web.json_response(plan)

    async def realtime_token(self, request: web.Request) -> web.Response:
        parsed = await self._body(request)
        if isinstance(parsed, web.Response):
            return parsed
        kiosk, body = parsed
        limited = await self._rate_limited(kiosk)
        if limited:
            return limited
        plan = None
        plan_id = body.get("plan_id")
        if plan_id is not None:
            if not isinstance(plan_id, str):
                return error(400, "bad_request", "plan_id must be a string")
            plan = await self.storage.get_plan(plan_id, kiosk)
            if plan is None:
                return error(404, "unknown_plan", f"no plan {plan_id} for this kiosk")
        prompt = tutor_instructions(plan, self.config.default_level)
        try:
            model, (value, expires_at) = await self._with_fallback(
                ("realtime", "transcription"), lambda: self._mint(prompt))
        except UpstreamError as exc:
            log.warning("token upstream failed: %s", exc.message)
            if exc.upstream_code == "model_not_found":
                return error(502, "model_not_found",
                             f"could not mint a Realtime token: {exc.message}; every configured model failed "
                             f"(realtime_model / transcription_model in the companion config)")
            return error(exc.status, exc.code, f"could not mint a Realtime token: {exc.message}")
        self._token_times.setdefault(kiosk, []).append(time.time())
        return web.json_response({"token": value, "expires_at": expires_at, "model": model,
                                  "voice": self.config.voice, "prompt": prompt,
                                  # What the token's session holds, so a kiosk can send it again itself
                                  # to servers that ignore token-embedded config.
                                  "transcription_model": self.model_choice.current("transcription"),
                                  "silence_ms": self.config.silence_ms,
                                  "activeTargets": plan["targets"] if plan else []})

    async def _mint(self, prompt: str) -> tuple[str, tuple[str, float]]:
        model = self.model_choice.current("realtime")
        secret = await self.upstream.client_secret(
            model=model, voice=self.config.voice, instructions=prompt, ttl_s=self.config.token_ttl_s,
            transcription_model=self.model_choice.current("transcription"), silence_ms=self.config.silence_ms)
        return model, secret

    async def _with_fallback(self, roles: tuple[str, ...], attempt: Any) -> Any:
        """Run ``attempt``; on ``model_not_found`` drop the model it blames (by ``param``) and try the
        role's next one, so a retired model costs one failed request, not every kiosk's lessons."""
        while True:
            try:
                return await attempt()
            except UpstreamError as exc:
                if exc.upstream_code != "model_not_found":
                    raise
                role = next((r for r in roles if r in (exc.param or "")), roles[0])
                if not self.model_choice.give_up(role, self.model_choice.current(role), exc.message):
                    raise

    async def _rate_limited(self, kiosk: str) -> web.Response | None:
        now = time.time()
        recent = [t for t in self._token_times.get(kiosk, []) if now - t < 3600]
        self._token_times[kiosk] = recent
        if len(recent) >= self.config.tokens_per_hour:
            return error(429, "rate_limited", f"at most {self.config.tokens_per_hour} lessons per hour per kiosk")
        if self.config.daily_minutes > 0:
            today = time.strftime("%Y-%m-%d", time.gmtime(now))
            used_s = sum(float((r.get("metrics") or {}).get("duration_s") or 0)
                         for r in await self.storage.sessions(kiosk, since=today))
            if used_s / 60 >= self.config.daily_minutes:
                return error(429, "daily_budget_exhausted",
                             f"this kiosk used its {self.config.daily_minutes:g} lesson minutes for today")
        return None

    async def _store(self, kiosk: str, record: Any) -> dict[str, Any]:
        try:
            validate_record(record)
        except InvalidRecord as exc:
            session_id = record.get("session_id") if isinstance(record, dict) else None
            return {"session_id": session_id, "error": {"code": "invalid_record", "message": str(exc)}}
        if record["kiosk_id"] != kiosk:
            return {"session_id": record["session_id"],
                    "error": {"code": "forbidden", "message": "kiosk_id does not match the device key"}}
        new = await self.storage.store_session(record)
        if new:
            log.info("stored session %s from %s", record["session_id"], kiosk)
        return {"session_id": record["session_id"], "stored": True, "duplicate": not new}

    async def summarize(self, request: web.Request) -> web.Response:
        parsed = await self._body(request)
        if isinstance(parsed, web.Response):
            return parsed
        kiosk, body = parsed
        result = await self._store(kiosk, body)
        if "error" in result:
            status = 403 if result["error"]["code"] == "forbidden" else 400
            return error(status, result["error"]["code"], result["error"]["message"])
        return web.json_response({"stored": True, "session_id": result["session_id"]})

    async def batch(self, request: web.Request) -> web.Response:
        parsed = await self._body(request)
        if isinstance(parsed, web.Response):
            return parsed
        kiosk, body = parsed
        sessions = body.get("sessions")
        if not isinstance(sessions, list) or len(sessions) > MAX_BATCH:
            return error(400, "bad_request", f"sessions must be a list of at most {MAX_BATCH}")
        results = [await self._store(kiosk, record) for record in sessions]
        return web.json_response({"results": results})

    async def list_sessions(self, request: web.Request) -> web.Response:
        kiosk = await self._kiosk(request)
        if kiosk is None:
            return error(401, "unauthorized", "a valid device key is required")
        requested = request.query.get("kiosk")
        if requested and requested != kiosk:
            return error(403, "forbidden", "a kiosk can only read its own sessions")
        return web.json_response({"sessions": await self.storage.sessions(kiosk, request.query.get("since"))})
