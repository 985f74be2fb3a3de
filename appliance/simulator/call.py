"""One simulated Realtime call: an aiortc answerer that speaks the GA event protocol.

It behaves like OpenAI's WebRTC endpoint where the kiosk can tell: ``session.created`` first,
server VAD on the learner's audio, transcription events, the response lifecycle with transcript
deltas, ``output_audio_buffer.started/stopped`` around audio that is really played on the track
(silence in between, the track never stops), ``response.done`` with usage, cancel and clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from appliance.audio.dsp import rms_dbfs
from appliance.audio.speaker import AUDIBLE_DBFS
from appliance.audio.tracks import PacedAudioTrack, frame_to_mono
from appliance.call.ice_consent import ice_connections
from appliance.common.arrival import ArrivalGaps
from appliance.contract.voices import VOICES
from appliance.simulator import tutor
from appliance.simulator.asr import PhraseRecognizer
from appliance.simulator.ice import ignore_non_nominating_consent, partition
from appliance.simulator.vad import EnergyVad
from appliance.simulator.voice import RATE, synthesize

log = logging.getLogger(__name__)

PREFIX_PADDING_MS = 300
MAX_BUFFER_S = 120


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


SERVER_VAD_DEFAULTS: dict[str, Any] = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": PREFIX_PADDING_MS,
                                       "silence_duration_ms": 500, "idle_timeout_ms": None, "create_response": True,
                                       "interrupt_response": True}
PCM_FORMAT = {"type": "audio/pcm", "rate": 24000}
RATE_LIMITS = {"requests": 5000, "tokens": 400000}


def _section(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    value = mapping.get(key)
    return value if isinstance(value, dict) else {}


def turn_detection(session: dict[str, Any]) -> dict[str, Any] | None:
    audio_input = _section(_section(session, "audio"), "input")
    if "turn_detection" in audio_input:
        return audio_input["turn_detection"]
    return dict(SERVER_VAD_DEFAULTS)


def transcription_requested(session: dict[str, Any]) -> bool:
    """OpenAI transcribes the learner's audio only when the session names a transcription model."""
    return bool(_section(_section(session, "audio"), "input").get("transcription"))


def effective_session(session: dict[str, Any]) -> dict[str, Any]:
    """The whole session as OpenAI echoes it in ``session.created``/``session.updated``: every field,
    the defaults filled in under what the client asked for (a client checks what it got, not what it sent)."""
    audio_in = _section(_section(session, "audio"), "input")
    audio_out = _section(_section(session, "audio"), "output")
    detection = turn_detection(session)
    if isinstance(detection, dict) and detection.get("type", "server_vad") == "server_vad":
        detection = {**SERVER_VAD_DEFAULTS, **detection}
    full: dict[str, Any] = {
        "type": "realtime", "object": "realtime.session", "id": new_id("sess"), "model": "gpt-realtime",
        "output_modalities": ["audio"], "instructions": "", "tools": [], "tool_choice": "auto",
        "max_output_tokens": "inf", "tracing": None, "truncation": "auto", "prompt": None, "include": None,
        "expires_at": 0,
        **{k: v for k, v in session.items() if k != "audio"},
    }
    full["audio"] = {
        "input": {"format": dict(PCM_FORMAT), "transcription": None, "noise_reduction": None,
                  **audio_in, "turn_detection": detection},
        "output": {"format": dict(PCM_FORMAT), "voice": "alloy", "speed": 1.0, **audio_out},
    }
    return full


@dataclass
class Faults:
    """Switches that make the simulator misbehave on purpose, the way real servers sometimes do.

    Shared by every call of one simulator; tests set them directly, admins through
    ``POST /simulator/faults``. A "next" fault fires once and clears itself."""

    fail_next_response: dict[str, Any] | None = None
    """``{"status": "failed"|"incomplete", "error": {"type", "code", "message"}, "reason": ...,
    "times": N}``: the next response (the next N, with ``times``) ends that way."""
    fail_next_transcription: dict[str, Any] | None = None
    """The ``error`` object of the next ``conversation.item.input_audio_transcription.failed``."""
    ignore_token_config: bool = False
    """Start calls with an empty session, ignoring the config embedded in the ephemeral token (as
    some OpenAI-compatible servers do); a response with no instructions and no input is then refused."""
    usage_without_details: bool = False
    """``response.done`` usage with totals only, no per-token-type details (as some servers send)."""


class _Playback:
    """Speech of one tutor item, queued for the track and played out in real time.

    ``streaming``: more of the item is still being generated; once what is here has been played, the
    track sends silence that is not part of the item's audio (a pause while the server generates)."""

    def __init__(self, response_id: str, item_id: str, samples: np.ndarray, streaming: bool = False) -> None:
        self.response_id = response_id
        self.item_id = item_id
        self.samples = samples
        self.pos = 0
        self.started = False
        self.streaming = streaming
        self.dropped = False
        """Cleared or cancelled before the end: whoever generates more of it stops."""
        self.drained = asyncio.Event()
        """Set while everything generated so far has been played (a streaming item waits on it)."""
        self.audible_sent = False
        """Its first audible frame went to the track (speech starts quietly: not always the first frame)."""

    @property
    def played_ms(self) -> float:
        return 1000 * min(self.pos, len(self.samples)) / RATE

    @property
    def finished(self) -> bool:
        return self.pos >= len(self.samples) and not self.streaming

    def extend(self, samples: np.ndarray) -> None:
        self.samples = np.concatenate([self.samples, samples])
        self.drained.clear()


def sentences(text: str) -> list[str]:
    """``text`` split after each ``.``, ``!`` or ``?`` (how a streaming server paces its speech)."""
    return [part for part in re.split(r"(?<=[.!?])\s+", text.strip()) if part] or [text]


class _GatedAudioTrack(PacedAudioTrack):
    """A paced track that sends nothing (no RTP at all) while its gate is closed."""

    def __init__(self, supplier: Callable[[int], np.ndarray], sample_rate: int, gate: asyncio.Event) -> None:
        super().__init__(supplier, sample_rate=sample_rate)
        self._gate = gate

    async def recv(self) -> Any:
        await self._gate.wait()
        return await super().recv()


class SimulatedCall:
    """One call. ``rtp_during_silence=False`` sends RTP only while the tutor speaks (some servers
    pause the stream between responses); ``freeze()`` cuts the call off like a network partition.

    Third-party servers: ``audio_buffer_events=False`` never sends ``output_audio_buffer.*`` (the
    client must tell from the audio itself when the tutor is heard); ``item_events=False`` never sends
    ``response.output_item.*`` nor the tutor's ``conversation.item.*`` (the tutor's item is named only by
    its content and transcript events); ``sentence_pause_s`` streams each
    answer sentence by sentence, the response active (no ``response.done``) until its last sentence is
    out, with that much silence between sentences while the next one is "generated"."""

    def __init__(self, call_id: str, session: dict[str, Any], *, voice: str, consent_emulation: bool,
                 event_log: Path | None, max_session_s: float, on_end: Callable[[str], None],
                 recognizer: PhraseRecognizer, rtp_during_silence: bool = True,
                 response_delay_s: float = 0.0, faults: Faults | None = None,
                 audio_buffer_events: bool = True, sentence_pause_s: float | None = None,
                 item_events: bool = True, refused_voices: frozenset[str] = frozenset()) -> None:
        self.call_id = call_id
        self.refused_voices = refused_voices
        """Voices this "model" refuses in ``session.update`` (``invalid_value``), as a model without them does."""
        self.session = effective_session(session)
        self.session["expires_at"] = int(time.time() + max_session_s)
        self.response_delay_s = response_delay_s
        """Model latency before a response's audio exists (a response is cancellable meanwhile)."""
        self.audio_buffer_events = audio_buffer_events
        self.item_events = item_events
        self.sentence_pause_s = sentence_pause_s
        self.voice = voice
        self.consent_emulation = consent_emulation
        self.event_log = event_log
        self.max_session_s = max_session_s
        self._on_end = on_end
        self.recognizer = recognizer
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.rtp_during_silence = rtp_during_silence
        self._audio_gate = asyncio.Event()
        if rtp_during_silence:
            self._audio_gate.set()
        self.track = _GatedAudioTrack(self._supply, RATE, self._audio_gate)
        self.mic_arrival = ArrivalGaps()
        #: time.monotonic() when each tutor item's first audible frame went to the track (the newest 50):
        #: where the server's own time to speak ends, so a client's figure can be measured from it.
        self.tutor_audible_sent: deque[float] = deque(maxlen=50)
        """How evenly the client's microphone audio arrives (``GET /simulator/audio-arrival``)."""
        self.frozen = False
        """Nothing leaves the server (no RTP, no events, no ICE answers)."""
        self.deaf = False
        """Nothing reaches the server either (with ``frozen``: a full network partition)."""
        self.channel: Any = None
        self.received: list[dict[str, Any]] = []
        self.sent: list[dict[str, Any]] = []
        self.ended = asyncio.Event()
        self.closed = asyncio.Event()
        """Set once the peer connection is closed too (``ended`` is set first, when closing starts)."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._queue: deque[_Playback] = deque()
        """Tutor audio waiting for the track, in order; the head is playing (a new response's audio
        waits behind the one still playing, as in a real output audio buffer)."""
        self._vad = EnergyVad()
        self._audio_ms = 0.0
        self._buffer: list[np.ndarray] = []
        self._buffer_start_ms = 0.0
        self._speech_item: str | None = None
        self._last_item: str | None = None
        self._learner_texts: list[str] = []
        self._pending_transcripts: list[asyncio.Task[str]] = []
        self._active_response: str | None = None
        self._responses = 0
        self._input_audio_ms = 0.0
        self._expiry: asyncio.TimerHandle | None = None
        self._system_note = ""
        self._cancelled: dict[str, str] = {}
        """Cancelled response ids → status_details.reason (client_cancelled / turn_detected)."""
        self._last_response_id = ""
        self._previous: dict[str, str | None] = {}
        """item id → previous_item_id when it was added: ``conversation.item.done`` repeats it."""
        self._tokens_used = 0
        self.faults = faults if faults is not None else Faults()
        self.generated_ms: dict[str, float] = {}
        """Audio generated so far for each tutor item."""
        self.played_ms: dict[str, float] = {}
        """Audio of each tutor item played on the track so far (only items that started playing):
        ``conversation.item.truncate`` may cut an item only there, and only within what was played."""
        self.truncated: dict[str, int] = {}
        """Tutor items the client truncated, with the audio_end_ms it gave."""

    # -- signalling -------------------------------------------------------------------------
    async def answer(self, offer_sdp: str) -> str:
        pc = self.pc
        pc.on("datachannel", self._on_datachannel)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._on_state)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        pc.addTrack(self.track)
        await pc.setLocalDescription(await pc.createAnswer())
        for connection in ice_connections(pc):
            if self.consent_emulation:
                ignore_non_nominating_consent(connection)
            partition(connection, lambda: self.frozen, lambda: self.deaf)
        self._expiry = asyncio.get_running_loop().call_later(self.max_session_s, self._expire)
        return mark_ice_lite(pc.localDescription.sdp)

    async def close(self, reason: str = "closed") -> None:
        if self.ended.is_set():
            return
        self.ended.set()
        # The call leaves the simulator's table first: close() often runs in one of this call's own
        # tasks (a failed connection), and nothing awaited below may keep a dead call listed.
        self._on_end(self.call_id)
        log.info("call %s ended (%s)", self.call_id, reason)
        if self._expiry is not None:
            self._expiry.cancel()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        self.track.stop()
        try:
            with contextlib.suppress(Exception):
                await self.pc.close()
        finally:
            self.closed.set()

    def freeze(self, hear_client: bool = False) -> None:
        """Go completely silent, both ways (no RTP, no events, nothing inbound): a network partition.

        ``hear_client``: only the server's side stalls (it sends nothing) while what the client sends
        still arrives, so the client's hang-up ends the call here as it would on a live server.
        The call keeps its state; ``unfreeze()`` heals the partition (SCTP then delivers what waited).
        """
        if not self.frozen:
            log.info("call %s frozen (%s)", self.call_id, "stalled" if hear_client else "partitioned")
        self.frozen = True
        self.deaf = not hear_client

    def unfreeze(self) -> None:
        if self.frozen:
            log.info("call %s unfrozen", self.call_id)
        self.frozen = False
        self.deaf = False

    @property
    def speaking(self) -> bool:
        """The output audio buffer still holds tutor audio to play (or waits for more of an answer)."""
        return bool(self._queue)

    @property
    def _playback(self) -> _Playback | None:
        """The tutor audio playing now (the head of the queue)."""
        return self._queue[0] if self._queue else None

    def _enqueue(self, playback: _Playback) -> None:
        self._queue.append(playback)
        self._update_gate()

    def _update_gate(self) -> None:
        """Keep the audio gate matching the queue (the one check, after every change to it)."""
        if self._queue or self.rtp_during_silence:
            self._audio_gate.set()
        else:
            self._audio_gate.clear()

    def _buffer_event(self, event_type: str, **fields: Any) -> None:
        """``output_audio_buffer.*``: sent only by servers that have them (OpenAI's WebRTC does)."""
        if self.audio_buffer_events:
            self.send(event_type, **fields)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed"):
            self._spawn(self.close(f"connection {self.pc.connectionState}"))

    def _expire(self) -> None:
        self.send("error", error={"type": "invalid_request_error", "code": "session_expired",
                                  "message": "Your session hit the maximum duration of 60 minutes."})
        self._spawn(self.close("session expired"))

    # -- events out -------------------------------------------------------------------------
    def send(self, event_type: str, **fields: Any) -> None:
        event = {"type": event_type, "event_id": new_id("event"), **fields}
        self.sent.append(event)
        self._log_event("server", event)
        if self.channel is not None and self.channel.readyState == "open":
            self.channel.send(json.dumps(event))

    def _log_event(self, direction: str, event: dict[str, Any]) -> None:
        """One JSONL line per event, both ways, so a log shows what each side saw and in what order."""
        if self.event_log is None:
            return
        line = json.dumps({"ts": time.time(), "call_id": self.call_id, "direction": direction, "event": event})
        try:
            with open(self.event_log, "a", encoding="utf-8") as log_file:
                log_file.write(line + "\n")
        except OSError as exc:
            log.warning("call %s: cannot write the event log %s: %s", self.call_id, self.event_log, exc)

    def _error(self, message: str, code: str, event_id: str | None = None,
               etype: str = "invalid_request_error", param: str | None = None) -> None:
        self.send("error", error={"type": etype, "code": code, "message": message, "param": param,
                                  "event_id": event_id})

    @property
    def speaker(self) -> str:
        """The Realtime voice the session speaks with (``session.audio.output.voice``)."""
        return str(_section(_section(self.session, "audio"), "output").get("voice") or "alloy")

    # -- events in --------------------------------------------------------------------------
    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != "oai-events":
            return
        self.channel = channel
        channel.on("message", self._on_message)
        self.send("session.created", session=self.session)

    def _on_message(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            self._error("The message is not valid JSON.", "invalid_json")
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self._error("The event has no type.", "invalid_event")
            return
        self.received.append(event)
        self._log_event("client", event)
        handler = {
            "session.update": self._session_update,
            "conversation.item.create": self._item_create,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
            "output_audio_buffer.clear": self._output_clear,
            "input_audio_buffer.commit": self._input_commit,
            "input_audio_buffer.clear": self._input_clear,
            "conversation.item.truncate": self._item_truncate,
        }.get(event["type"])
        if handler is None:
            self._error(f"Invalid value: '{event['type']}'. Unsupported client event.", "invalid_value",
                        event.get("event_id"))
            return
        handler(event)

    def _session_update(self, event: dict[str, Any]) -> None:
        session = event.get("session")
        if not isinstance(session, dict) or session.get("type") != "realtime":
            self._error("session.type must be 'realtime'.", "invalid_value", event.get("event_id"))
            return
        if "modalities" in session or "voice" in session or "input_audio_format" in session:
            self._error("The beta session shape is no longer supported.", "beta_api_shape_disabled",
                        event.get("event_id"))
            return
        voice = _section(_section(session, "audio"), "output").get("voice")
        if voice is not None and (voice not in VOICES or voice in self.refused_voices):
            # OpenAI refuses the whole update: nothing of it is applied.
            self._error(f"Invalid value: '{str(voice)[:40]}'. This model does not support this voice; supported "
                        f"values are: {', '.join(v for v in VOICES if v not in self.refused_voices)}.",
                        "invalid_value", event.get("event_id"), param="session.audio.output.voice")
            return
        for key, value in session.items():
            if key == "audio" and isinstance(value, dict):
                audio = self.session.setdefault("audio", {})
                for side, settings in value.items():
                    if isinstance(settings, dict):
                        audio.setdefault(side, {}).update(settings)
            elif key not in ("id", "object", "expires_at"):
                self.session[key] = value
        detection = turn_detection(self.session)
        if isinstance(detection, dict) and detection.get("type", "server_vad") == "server_vad":
            self.session["audio"]["input"]["turn_detection"] = {**SERVER_VAD_DEFAULTS, **detection}
        self.send("session.updated", session=self.session)

    def _item_create(self, event: dict[str, Any]) -> None:
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") != "message":
            self._error("Only message items are supported here.", "invalid_value", event.get("event_id"))
            return
        texts = [c.get("text", "") for c in item.get("content", []) if isinstance(c, dict)
                 and c.get("type") == "input_text"]
        role = item.get("role")
        if role not in ("user", "system") or not texts:
            self._error("A message needs a user or system role and input_text content.", "invalid_value",
                        event.get("event_id"))
            return
        item_id = item.get("id") or new_id("item")
        full = {"id": item_id, "type": "message", "object": "realtime.item", "status": "completed", "role": role,
                "content": [{"type": "input_text", "text": t} for t in texts]}
        self._add_item(full)
        self._item_done(full)
        if role == "user":
            self._learner_texts.append(" ".join(texts))
        else:
            self._system_note = " ".join(texts)

    def _response_create(self, event: dict[str, Any]) -> None:
        response = event.get("response")
        response = response if isinstance(response, dict) else {}
        if "modalities" in response:
            self._error("The beta response shape is no longer supported.", "beta_api_shape_disabled",
                        event.get("event_id"))
            return
        if (self.faults.ignore_token_config and not self.session.get("instructions")
                and not response.get("instructions") and not self._learner_texts and not self._system_note):
            self._error("The response has no instructions and no input to respond to.", "invalid_value",
                        event.get("event_id"))
            return
        if self._active_response is not None:
            self._error("Conversation already has an active response in progress.",
                        "conversation_already_has_active_response", event.get("event_id"))
            return
        self._active_response = new_id("resp")
        self._spawn(self._respond(self._active_response, str(response.get("instructions") or "")))

    def _response_cancel(self, event: dict[str, Any]) -> None:
        rid = self._active_response
        if rid is None:
            self._error("Cancellation failed: no active response found.", "response_cancel_not_active",
                        event.get("event_id"))
            return
        self._active_response = None
        self._cancelled[rid] = "client_cancelled"
        self._stop_playback(rid, cleared=False)

    def _output_clear(self, event: dict[str, Any]) -> None:
        playing = self._playback
        self._stop_playback(playing.response_id if playing else self._last_response_id, cleared=True)

    def _item_truncate(self, event: dict[str, Any]) -> None:
        """Cut a tutor item's audio where the learner stopped hearing it. As OpenAI, refused with
        ``invalid_value``: an item that is not the tutor's audio, one not played yet, or a cut beyond
        the audio already played (the client says what was heard; it cannot have heard more)."""
        item_id, end_ms = event.get("item_id"), event.get("audio_end_ms")
        if item_id not in self.generated_ms:
            self._error(f"Item '{item_id}' is not an assistant audio item in this conversation.", "invalid_value",
                        event.get("event_id"))
            return
        played = self.played_ms.get(str(item_id))
        if played is None:
            self._error(f"Item '{item_id}' has not been played yet: there is no heard audio to truncate.",
                        "invalid_value", event.get("event_id"))
            return
        if not isinstance(end_ms, int) or isinstance(end_ms, bool) or end_ms < 0 or end_ms > played + 1:
            self._error(f"audio_end_ms must be between 0 and the {played:.0f} ms of item '{item_id}' played so "
                        "far.", "invalid_value", event.get("event_id"))
            return
        self.truncated[item_id] = end_ms
        self.send("conversation.item.truncated", item_id=item_id, content_index=int(event.get("content_index") or 0),
                  audio_end_ms=end_ms)

    def _input_commit(self, event: dict[str, Any]) -> None:
        audio = np.concatenate(self._buffer) if self._buffer else np.zeros(0, np.int16)
        if len(audio) < RATE // 10:
            self._error("Error committing input audio buffer: buffer too small. Expected at least 100ms of "
                        "audio.", "input_audio_buffer_commit_empty", event.get("event_id"))
            return
        self._buffer = []
        self._commit_utterance(new_id("item"), audio)

    def _input_clear(self, event: dict[str, Any]) -> None:
        self._buffer = []
        self.send("input_audio_buffer.cleared")

    # -- the learner's audio ------------------------------------------------------------------
    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            self._spawn(self._drain(track))

    async def _drain(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            if not isinstance(frame, av.AudioFrame):  # an audio track yields audio frames
                continue
            self.mic_arrival.frame(time.monotonic(), frame.pts, frame.samples)
            samples = frame_to_mono(frame)
            if frame.sample_rate != RATE:
                from appliance.audio.dsp import resample

                samples = resample(samples, frame.sample_rate, RATE)
            ms = 1000 * len(samples) / RATE
            self._audio_ms += ms
            self._hear(samples, ms)

    def _hear(self, samples: np.ndarray, ms: float) -> None:
        detection = turn_detection(self.session)
        self._buffer.append(samples)
        if detection is None:
            # Manual turns: keep everything until commit/clear (bounded).
            while len(self._buffer) * 20 > MAX_BUFFER_S * 1000:
                self._buffer.pop(0)
            return
        self._vad.silence_ms = int(detection.get("silence_duration_ms") or 500)
        if not self._vad.in_speech:
            # Keep only the prefix padding before speech starts.
            keep = max(1, int(PREFIX_PADDING_MS / ms))
            self._buffer = self._buffer[-keep:]
        result = self._vad.feed(samples, ms)
        if result.started:
            log.info("call %s: learner speech started at %.0f ms", self.call_id, self._audio_ms)
            self._speech_item = new_id("item")
            self._buffer_start_ms = self._audio_ms - PREFIX_PADDING_MS
            self.send("input_audio_buffer.speech_started", item_id=self._speech_item,
                      audio_start_ms=int(max(0, self._audio_ms - self._vad.min_speech_ms)))
            if detection.get("interrupt_response", True):
                self._barge_in()
        elif result.stopped and self._speech_item is not None:
            item_id, self._speech_item = self._speech_item, None
            self.send("input_audio_buffer.speech_stopped", item_id=item_id, audio_end_ms=int(self._audio_ms))
            audio = np.concatenate(self._buffer)
            self._buffer = []
            self._commit_utterance(item_id, audio, auto_respond=detection.get("create_response", True))

    def _barge_in(self) -> None:
        """The learner spoke over the tutor: cancel a response still being made (reason
        ``turn_detected``) and cut the item being played where the learner stopped hearing it."""
        if self._active_response is not None:
            self._cancelled[self._active_response] = "turn_detected"
            self._active_response = None
        playing = self._playback
        if playing is not None:
            played_ms = int(playing.played_ms)
            self._stop_playback(playing.response_id, cleared=True)
            self.send("conversation.item.truncated", item_id=playing.item_id, content_index=0,
                      audio_end_ms=played_ms)

    def _add_item(self, item: dict[str, Any]) -> None:
        self._previous[item["id"]] = self._last_item
        self.send("conversation.item.added", previous_item_id=self._last_item, item=item)
        self._last_item = item["id"]

    def _item_done(self, item: dict[str, Any]) -> None:
        self.send("conversation.item.done", previous_item_id=self._previous.get(item["id"]), item=item)

    def _commit_utterance(self, item_id: str, audio: np.ndarray, auto_respond: bool = False) -> None:
        self._input_audio_ms += 1000 * len(audio) / RATE
        self.send("input_audio_buffer.committed", item_id=item_id, previous_item_id=self._last_item)
        item = {"id": item_id, "type": "message", "object": "realtime.item", "status": "completed", "role": "user",
                "content": [{"type": "input_audio", "transcript": None}]}
        self._add_item(item)
        task: asyncio.Task[str] = self._spawn(self._transcribe(item_id, audio, item))
        self._pending_transcripts.append(task)
        if auto_respond and self._active_response is None:
            self._active_response = new_id("resp")
            self._spawn(self._respond(self._active_response, ""))

    async def _transcribe(self, item_id: str, audio: np.ndarray, item: dict[str, Any]) -> str:
        text = await self.recognizer.transcribe(audio)
        failure, self.faults.fail_next_transcription = self.faults.fail_next_transcription, None
        if failure is not None:
            self.send("conversation.item.input_audio_transcription.failed", item_id=item_id, content_index=0,
                      error={"type": "transcription_error", "code": "audio_unintelligible",
                             "message": "The audio could not be transcribed.", "param": None, **failure})
            self._item_done(item)
            return ""
        # The simulated model always "understands" the audio; the client hears the words only when
        # its session asked for transcription, as with OpenAI.
        if transcription_requested(self.session):
            self.send("conversation.item.input_audio_transcription.delta", item_id=item_id, content_index=0,
                      delta=text)
            self.send("conversation.item.input_audio_transcription.completed", item_id=item_id, content_index=0,
                      transcript=text, usage={"type": "duration", "seconds": round(len(audio) / RATE, 2)})
            item["content"][0]["transcript"] = text
        self._item_done(item)
        self._learner_texts.append(text)
        return text

    # -- the tutor's turn -------------------------------------------------------------------
    async def _respond(self, rid: str, instructions: str) -> None:
        for task in list(self._pending_transcripts):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._pending_transcripts = [t for t in self._pending_transcripts if not t.done()]
        self._last_response_id = rid
        item_id = new_id("item")
        base = {"id": rid, "object": "realtime.response", "conversation_id": "conv_sim",
                "output_modalities": ["audio"], "metadata": None}
        self.send("response.created", response={**base, "status": "in_progress", "output": []})
        # Session instructions set the persona; only this response's own instructions and system notes
        # (e.g. "wrap up now") change what this turn says.
        all_instructions = " ".join([instructions, self._system_note])
        session_instructions = str(self.session.get("instructions") or "")
        if self._system_note:
            text = tutor.reply("", self._responses, all_instructions)
            self._system_note = ""
        elif not self._learner_texts:
            text = tutor.greeting(session_instructions)
        else:
            text = tutor.reply(self._learner_texts[-1], self._responses, all_instructions)
        self._responses += 1
        fault = self.faults.fail_next_response
        times = fault.get("times", 1) if fault is not None else 0
        more = isinstance(times, int) and not isinstance(times, bool) and times > 1
        self.faults.fail_next_response = {**fault, "times": times - 1} if fault is not None and more else None
        if fault is not None and fault.get("status", "failed") == "failed":
            error = {"type": "server_error", "code": "server_error", "message": "The server had an error.",
                     **(fault.get("error") or {})}
            return self._finish(rid, base, {"id": item_id, "type": "message", "role": "assistant"}, "", "failed", 0,
                                {"type": "failed", "error": error})
        if fault is not None:  # incomplete: the answer stops half-way
            words = text.split(" ")
            text = " ".join(words[:max(1, len(words) // 2)])
        item = {"id": item_id, "type": "message", "object": "realtime.item", "status": "in_progress",
                "role": "assistant", "content": []}
        if self.item_events:
            self.send("response.output_item.added", response_id=rid, output_index=0, item=item)
            self._add_item(item)
        part = {"type": "audio", "transcript": ""}
        where = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        self.send("response.content_part.added", part=part, **where)
        if self.response_delay_s > 0:
            await asyncio.sleep(self.response_delay_s)  # the model "thinking": the response is active meanwhile
        if self.sentence_pause_s is not None:
            return await self._stream(rid, base, item, text, where, fault)
        audio = await synthesize(text, self.voice, self.speaker)
        if rid in self._cancelled:
            return self._finish(rid, base, item, "", "cancelled", 0)
        self._enqueue(_Playback(rid, item_id, audio))
        self.generated_ms[item_id] = 1000 * len(audio) / RATE
        words = text.split(" ")
        for i, word in enumerate(words):
            self.send("response.output_audio_transcript.delta", delta=word + (" " if i < len(words) - 1 else ""),
                      **where)
        self.send("response.output_audio_transcript.done", transcript=text, **where)
        self.send("response.content_part.done", part={"type": "audio", "transcript": text}, **where)
        if fault is not None:
            return self._finish(rid, base, item, text, "incomplete", len(audio),
                                {"type": "incomplete", "reason": fault.get("reason", "max_output_tokens")})
        self._finish(rid, base, item, text, "completed", len(audio))

    async def _stream(self, rid: str, base: dict[str, Any], item: dict[str, Any], text: str,
                      where: dict[str, Any], fault: dict[str, Any] | None) -> None:
        """Generate and play the answer one sentence at a time (``sentence_pause_s``): each sentence is
        made once the previous one has been played, after a pause, so the learner hears gaps while the
        response is still active; ``response.done`` follows the last sentence."""
        pause_s = self.sentence_pause_s or 0.0
        playback: _Playback | None = None
        spoken: list[str] = []
        samples = 0
        for sentence in sentences(text):
            if playback is not None:
                await playback.drained.wait()  # the previous sentence has been heard out
                if not playback.dropped:
                    await asyncio.sleep(pause_s)  # the model is slow to say the next one
                if playback.dropped or rid in self._cancelled:
                    break
            audio = await synthesize(sentence, self.voice, self.speaker)
            if rid in self._cancelled or (playback is not None and playback.dropped):
                break
            if playback is None:
                playback = _Playback(rid, where["item_id"], audio, streaming=True)
                self._enqueue(playback)
            else:
                playback.extend(audio)
            samples += len(audio)
            self.generated_ms[where["item_id"]] = 1000 * samples / RATE
            words = sentence.split(" ")
            for i, word in enumerate(words):
                lead = " " if spoken and i == 0 else ""
                self.send("response.output_audio_transcript.delta",
                          delta=lead + word + (" " if i < len(words) - 1 else ""), **where)
            spoken.append(sentence)
        if playback is not None:
            playback.streaming = False
        said = " ".join(spoken)
        if rid in self._cancelled or (playback is not None and playback.dropped):
            return self._finish(rid, base, item, said, "cancelled", samples)
        self.send("response.output_audio_transcript.done", transcript=said, **where)
        self.send("response.content_part.done", part={"type": "audio", "transcript": said}, **where)
        if fault is not None:
            return self._finish(rid, base, item, said, "incomplete", samples,
                                {"type": "incomplete", "reason": fault.get("reason", "max_output_tokens")})
        self._finish(rid, base, item, said, "completed", samples)

    def _finish(self, rid: str, base: dict[str, Any], item: dict[str, Any], text: str, status: str,
                samples: int, details: dict[str, Any] | None = None) -> None:
        item = {**item, "status": "completed" if status == "completed" else "incomplete",
                "content": [{"type": "output_audio", "transcript": text}] if text else []}
        if text and self.item_events:
            self.send("response.output_item.done", response_id=rid, output_index=0, item=item)
            self._item_done(item)
        out_audio = int(1000 * samples / RATE / 50)
        in_audio = int(self._input_audio_ms / 100)
        text_in = 50 + 5 * self._responses
        text_out = len(text.split())
        usage: dict[str, Any] = {
            "total_tokens": in_audio + text_in + out_audio + text_out, "input_tokens": in_audio + text_in,
            "output_tokens": out_audio + text_out,
            "input_token_details": {"text_tokens": text_in, "audio_tokens": in_audio, "cached_tokens": 0},
            "output_token_details": {"text_tokens": text_out, "audio_tokens": out_audio}}
        if self.faults.usage_without_details:
            usage = {"total_tokens": usage["total_tokens"], "input_tokens": usage["input_tokens"],
                     "output_tokens": usage["output_tokens"]}
        if details is None:
            details = {"type": status, "reason": self._cancelled.get(rid, "client_cancelled")} \
                if status == "cancelled" else None
        self.send("response.done", response={**base, "status": status, "status_details": details,
                                             "output": [item] if text else [], "usage": usage})
        if self._active_response == rid:
            self._active_response = None
        self._tokens_used += usage["total_tokens"]
        self.send("rate_limits.updated", rate_limits=[
            {"name": "requests", "limit": RATE_LIMITS["requests"],
             "remaining": max(0, RATE_LIMITS["requests"] - self._responses), "reset_seconds": 60.0},
            {"name": "tokens", "limit": RATE_LIMITS["tokens"],
             "remaining": max(0, RATE_LIMITS["tokens"] - self._tokens_used), "reset_seconds": 60.0}])

    # -- the outgoing track -------------------------------------------------------------------
    def _supply(self, n: int) -> np.ndarray:
        """Called by the paced track every 20 ms: the next slice of speech, or silence."""
        playing = self._playback
        if playing is None:
            return np.zeros(n, dtype=np.int16)
        if not playing.started:
            playing.started = True
            self.played_ms[playing.item_id] = 0.0
            self._buffer_event("output_audio_buffer.started", response_id=playing.response_id)
        chunk = playing.samples[playing.pos:playing.pos + n]
        if not playing.audible_sent and rms_dbfs(chunk) > AUDIBLE_DBFS:
            playing.audible_sent = True
            self.tutor_audible_sent.append(time.monotonic())
        playing.pos = min(len(playing.samples), playing.pos + n)
        self.played_ms[playing.item_id] = playing.played_ms
        if playing.pos >= len(playing.samples):
            playing.drained.set()
            if playing.finished:
                self._queue.popleft()
                self._update_gate()
                self._buffer_event("output_audio_buffer.stopped", response_id=playing.response_id)
        if len(chunk) < n:
            chunk = np.concatenate([chunk, np.zeros(n - len(chunk), dtype=np.int16)])
        return chunk

    def _stop_playback(self, rid: str, cleared: bool) -> None:
        """Drop queued tutor audio: all of it (``cleared``), else only response ``rid``'s (a cancel)."""
        playing = self._playback
        dropped = [p for p in self._queue if cleared or p.response_id == rid]
        self._queue = deque(p for p in self._queue if p not in dropped)
        for playback in dropped:
            playback.dropped = True
            playback.drained.set()  # a sentence stream waiting on it stops
        self._update_gate()
        if not cleared and playing is not None and playing in dropped and playing.started:
            self._buffer_event("output_audio_buffer.stopped", response_id=playing.response_id)
        rid = playing.response_id if playing is not None and not rid else rid
        if cleared and rid:
            # With no response ever made there is no id to name (OpenAI never sends a made-up one).
            self._buffer_event("output_audio_buffer.cleared", response_id=rid)


def mark_ice_lite(sdp: str) -> str:
    """Declare ICE-lite at session level, as OpenAI's server does."""
    if "a=ice-lite" in sdp:
        return sdp
    lines = sdp.split("\r\n")
    first_media = next((i for i, line in enumerate(lines) if line.startswith("m=")), len(lines))
    lines.insert(first_media, "a=ice-lite")
    return "\r\n".join(lines)
