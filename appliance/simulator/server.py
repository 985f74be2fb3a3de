"""The Realtime simulator's HTTP side: a local stand-in for OpenAI's GA Realtime endpoints.

Admins use it to try a kiosk at zero cost; the demo, the benchmarks and the tests run against it.
Endpoints: ``POST /v1/realtime/client_secrets``, ``POST /v1/realtime/calls`` (raw SDP or multipart),
``POST /v1/realtime/calls/{id}/hangup``, ``POST /v1/chat/completions`` (enough for the planner),
``GET /v1/models`` and ``GET /v1/models/{id}`` (with ``shutdown_date``, so model retirement can be tried).
The beta interface answers 400 ``beta_api_shape_disabled``, as OpenAI's does since 2026-05-12.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import logging
import secrets
import sys
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.common.httpserve import serve_until_signal, start_http
from appliance.common.net import enable_loopback_candidates
from appliance.contract.voices import VOICES
from appliance.simulator.asr import DEFAULT_PHRASES, PhraseRecognizer
from appliance.simulator.call import Faults, SimulatedCall, new_id

log = logging.getLogger(__name__)

BETA_SESSION_KEYS = ("modalities", "voice", "input_audio_format", "output_audio_format",
                     "input_audio_transcription")

PACKS = [
    {"title": "Fruit and food", "warmup": "What fruit do you like?",
     "targets": [{"id": "t1", "kind": "vocab", "text": "apple", "example": "I eat an apple every day."},
                 {"id": "t2", "kind": "phrase", "text": "I'd like", "example": "I'd like some bread, please."},
                 {"id": "t3", "kind": "grammar", "text": "some and any", "example": "Is there any milk?"}]},
    {"title": "Hobbies", "warmup": "What do you do after school?",
     "targets": [{"id": "t1", "kind": "vocab", "text": "hobby", "example": "My hobby is drawing."},
                 {"id": "t2", "kind": "grammar", "text": "like + -ing", "example": "I like swimming."},
                 {"id": "t3", "kind": "pronunciation", "text": "guitar", "example": "I play the guitar."}]},
    {"title": "Directions in town", "warmup": "How do you get to school?",
     "targets": [{"id": "t1", "kind": "phrase", "text": "turn left", "example": "Turn left at the bank."},
                 {"id": "t2", "kind": "vocab", "text": "crossroads", "example": "Stop at the crossroads."},
                 {"id": "t3", "kind": "phrase", "text": "next to", "example": "The shop is next to the park."}]},
]


ENDED_CALLS_KEPT = 50
"""Closed calls remembered for their figures (``/simulator/audio-arrival``); older ones are forgotten."""
MODELS_CREATED = 1_750_000_000
#: The model ids the simulator lists, with the shutdown dates OpenAI has announced for them (None: none
#: announced). ``SimulatorConfig.model_shutdowns`` overrides or adds entries.
KNOWN_MODELS: dict[str, str | None] = {
    "gpt-realtime": "2027-01-20", "gpt-realtime-mini": "2027-01-20", "gpt-realtime-2025-08-28": "2027-01-20",
    "gpt-realtime-mini-2025-10-06": None, "gpt-realtime-mini-2025-12-15": "2027-01-20",
    "gpt-realtime-1.5": None, "gpt-realtime-2": None, "gpt-realtime-2.1": None, "gpt-realtime-2.1-mini": None,
    "gpt-transcribe": None, "gpt-live-transcribe": None, "gpt-realtime-whisper": None,
    "gpt-4o-transcribe": "2027-02-26", "gpt-4o-mini-transcribe": "2027-02-26", "whisper-1": "2027-02-26",
    "gpt-5": "2026-12-11", "gpt-5-mini": "2026-12-11", "gpt-5-nano": "2026-12-11",
    "gpt-5.4-mini": None, "gpt-5.4-nano": "2027-04-01", "gpt-5.5": None,
}


@dataclass(frozen=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    api_keys: frozenset[str] | None = None
    """Accepted sk- keys; None accepts any key that starts with "sk-"."""
    consent_emulation: bool = True
    """Ignore ICE consent checks without USE-CANDIDATE, like OpenAI's ICE-lite server."""
    event_log: Path | None = None
    """JSONL file of every client event received."""
    voice: str = "auto"
    """The speech engine: espeak-ng (auto, espeak) or the synthetic buzz; each Realtime voice has its pitch."""
    refused_voices: frozenset[str] = frozenset()
    """Realtime voices the "model" refuses: a ``session.update`` naming one gets ``invalid_value``
    (``param`` ``session.audio.output.voice``) and nothing of it is applied, as with a model without them."""
    max_session_s: float = 3600.0
    phrases: tuple[str, ...] = DEFAULT_PHRASES
    """What the simulator can recognise in the learner's speech (anything else: "(speech, N s)")."""
    rtp_during_silence: bool = True
    """Send silent RTP between responses; False sends RTP only while the tutor speaks."""
    refuse_calls: bool = False
    """Start with new calls refused (503), e.g. to try how a kiosk copes with an outage."""
    cors_origin: str | None = None
    """Answer CORS preflights and tag responses for this browser origin ("*" for any); None: no CORS."""
    model_shutdowns: Mapping[str, str | None] = field(default_factory=dict)
    """Model id → shutdown date (YYYY-MM-DD) or None, over ``KNOWN_MODELS``; a date in the past retires
    the model: client_secrets then answers 404 ``model_not_found`` for it."""
    response_delay_s: float = 0.0
    """Model latency before each response's audio: the response is active (cancellable) meanwhile."""
    ignore_token_config: bool = False
    """Ignore the session config embedded in ephemeral tokens, as some compatible servers do."""
    audio_buffer_events: bool = True
    """Send ``output_audio_buffer.started/stopped/cleared``; False behaves like third-party servers that
    never do (the client must tell from the audio itself when the tutor is heard)."""
    item_events: bool = True
    """Send ``response.output_item.added/done`` and the tutor's ``conversation.item.added/done``; False
    behaves like third-party servers that name the tutor's item only in its content and transcript events."""
    sentence_pause_s: float | None = None
    """Stream each answer sentence by sentence with this pause between sentences, the response still
    active (no ``response.done``) until the last one is out, as pipeline servers (speech-to-text, model,
    text-to-speech) do; None plays each answer in one piece."""
    max_sessions: int | None = None
    """At most this many calls at once (None: no limit); a new call beyond it gets 503
    ``session_limit_reached``. A call's slot is taken until ``slot_release_s`` after it ends."""
    slot_release_s: float = 0.4
    """How long an ended call still holds its session slot (a server notices a hang-up a little late)."""


@dataclass
class _Secret:
    session: dict[str, Any]
    expires_at: float
    calls: list[str] = field(default_factory=list)


def oai_error(status: int, message: str, code: str | None, etype: str = "invalid_request_error",
              param: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": etype, "code": code, "param": param}},
                             status=status)


class RealtimeSimulator:
    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self.calls: dict[str, SimulatedCall] = {}
        self.ended_calls: dict[str, SimulatedCall] = {}
        self._secrets: dict[str, _Secret] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.requests: list[tuple[str, str]] = []
        self.recognizer = PhraseRecognizer(self.config.phrases)
        self.refuse_calls = self.config.refuse_calls
        self.faults = Faults(ignore_token_config=self.config.ignore_token_config)
        """Misbehaviour switches shared by every call (see :class:`Faults`)."""
        """New calls get 503 while this is true (existing calls are not touched)."""
        self.model_shutdowns: dict[str, str | None] = {**KNOWN_MODELS, **self.config.model_shutdowns}
        """Model id → shutdown date; change it at run time to retire a model."""
        self._slots_free_at: list[float] = []
        """When the slots of recently ended calls come free (monotonic), while ``max_sessions`` applies."""
        self._opening = 0
        """Calls being answered right now (they hold a slot already)."""
        self.limit_refusals: deque[float] = deque(maxlen=100)
        """When (monotonic) new calls were refused with ``session_limit_reached``, the newest 100."""

    # -- lifecycle --------------------------------------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=2 * 1024 * 1024, middlewares=[self._cors, self._beta_guard])
        app.router.add_post("/v1/realtime/client_secrets", self.client_secrets)
        app.router.add_post("/v1/realtime/calls", self.create_call)
        app.router.add_post("/v1/realtime/calls/{call_id}/hangup", self.hangup)
        app.router.add_post("/v1/realtime/sessions", self.beta)
        app.router.add_post("/v1/realtime", self.beta)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_get("/v1/models/{model_id}", self.get_model)
        app.router.add_post("/simulator/freeze", self.freeze_endpoint)
        app.router.add_post("/simulator/unfreeze", self.unfreeze_endpoint)
        app.router.add_post("/simulator/refuse-calls", self.refuse_calls_endpoint)
        app.router.add_post("/simulator/faults", self.faults_endpoint)
        app.router.add_post("/simulator/revoke-tokens", self.revoke_tokens_endpoint)
        app.router.add_get("/simulator/audio-arrival", self.audio_arrival_endpoint)
        app.router.add_get("/", self.index)
        return app

    async def start(self) -> None:
        enable_loopback_candidates()
        self._runner, self.port = await start_http(self.build_app(), self.config.host, self.config.port)

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    async def stop(self) -> None:
        await asyncio.gather(*(call.close("simulator stopping") for call in list(self.calls.values())),
                             return_exceptions=True)
        # Calls that ended on their own may still be closing their transports: let them finish first.
        closing = [call.closed.wait() for call in self.ended_calls.values() if not call.closed.is_set()]
        if closing:
            await asyncio.wait([asyncio.ensure_future(c) for c in closing], timeout=5)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def freeze_calls(self, hear_client: bool = False) -> list[str]:
        """Cut every current call off, both ways, like a network partition; calls made later are not
        affected. ``hear_client``: the server stalls (sends nothing) but still takes in what clients
        send, so a client's hang-up ends its call. Returns the frozen call ids."""
        for call in self.calls.values():
            call.freeze(hear_client=hear_client)
        return list(self.calls)

    @property
    def issued_tokens(self) -> int:
        """Ephemeral tokens issued and not revoked."""
        return len(self._secrets)

    def revoke_tokens(self) -> int:
        """Forget every ephemeral token issued so far (as a restarted or key-rotated server does): a call
        opened with one gets 401. Calls already running go on. Returns how many were revoked."""
        count = len(self._secrets)
        self._secrets.clear()
        return count

    def sessions_in_use(self) -> int:
        """Session slots taken now: live calls, calls being answered, and ended calls not yet released."""
        now = time.monotonic()
        self._slots_free_at = [t for t in self._slots_free_at if t > now]
        return len(self.calls) + self._opening + len(self._slots_free_at)

    def unfreeze_calls(self) -> list[str]:
        """Heal the partition of every frozen call; returns their ids."""
        frozen = [call_id for call_id, call in self.calls.items() if call.frozen]
        for call_id in frozen:
            self.calls[call_id].unfreeze()
        return frozen

    def _call_ended(self, call_id: str) -> None:
        call = self.calls.pop(call_id, None)
        if call is not None:
            self.ended_calls[call_id] = call
            closed = [cid for cid, ended in self.ended_calls.items() if ended.closed.is_set()]
            for cid in closed[:max(0, len(closed) - ENDED_CALLS_KEPT)]:  # a simulator that runs for weeks
                del self.ended_calls[cid]
            if self.config.max_sessions is not None:
                self._slots_free_at.append(time.monotonic() + self.config.slot_release_s)

    # -- helpers ----------------------------------------------------------------------------
    @web.middleware
    async def _cors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Opt-in CORS, so a browser page (the seed's web flow) can POST its offer and read ``Location``."""
        origin = self.config.cors_origin
        if origin is None:
            return await handler(request)
        if request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(status=204)
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                response = exc
        response.headers.update({
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": "Authorization, Content-Type, OpenAI-Beta",
            "Access-Control-Expose-Headers": "Location",
            "Access-Control-Max-Age": "600",
        })
        if origin != "*":
            response.headers["Vary"] = "Origin"
        return response

    def models(self) -> dict[str, str | None]:
        """Every listed model id → its shutdown date (or None)."""
        return self.model_shutdowns

    def model_record(self, model_id: str) -> dict[str, Any] | None:
        models = self.models()
        if model_id not in models:
            return None
        return {"id": model_id, "object": "model", "created": MODELS_CREATED, "owned_by": "system",
                "shutdown_date": models[model_id]}

    def retired(self, model_id: str) -> bool:
        shutdown = self.models().get(model_id)
        return shutdown is not None and shutdown <= date.today().isoformat()

    @web.middleware
    async def _beta_guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        if request.headers.get("OpenAI-Beta", "").startswith("realtime"):
            return oai_error(400, "The Realtime beta interface has been switched off; use the GA interface.",
                             "beta_api_shape_disabled")
        return await handler(request)

    def _api_key_ok(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer sk-"):
            return False
        key = auth[7:].strip()
        return self.config.api_keys is None or key in self.config.api_keys

    def _unauthorized(self) -> web.Response:
        return oai_error(401, "Incorrect API key provided.", "invalid_api_key")

    # -- routes -----------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        return web.json_response({"service": "stella-kiosk Realtime simulator", "calls": len(self.calls)})

    async def list_models(self, request: web.Request) -> web.Response:
        if not self._api_key_ok(request):
            return self._unauthorized()
        return web.json_response({"object": "list", "data": [self.model_record(m) for m in self.models()]})

    async def get_model(self, request: web.Request) -> web.Response:
        if not self._api_key_ok(request):
            return self._unauthorized()
        model_id = request.match_info["model_id"]
        record = self.model_record(model_id)
        if record is None:
            return oai_error(404, f"The model '{model_id}' does not exist or you do not have access to it.",
                             "model_not_found", param="model")
        return web.json_response(record)

    async def freeze_endpoint(self, request: web.Request) -> web.Response:
        """Freeze every current call; body ``{"hear_client": true}`` (optional) stalls only the server's side."""
        if not self._api_key_ok(request):
            return self._unauthorized()
        body = await self._json_object(request) if request.can_read_body else {}
        hear_client = body.get("hear_client", False) if body is not None else None
        if not isinstance(hear_client, bool):
            return oai_error(400, 'Send no body, or {"hear_client": true|false}.', "invalid_value",
                             param="hear_client")
        return web.json_response({"frozen": self.freeze_calls(hear_client=hear_client)})

    async def audio_arrival_endpoint(self, request: web.Request) -> web.Response:
        """How evenly each call's microphone audio arrived (late frames, gaps, lost audio), and when each
        tutor item's first audible frame was sent (``time.monotonic()`` of this machine): current calls and
        the ended ones still remembered, oldest first."""
        if not self._api_key_ok(request):
            return self._unauthorized()
        calls = {**self.ended_calls, **self.calls}
        return web.json_response({"calls": [{"call_id": call_id, **call.mic_arrival.summary(),
                                             "tutor_audible_sent_at": list(call.tutor_audible_sent)}
                                            for call_id, call in calls.items()]})

    async def revoke_tokens_endpoint(self, request: web.Request) -> web.Response:
        if not self._api_key_ok(request):
            return self._unauthorized()
        return web.json_response({"revoked": self.revoke_tokens()})

    async def unfreeze_endpoint(self, request: web.Request) -> web.Response:
        if not self._api_key_ok(request):
            return self._unauthorized()
        return web.json_response({"unfrozen": self.unfreeze_calls()})

    @staticmethod
    async def _json_object(request: web.Request) -> dict[str, Any] | None:
        """The control request's body when it is a JSON object, else None (the caller answers 400)."""
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def refuse_calls_endpoint(self, request: web.Request) -> web.Response:
        if not self._api_key_ok(request):
            return self._unauthorized()
        body = await self._json_object(request)
        refuse = body.get("refuse") if body is not None else None
        if not isinstance(refuse, bool):
            return oai_error(400, 'Send {"refuse": true} or {"refuse": false}.', "invalid_value", param="refuse")
        self.refuse_calls = refuse
        return web.json_response({"refuse_calls": refuse})

    async def faults_endpoint(self, request: web.Request) -> web.Response:
        """Set fault switches: a JSON object with any of :class:`Faults`' fields."""
        if not self._api_key_ok(request):
            return self._unauthorized()
        body = await self._json_object(request)
        if body is None:
            return oai_error(400, "Send a JSON object of fault switches.", "invalid_value")
        kinds = {"fail_next_response": dict, "fail_next_transcription": dict, "ignore_token_config": bool,
                 "usage_without_details": bool}
        for key, value in body.items():
            kind = kinds.get(key)
            if kind is None or not (isinstance(value, kind) or (kind is dict and value is None)):
                return oai_error(400, f"Unknown fault switch or wrong type: {key!r}.", "invalid_value", param=key)
        for key, value in body.items():
            setattr(self.faults, key, value)
        return web.json_response(dict(self.faults.__dict__))

    async def beta(self, request: web.Request) -> web.Response:
        return oai_error(400, "The Realtime beta interface has been switched off; use POST /v1/realtime/calls.",
                         "beta_api_shape_disabled")

    async def client_secrets(self, request: web.Request) -> web.Response:
        if not self._api_key_ok(request):
            return self._unauthorized()
        try:
            body = await request.json()
        except ValueError:
            return oai_error(400, "We could not parse the JSON body of your request.", "invalid_json")
        if not isinstance(body, dict):
            return oai_error(400, "The body must be a JSON object.", "invalid_type")
        expires = body.get("expires_after") or {}
        seconds = expires.get("seconds", 600) if isinstance(expires, dict) else None
        if not isinstance(seconds, int) or not 10 <= seconds <= 7200:
            return oai_error(400, "expires_after.seconds must be between 10 and 7200.", "invalid_value",
                             param="expires_after.seconds")
        session = body.get("session") or {"type": "realtime"}
        if not isinstance(session, dict):
            return oai_error(400, "session must be an object.", "invalid_type", param="session")
        problem = check_session(session) or self._check_models(session)
        if problem:
            return problem
        value = f"ek_{secrets.token_hex(16)}"
        expires_at = int(time.time()) + seconds
        self._secrets[value] = _Secret(session, expires_at)
        return web.json_response({"value": value, "expires_at": expires_at,
                                  "session": {"object": "realtime.session", "id": new_id("sess"), **session}})

    def _check_models(self, session: dict[str, Any]) -> web.Response | None:
        """404 ``model_not_found`` for a retired model (its shutdown date has passed), naming the field."""
        audio = _object(session, "audio")
        transcription = _object(_object(audio, "input"), "transcription")
        for param, model in (("session.model", session.get("model")),
                             ("session.audio.input.transcription.model", transcription.get("model"))):
            if isinstance(model, str) and self.retired(model):
                return oai_error(404, f"The model '{model}' has been shut down (since {self.models()[model]}).",
                                 "model_not_found", param=param)
        return None

    async def create_call(self, request: web.Request) -> web.Response:
        if self.refuse_calls:
            return oai_error(503, "The Realtime service is temporarily unavailable. Please retry.",
                             "service_unavailable", etype="server_error")
        auth = request.headers.get("Authorization", "")
        secret = self._secrets.get(auth[7:].strip()) if auth.startswith("Bearer ek_") else None
        session: dict[str, Any]
        if secret is not None:
            if time.time() > secret.expires_at:
                return oai_error(401, "The ephemeral key has expired.", "expired_ephemeral_key")
            session = json.loads(json.dumps(secret.session))
            if self.faults.ignore_token_config:
                session = {"type": "realtime", **({"model": session["model"]} if "model" in session else {})}
        elif self._api_key_ok(request):
            session = {"type": "realtime"}
        else:
            return oai_error(401, "Invalid or missing ephemeral key.", "invalid_api_key")
        content_type = request.content_type
        if content_type == "application/sdp":
            offer = await request.text()
        elif content_type == "multipart/form-data":
            form = await request.post()
            offer = str(form.get("sdp") or "")
            extra = form.get("session")
            if extra:
                try:
                    extra_session = json.loads(str(extra))
                except ValueError:
                    return oai_error(400, "The session part is not valid JSON.", "invalid_json", param="session")
                problem = check_session(extra_session) if isinstance(extra_session, dict) else None
                if problem:
                    return problem
                session.update(extra_session)
        else:
            return oai_error(400, "Send the SDP offer as application/sdp or multipart/form-data.",
                             "unsupported_content_type")
        if not offer.startswith("v=0") or "m=" not in offer:
            return oai_error(400, "The SDP offer is not valid.", "invalid_offer", param="sdp")
        limit = self.config.max_sessions
        if limit is not None and self.sessions_in_use() >= limit:
            self.limit_refusals.append(time.monotonic())
            return oai_error(503, f"The maximum number of concurrent sessions ({limit}) has been reached. "
                             "Retry after a session has ended.", "session_limit_reached", etype="server_error")
        call_id = new_id("rtc")
        call = SimulatedCall(call_id, session, voice=self.config.voice,
                             consent_emulation=self.config.consent_emulation, event_log=self.config.event_log,
                             max_session_s=self.config.max_session_s, on_end=self._call_ended,
                             recognizer=self.recognizer, rtp_during_silence=self.config.rtp_during_silence,
                             response_delay_s=self.config.response_delay_s,
                             faults=self.faults, audio_buffer_events=self.config.audio_buffer_events,
                             sentence_pause_s=self.config.sentence_pause_s,
                             item_events=self.config.item_events, refused_voices=self.config.refused_voices)
        self._opening += 1
        try:
            answer = await call.answer(offer)
        except Exception as exc:  # aiortc rejects malformed offers in many ways
            await call.close("bad offer")
            return oai_error(400, f"The SDP offer could not be used: {exc}", "invalid_offer", param="sdp")
        finally:
            self._opening -= 1
        self.calls[call_id] = call
        if secret is not None:
            secret.calls.append(call_id)
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": f"/v1/realtime/calls/{call_id}"})

    async def hangup(self, request: web.Request) -> web.Response:
        if not self._api_key_ok(request):
            return self._unauthorized()
        call = self.calls.get(request.match_info["call_id"])
        if call is None:
            return oai_error(404, "Call not found or already ended.", "call_not_found")
        await call.close("hung up")
        return web.json_response({})

    async def chat(self, request: web.Request) -> web.Response:
        if not self._api_key_ok(request):
            return self._unauthorized()
        try:
            body = await request.json()
            messages = body["messages"]
            prompt = " ".join(str(m.get("content", "")) for m in messages)
        except (ValueError, KeyError, TypeError, AttributeError):
            return oai_error(400, "messages is required.", "invalid_value", param="messages")
        model = body.get("model")
        if isinstance(model, str) and self.retired(model):
            return oai_error(404, f"The model '{model}' has been shut down.", "model_not_found", param="model")
        fmt = (body.get("response_format") or {}).get("type")
        digest = int(hashlib.sha256(prompt.encode()).hexdigest(), 16)
        if fmt in ("json_object", "json_schema"):
            content = json.dumps(PACKS[digest % len(PACKS)])
        else:
            content = "Let's practise English together!"
        return web.json_response({
            "id": f"chatcmpl-{secrets.token_hex(8)}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model", "gpt-5-nano"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(content.split()),
                      "total_tokens": len(prompt.split()) + len(content.split())}})


def check_session(session: dict[str, Any]) -> web.Response | None:
    """400 for beta shapes and values the GA API refuses."""
    beta = [k for k in BETA_SESSION_KEYS if k in session]
    if beta:
        return oai_error(400, f"Unknown parameter: 'session.{beta[0]}'. The beta shape is switched off.",
                         "beta_api_shape_disabled", param=f"session.{beta[0]}")
    if session.get("type") != "realtime":
        return oai_error(400, "session.type must be 'realtime'.", "invalid_value", param="session.type")
    modalities = session.get("output_modalities", ["audio"])
    if modalities not in (["audio"], ["text"]):
        return oai_error(400, "output_modalities must be ['audio'] or ['text'].", "invalid_value",
                         param="session.output_modalities")
    return None


def parse_retirements(items: list[str]) -> dict[str, str]:
    """``MODEL=YYYY-MM-DD`` items → {model: date}; ValueError says which item is wrong and how."""
    shutdowns: dict[str, str] = {}
    for item in items:
        model, sep, when = item.partition("=")
        try:
            date.fromisoformat(when.strip())
        except ValueError:
            raise ValueError(f"--retire wants MODEL=YYYY-MM-DD, got {item!r}") from None
        if not sep or not model.strip():
            raise ValueError(f"--retire wants MODEL=YYYY-MM-DD, got {item!r}")
        shutdowns[model.strip()] = when.strip()
    return shutdowns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stella-kiosk simulator",
                                     description="A local stand-in for the OpenAI Realtime API (GA, WebRTC).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8800, help="0 lets the system pick a free port")
    parser.add_argument("--api-key", action="append", dest="api_keys",
                        help="accepted sk- key (repeatable; default: any key starting with sk-)")
    parser.add_argument("--no-consent-emulation", action="store_true",
                        help="answer every ICE consent check (OpenAI's server reportedly does not)")
    parser.add_argument("--event-log", type=Path,
                        help="append every event, both directions (\"direction\": client|server), to this JSONL file")
    parser.add_argument("--voice", choices=["auto", "espeak", "synthetic"], default="auto",
                        help="speech engine; each Realtime voice (alloy … cedar) speaks at its own pitch")
    parser.add_argument("--refuse-voice", action="append", default=[], choices=VOICES, metavar="VOICE",
                        help="a Realtime voice the model refuses in session.update (invalid_value); repeatable")
    parser.add_argument("--no-silent-rtp", action="store_true",
                        help="send RTP only while the tutor speaks (some servers pause the stream in between)")
    parser.add_argument("--refuse-calls", action="store_true",
                        help="start with new calls refused (503); POST /simulator/refuse-calls switches it")
    parser.add_argument("--ignore-token-config", action="store_true",
                        help="ignore the session config in ephemeral tokens, like some compatible servers "
                             "(POST /simulator/faults switches this and other faults)")
    parser.add_argument("--phrase", action="append", default=[],
                        help="a phrase the simulator should recognise in learner speech (repeatable; "
                             f"always known: {', '.join(DEFAULT_PHRASES)})")
    parser.add_argument("--cors", metavar="ORIGIN",
                        help="let a browser page from ORIGIN (or *) call the API: answer CORS preflights")
    parser.add_argument("--retire", action="append", default=[], metavar="MODEL=DATE",
                        help="give MODEL a shutdown date (YYYY-MM-DD; in the past = retired: minting a "
                             "token for it fails with model_not_found); repeatable")
    parser.add_argument("--response-delay", type=float, default=0.0, metavar="S",
                        help="model latency before each response's audio (default 0)")
    parser.add_argument("--no-audio-buffer-events", action="store_true",
                        help="never send output_audio_buffer.* events, like some third-party servers")
    parser.add_argument("--no-item-events", action="store_true",
                        help="never send response.output_item.* nor the tutor's conversation.item.* events, "
                             "like some third-party servers")
    parser.add_argument("--sentence-pause", type=float, metavar="S",
                        help="stream each answer sentence by sentence with S seconds of silence between "
                             "sentences, the response active until the last one (like pipeline servers)")
    parser.add_argument("--max-sessions", type=int, metavar="N",
                        help="at most N calls at once; more get 503 session_limit_reached")
    parser.add_argument("--slot-release", type=float, default=0.4, metavar="S",
                        help="with --max-sessions: an ended call holds its slot S seconds more (default 0.4)")
    args = parser.parse_args(argv)
    try:
        shutdowns = parse_retirements(args.retire)
    except ValueError as exc:
        parser.error(str(exc))
    if args.max_sessions is not None and args.max_sessions < 1:
        parser.error("--max-sessions must be at least 1")
    if args.sentence_pause is not None and args.sentence_pause < 0:
        parser.error("--sentence-pause must be 0 or more seconds")
    if args.slot_release < 0:
        parser.error("--slot-release must be 0 or more seconds")
    config = SimulatorConfig(host=args.host, port=args.port,
                             api_keys=frozenset(args.api_keys) if args.api_keys else None,
                             consent_emulation=not args.no_consent_emulation, event_log=args.event_log,
                             voice=args.voice, refused_voices=frozenset(args.refuse_voice),
                             phrases=(*DEFAULT_PHRASES, *args.phrase),
                             rtp_during_silence=not args.no_silent_rtp, refuse_calls=args.refuse_calls,
                             cors_origin=args.cors, model_shutdowns=shutdowns,
                             response_delay_s=max(0.0, args.response_delay),
                             ignore_token_config=args.ignore_token_config,
                             audio_buffer_events=not args.no_audio_buffer_events,
                             item_events=not args.no_item_events,
                             sentence_pause_s=args.sentence_pause, max_sessions=args.max_sessions,
                             slot_release_s=args.slot_release)
    try:
        return asyncio.run(_serve(config))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"simulator: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1


async def _serve(config: SimulatorConfig) -> int:
    from appliance.common.logs import setup_logging

    setup_logging("info")
    return await serve_until_signal(RealtimeSimulator(config))


def _object(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """A nested JSON object, or an empty one when it is absent or not an object."""
    value = parent.get(key)
    return value if isinstance(value, dict) else {}
