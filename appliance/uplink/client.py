"""The kiosk's client for the companion HTTP API (lesson plans, ephemeral tokens, lesson records).

Every answer is validated: a companion that answers 200 with the wrong shape gives a
CompanionError with a readable message, never a KeyError deep in the kiosk. Errors say whether
retrying can help (network, timeouts, 5xx, 429) or not (bad key, invalid request).

A token's expiry is kept on the kiosk's monotonic clock (:attr:`RealtimeToken.deadline`), never compared
with the kiosk's wall clock: that clock may be years off on a board without a battery-backed clock.
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeGuard

import httpx

from appliance.common import tls
from appliance.common.safe_text import clean_json
from appliance.config import redact_url
from appliance.contract.record import OutgoingRecord
from appliance.contract.targets import Target, parse_target


class CompanionError(Exception):
    """A failed companion request, phrased for logs and the admin."""

    def __init__(self, message: str, code: str = "error", status: int | None = None,
                 retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.retryable = retryable


@dataclass(frozen=True)
class LessonPlan:
    plan_id: str
    title: str
    targets: tuple[Target, ...]
    warmup: str = ""


@dataclass(frozen=True)
class RealtimeToken:
    token: str
    expires_at: float
    model: str
    voice: str
    prompt: str = ""
    active_targets: tuple[Any, ...] = ()
    transcription_model: str | None = ""
    """The input transcription model the token's session names ("" from an older companion; None: the
    session has no input transcription, so the learner's turns are kept as audio only)."""
    silence_ms: int = 500
    """The server VAD's end-of-turn silence the token's session names."""
    deadline: float = -math.inf
    """When the token stops being able to start a call, on the kiosk's monotonic clock (``time.monotonic``).
    Freshness is judged by this alone; ``expires_at`` is an instant on the companion's clock, kept for logs.
    A token made without one counts as expired."""

    def remaining_s(self, now: float | None = None) -> float:
        """Seconds left to start a call with this token (``now``: a reading of the same monotonic clock)."""
        return self.deadline - (time.monotonic() if now is None else now)

    def __repr__(self) -> str:  # the token is a credential: never in logs or tracebacks
        return (f"RealtimeToken(token='ek_…redacted', expires_at={self.expires_at}, model={self.model!r}, "
                f"voice={self.voice!r})")

    __str__ = __repr__


MAX_TOKEN_LIFETIME_S = 7200.0
"""The longest an ephemeral token can live (``expires_after.seconds`` is at most 7200)."""
DATE_RESOLUTION_S = 1.0
"""The HTTP Date header is truncated to whole seconds: the companion's clock may be up to this much later."""


def token_lifetime_s(data: dict[str, Any], date_header: str | None, kiosk_wall: float) -> float:
    """How long a token answer says the token lives, judged by the companion's clock.

    In order of trust: the answer's own ``expires_in`` (a lifetime needs no clock at all); else
    ``expires_at`` against the companion's clock as its HTTP ``Date`` header gives it (an older companion);
    else, with neither, against the kiosk's wall clock. Always within 0 … 7200 s, so no clock however wrong
    makes a token look immortal."""
    lifetime = data.get("expires_in")
    if not _is_number(lifetime):
        expires_at = data.get("expires_at")
        if not _is_number(expires_at):
            return 0.0
        companion_now = _http_date(date_header)
        if companion_now is not None:
            lifetime = expires_at - companion_now - DATE_RESOLUTION_S
        else:
            lifetime = expires_at - kiosk_wall
    lifetime = float(lifetime)
    return max(0.0, min(MAX_TOKEN_LIFETIME_S, lifetime)) if math.isfinite(lifetime) else 0.0


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _http_date(text: str | None) -> float | None:
    """Epoch seconds of an HTTP Date header, or None when absent or unreadable."""
    if not text:
        return None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a date without a zone is no date to trust
        return None
    try:
        return when.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


class CompanionClient:
    """One kiosk's authenticated client; reuse it for the kiosk's lifetime.

    ``ssl_context`` decides which certificates are trusted for an https:// companion; build it with
    ``appliance.common.tls.companion_ssl_context(config)`` (OS store + companion.ca_file). None: the OS store.
    ``monotonic`` places token deadlines (see :attr:`RealtimeToken.deadline`); ``wall`` is read only for a
    companion that says neither ``expires_in`` nor its ``Date``.
    """

    def __init__(self, base_url: str, device_key: str, kiosk_id: str, timeout_s: float = 5.0,
                 transport: httpx.AsyncBaseTransport | None = None,
                 ssl_context: ssl.SSLContext | None = None, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.base_url = base_url.rstrip("/")
        self.kiosk_id = kiosk_id
        self._monotonic = monotonic
        self._wall = wall
        self._host = httpx.URL(self.base_url).host
        self._shown = redact_url(self.base_url)  # for messages: never a user:password@ part
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout_s, transport=transport,
            verify=ssl_context if ssl_context is not None else tls.ssl_context(),
            headers={"Authorization": f"Bearer {device_key}", "User-Agent": "stella-kiosk"})

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, body: Any = None) -> Any:
        data, _ = await self._exchange(method, path, body)
        return data

    async def _exchange(self, method: str, path: str, body: Any = None) -> tuple[dict[str, Any], httpx.Response]:
        """The validated JSON object of the answer, and the response itself (for its headers)."""
        try:
            response = await self._http.request(method, path, json=body)
        except httpx.TimeoutException:
            raise CompanionError(f"the companion at {self._shown} did not answer in time",
                                 code="timeout", retryable=True) from None
        except httpx.HTTPError as exc:
            words = tls.describe_tls_error(exc, self._host)
            if words is not None:
                # Retryable: a clock that catches up or a CA the admin installs fixes it without a restart.
                raise CompanionError(f"cannot reach the companion at {self._shown}: {words}",
                                     code="tls", retryable=True) from None
            raise CompanionError(f"cannot reach the companion at {self._shown}: {exc}",
                                 code="unreachable", retryable=True) from None
        try:
            data = clean_json(response.json())  # text from the network is made safe at the edge
        except (ValueError, RecursionError, UnicodeDecodeError):
            data = None
        if response.status_code >= 400:
            error = data.get("error") if isinstance(data, dict) else None
            error = error if isinstance(error, dict) else {}
            code = str(error.get("code") or f"http_{response.status_code}")
            message = str(error.get("message") or response.reason_phrase)
            retryable = response.status_code >= 500 or response.status_code in (408, 429)
            raise CompanionError(f"companion refused {path}: {response.status_code} {code}: {message}",
                                 code=code, status=response.status_code, retryable=retryable)
        if not isinstance(data, dict):
            raise CompanionError(f"companion answered {path} with something that is not a JSON object",
                                 code="bad_response", status=response.status_code, retryable=True)
        return data, response

    async def health(self) -> bool:
        try:
            data = await self._request("GET", "/api/health")
        except CompanionError:
            return False
        return data.get("ok") is True

    async def plan(self, level: str | None = None, recent_targets: list[str] | None = None) -> LessonPlan:
        body: dict[str, Any] = {"kiosk_id": self.kiosk_id}
        if level:
            body["learner"] = {"level": level}
        if recent_targets:
            body["recent_targets"] = recent_targets
        data = await self._request("POST", "/api/planner", body)
        try:
            targets = tuple(parse_target(t) for t in data["targets"])
            plan = LessonPlan(str(data["plan_id"]), str(data.get("title", "")), targets,
                              str(data.get("warmup", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise CompanionError(f"companion answered the planner with an invalid plan ({exc})",
                                 code="bad_response", retryable=True) from None
        return plan

    async def token(self, plan_id: str | None = None) -> RealtimeToken:
        body: dict[str, Any] = {"kiosk_id": self.kiosk_id}
        if plan_id:
            body["plan_id"] = plan_id
        asked = self._monotonic()  # the token was minted after this: a deadline from here is never late
        data, response = await self._exchange("POST", "/api/realtime-token", body)
        token = data.get("token")
        expires_at = data.get("expires_at")
        if not isinstance(token, str) or not token:
            raise CompanionError("companion answered 200 but the token is missing", code="bad_response",
                                 retryable=True)
        if not isinstance(expires_at, int | float) or isinstance(expires_at, bool):
            raise CompanionError("companion answered 200 but expires_at is missing", code="bad_response",
                                 retryable=True)
        targets = data.get("activeTargets", [])
        silence = data.get("silence_ms")
        transcription = data.get("transcription_model")
        lifetime = token_lifetime_s(data, response.headers.get("Date"), self._wall())
        return RealtimeToken(token, float(expires_at), str(data.get("model", "")), str(data.get("voice", "")),
                             str(data.get("prompt", "")), tuple(targets) if isinstance(targets, list) else (),
                             transcription_model=transcription if isinstance(transcription, str)
                             else None if "transcription_model" in data and transcription is None else "",
                             silence_ms=silence if isinstance(silence, int) and not isinstance(silence, bool)
                             and 100 <= silence <= 10_000 else 500,
                             deadline=asked + lifetime)

    async def summarize(self, record: OutgoingRecord) -> None:
        data = await self._request("POST", "/api/summarize", record)
        if data.get("stored") is not True:
            raise CompanionError("companion did not confirm the lesson was stored", code="bad_response",
                                 retryable=True)

    async def send_batch(self, records: Sequence[OutgoingRecord]) -> list[dict[str, Any]]:
        """One result object per record, as the companion answered them (JSON not checked further)."""
        data = await self._request("POST", "/api/sessions/batch", {"sessions": records})
        results = data.get("results")
        if not isinstance(results, list):
            raise CompanionError("companion answered the batch without results", code="bad_response",
                                 retryable=True)
        return [r for r in results if isinstance(r, dict)]

    async def send_corrections(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Corrected dates of lessons already delivered (``POST /api/sessions/corrections``), one result each.
        A companion too old to take corrections answers 404 (a CompanionError with that status)."""
        data = await self._request("POST", "/api/sessions/corrections", {"sessions": records})
        results = data.get("results")
        if not isinstance(results, list):
            raise CompanionError("companion answered the corrections without results", code="bad_response",
                                 retryable=True)
        return [r for r in results if isinstance(r, dict)]

    async def heartbeat(self, report: dict[str, Any]) -> bool:
        """Tell the companion this kiosk's state (POST /api/heartbeat). False when the companion is too old to
        know heartbeats (404): nothing to fix on the kiosk, so the caller stays quiet about it."""
        try:
            await self._request("POST", "/api/heartbeat", {"kiosk_id": self.kiosk_id, **report})
        except CompanionError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def update_assignment(self) -> tuple[bool, str | None]:
        """Which release the companion's staged rollout assigns this kiosk (GET /api/updates/assignment):
        ``(True, "1.4.0")``, ``(True, None)`` (paused, not in the share yet, nothing published), or
        ``(False, None)`` when the companion has no rollout (404): the kiosk then takes the newest signed
        release."""
        try:
            data = await self._request("GET", "/api/updates/assignment")
        except CompanionError as exc:
            if exc.status == 404:
                return False, None
            raise
        version = data.get("version")
        if version is not None and (not isinstance(version, str) or not 0 < len(version) <= 64):
            raise CompanionError("companion answered /api/updates/assignment with a version that is not a "
                                 "release version", code="bad_response", retryable=True)
        return True, version

    async def sessions(self, since: str | None = None) -> list[Any]:
        """The kiosk's lessons as the companion keeps them (JSON, not checked)."""
        params = f"?since={since}" if since else ""
        data = await self._request("GET", f"/api/sessions{params}")
        sessions = data.get("sessions")
        return sessions if isinstance(sessions, list) else []
