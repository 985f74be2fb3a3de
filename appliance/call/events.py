"""Realtime API events on the `oai-events` data channel: build client events, parse server events.

Only the GA shapes are ever sent (the beta interface is switched off). On input, beta event names
from older proxies are mapped to their GA names, because accepting them costs one dict lookup.
A malformed message never raises out of :func:`parse_server_event`: it becomes ``None`` and a log line.
Strings are cleaned at this edge (:mod:`appliance.common.safe_text`), so no event can carry a lone surrogate
or absurd nesting into the transcript, the store or a log line.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from appliance.common.safe_text import UnsafeJSON, clean_text, loads_clean

log = logging.getLogger(__name__)

#: Beta server event names → GA names.
BETA_TO_GA = {
    "response.audio_transcript.delta": "response.output_audio_transcript.delta",
    "response.audio_transcript.done": "response.output_audio_transcript.done",
    "response.text.delta": "response.output_text.delta",
    "response.text.done": "response.output_text.done",
    "response.audio.delta": "response.output_audio.delta",
    "response.audio.done": "response.output_audio.done",
    "conversation.item.created": "conversation.item.added",
}

_counter = itertools.count(1)
_prefix = os.urandom(3).hex()


def new_event_id() -> str:
    """A client event id, unique per process, so server errors can name the event that failed."""
    return f"evt_kiosk_{_prefix}{next(_counter):06d}"


@dataclass(frozen=True)
class ServerEvent:
    """A parsed server event: its GA type and the raw JSON object."""

    type: str
    data: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


MAX_MESSAGE_BYTES = 1_000_000
"""Larger data channel messages are dropped: no Realtime event over WebRTC comes near it."""


def parse_server_event(message: Any) -> ServerEvent | None:
    """Parse one data channel message; ``None`` (logged) when it is not a JSON event object.

    Never raises, whatever arrives: wrong type, huge, deeply nested, invalid UTF-8, lone surrogates.
    """
    if not isinstance(message, str | bytes):
        log.warning("dropped Realtime message of type %s", type(message).__name__)
        return None
    if len(message) > MAX_MESSAGE_BYTES:
        log.warning("dropped oversized Realtime message (%d bytes)", len(message))
        return None
    try:
        data = loads_clean(message)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # UnsafeJSON is a ValueError
        reason = "nested too deeply" if isinstance(exc, RecursionError | UnsafeJSON) else exc
        log.warning("dropped malformed Realtime message (%s): %.120r", reason, _preview(message))
        return None
    event_type = data.get("type") if isinstance(data, dict) else None
    if not isinstance(event_type, str):
        log.warning("dropped Realtime message without a type: %.120r", _preview(message))
        return None
    return ServerEvent(type=BETA_TO_GA.get(event_type, event_type), data=data)


def _preview(message: str | bytes) -> str:
    """A short, log-safe excerpt of a rejected message."""
    text = message[:120].decode("utf-8", "replace") if isinstance(message, bytes) else message[:120]
    return clean_text(text)


def _event(event_type: str, **fields: Any) -> dict[str, Any]:
    return {"type": event_type, "event_id": new_event_id(), **fields}


def session_update(**session: Any) -> dict[str, Any]:
    """``session.update`` for fields the kiosk owns (never echo server-only fields)."""
    return _event("session.update", session={"type": "realtime", **session})


def session_config(instructions: str, voice: str, *, transcription_model: str | None = None,
                   turn_detection: dict[str, Any] | None = None, noise_reduction: str | None = None) -> dict[str, Any]:
    """The session fields the kiosk owns, in GA shape, as the companion puts them in the token.

    Why the kiosk sends them itself: some OpenAI-compatible servers ignore the config embedded in
    an ephemeral token, and then the tutor has no instructions (no greeting at all). ``turn_detection``
    None means manual turns (hold-to-talk)."""
    audio_in: dict[str, Any] = {"turn_detection": turn_detection}
    if transcription_model:
        audio_in["transcription"] = {"model": transcription_model}
    if noise_reduction:
        audio_in["noise_reduction"] = {"type": noise_reduction}
    audio: dict[str, Any] = {"input": audio_in}
    if voice:
        audio["output"] = {"voice": voice}
    return {"instructions": instructions, "audio": audio}


def manual_turns_update() -> dict[str, Any]:
    """Switch the call to manual turns (hold-to-talk): no server VAD."""
    return session_update(audio={"input": {"turn_detection": None}})


def user_text(text: str) -> dict[str, Any]:
    """A typed learner (or teacher) message as a conversation item."""
    return _event("conversation.item.create", item={
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})


def system_text(text: str) -> dict[str, Any]:
    """A system note to the tutor (e.g. "one minute left"), not spoken by the learner."""
    return _event("conversation.item.create", item={
        "type": "message", "role": "system", "content": [{"type": "input_text", "text": text}]})


def response_create(instructions: str | None = None) -> dict[str, Any]:
    """Ask the model to respond now; optional per-response instructions."""
    if instructions:
        return _event("response.create", response={"instructions": instructions})
    return _event("response.create")


def response_cancel(response_id: str | None = None) -> dict[str, Any]:
    """Stop the response being generated (barge-in)."""
    return _event("response.cancel", **({"response_id": response_id} if response_id else {}))


def item_truncate(item_id: str, audio_end_ms: int, content_index: int = 0) -> dict[str, Any]:
    """Tell the model how much of its item the learner actually heard (barge-in)."""
    return _event("conversation.item.truncate", item_id=item_id, content_index=content_index,
                  audio_end_ms=max(0, int(audio_end_ms)))


def output_audio_buffer_clear() -> dict[str, Any]:
    """Drop tutor audio not yet played (WebRTC only; send after response.cancel)."""
    return _event("output_audio_buffer.clear")


def input_audio_buffer_commit() -> dict[str, Any]:
    """End the learner's turn by hand (manual turns)."""
    return _event("input_audio_buffer.commit")


def input_audio_buffer_clear() -> dict[str, Any]:
    """Discard the learner audio heard since the last commit (manual turns)."""
    return _event("input_audio_buffer.clear")


def encode(event: dict[str, Any]) -> str:
    """Serialise a client event for the data channel."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
