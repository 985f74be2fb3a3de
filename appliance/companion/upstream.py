"""The companion's calls to OpenAI (or the local simulator): ephemeral Realtime secrets and lesson
planning by Chat Completions. GA shapes only; the ``sk-`` key never leaves this module's headers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import uuid
from importlib import resources
from typing import Any, TypedDict

import aiohttp

from appliance.contract.names import LEVELS
from appliance.contract.targets import TargetRecord, parse_target

log = logging.getLogger(__name__)



class UpstreamError(Exception):
    def __init__(self, message: str, code: str = "upstream_error", status: int = 502,
                 upstream_code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.upstream_code = upstream_code
        """OpenAI's own error code (e.g. ``model_not_found``) and the ``param`` it blames."""
        self.param = param


TUTOR_PERSONA = (
    "You are Stella, a warm and patient English tutor in a school kiosk. The learner speaks to you "
    "through a microphone; there is no screen. Speak first: greet the learner in one short sentence "
    "and open the lesson. Keep every turn short (one or two sentences), speak clearly and simply for "
    "a {level} learner, ask one question at a time, and correct mistakes gently by repeating the "
    "sentence correctly. If the learner says 'stop', say a one-sentence goodbye."
)


def tutor_instructions(plan: dict[str, Any] | None, level: str) -> str:
    """The tutor's instructions with the lesson plan folded in."""
    text = TUTOR_PERSONA.format(level=level)
    if plan:
        targets = "; ".join(f"{t['text']} ({t['kind']}, e.g. \"{t.get('example', '')}\")" for t in plan["targets"])
        text += (f"\n\nToday's lesson: {plan['title']}. Practise these targets: {targets}. "
                 f"Warm-up question: {plan.get('warmup', '')}")
    return text




class Upstream:
    """OpenAI-compatible upstream (real OpenAI, a proxy, or `stella-kiosk simulator`)."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        """Made on first use, inside the running loop. aiohttp rather than httpx: at a class change (200
        kiosks at once) httpx's pool cost the companion several ms of CPU per token (it scans every
        connection for every request) and its default 100 connections queued the second hundred kiosks."""
        if self._http is None or self._http.closed:
            # trust_env: HTTPS_PROXY / NO_PROXY from the service's environment apply, as they did with httpx.
            self._http = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout, trust_env=True,
                                               connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=60))
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", path, body)

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            async with self._session().request(method, self.base_url + path, json=body) as reply:
                status, text = reply.status, await reply.text(errors="replace")
        except TimeoutError:
            raise UpstreamError(f"{self.base_url}{path} did not answer in time", "upstream_timeout", 504) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(f"cannot reach {self.base_url}: {type(exc).__name__}", "upstream_unreachable") from None
        if status >= 400:
            detail, code, param = "", None, None
            try:
                error = json.loads(text).get("error", {})
                code, param = error.get("code"), error.get("param")
                detail = f": {code or error.get('type')}: {error.get('message')}"
            except (ValueError, AttributeError):
                pass
            raise UpstreamError(f"{path} answered {status}{detail}",
                                upstream_code=code if isinstance(code, str) else None,
                                param=param if isinstance(param, str) else None)
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise UpstreamError(f"{path} answered with invalid JSON") from None
        if not isinstance(data, dict):
            raise UpstreamError(f"{path} answered with something that is not an object")
        return data

    async def model(self, model_id: str) -> dict[str, Any] | None:
        """``GET /v1/models/{id}``: the model's record (with ``shutdown_date``), None when not found."""
        try:
            return await self._request("GET", f"/v1/models/{model_id}")
        except UpstreamError as exc:
            if exc.upstream_code == "model_not_found":
                return None
            raise

    async def client_secret(self, *, model: str, voice: str, instructions: str, ttl_s: int,
                            transcription_model: str | None, silence_ms: int) -> tuple[str, float]:
        """Mint an ephemeral Realtime secret (GA body); returns (value, expires_at). ``transcription_model``
        None: the session has no input transcription (the call works; the learner's words are not written)."""
        audio_in: dict[str, Any] = {
            "noise_reduction": {"type": "far_field"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms},
        }
        if transcription_model is not None:
            audio_in = {"transcription": {"model": transcription_model}, **audio_in}
        body = {
            "expires_after": {"anchor": "created_at", "seconds": ttl_s},
            "session": {
                "type": "realtime",
                "model": model,
                "instructions": instructions,
                "output_modalities": ["audio"],
                "audio": {"input": audio_in, "output": {"voice": voice}},
            },
        }
        data = await self._post("/v1/realtime/client_secrets", body)
        value, expires_at = data.get("value"), data.get("expires_at")
        if not isinstance(value, str) or not isinstance(expires_at, int | float):
            raise UpstreamError("client_secrets answered without value/expires_at")
        return value, float(expires_at)

    async def plan(self, *, model: str, level: str, recent: list[str]) -> LessonPack:
        """Ask the planning model for a micro-pack; raises UpstreamError when it is not valid."""
        prompt = (f"Make a micro English lesson for a {level} learner: a short title, 3 targets and a warm-up "
                  "question. Answer only JSON: {\"title\": str, \"targets\": [{\"id\": str, \"kind\": "
                  "\"vocab|phrase|grammar|pronunciation\", \"text\": str, \"example\": str}], \"warmup\": str}."
                  + (f" Avoid these recent targets: {', '.join(recent)}." if recent else ""))
        data = await self._post("/v1/chat/completions", {
            "model": model,
            "messages": [{"role": "system", "content": "You plan short spoken English lessons."},
                         {"role": "user", "content": prompt}],
            "response_format": {"type": "json_object"},
        })
        try:
            content = data["choices"][0]["message"]["content"]
            pack = json.loads(content)
            return validate_pack(pack)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise UpstreamError(f"the planner's answer is not a valid lesson pack ({exc})") from None


class LessonPack(TypedDict):
    """A checked micro-pack: what the planning model (or the built-in curriculum) offers for one lesson."""

    title: str
    targets: list[TargetRecord]
    warmup: str


class LessonPlan(LessonPack):
    """The planner's answer to a kiosk (PROTOCOL §2), kept by the companion for the lesson's token."""

    plan_id: str
    level: str


def validate_pack(pack: Any) -> LessonPack:
    if not isinstance(pack, dict):
        raise ValueError("not an object")
    title, warmup, targets = pack.get("title"), pack.get("warmup", ""), pack.get("targets")
    if not isinstance(title, str) or not title.strip():
        raise ValueError("title missing")
    if not isinstance(targets, list) or not 1 <= len(targets) <= 8:
        raise ValueError("targets must be a list of 1-8")
    parsed = [parse_target(t).to_record() for t in targets]
    return {"title": title.strip(), "targets": parsed, "warmup": warmup if isinstance(warmup, str) else ""}


def load_curriculum() -> list[dict[str, Any]]:
    text = resources.files("appliance").joinpath("data/curriculum.json").read_text(encoding="utf-8")
    return json.loads(text)["packs"]


def fallback_pack(level: str, recent: list[str], seed: str) -> dict[str, Any]:
    """A built-in pack for the level (or the nearest), avoiding recent targets where possible."""
    packs = load_curriculum()
    rank = LEVELS.index(level) if level in LEVELS else 1
    packs = sorted(packs, key=lambda p: abs(LEVELS.index(p["level"]) - rank))
    nearest = [p for p in packs if abs(LEVELS.index(p["level"]) - rank) == abs(LEVELS.index(packs[0]["level"]) - rank)]
    fresh = [p for p in nearest if not {t["text"] for t in p["targets"]} & set(recent)] or nearest
    rng = random.Random(int(hashlib.sha256(seed.encode()).hexdigest(), 16))
    pack = rng.choice(fresh)
    return {"title": pack["title"], "targets": pack["targets"], "warmup": pack["warmup"]}


def new_plan_id() -> str:
    return f"plan_{uuid.uuid4().hex[:16]}"
