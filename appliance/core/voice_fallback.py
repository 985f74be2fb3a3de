"""The session config of one call, and what to send instead when the model refuses its voice.

Why its own module: a refused voice must never leave the lesson silent, and deciding what comes next
(the default voice, or no voice when the default itself was refused; once only; a warning the admin
reads) is small and pure. The conversation only sends what this returns.
"""

from __future__ import annotations

import logging
from typing import Any

from appliance.call import events
from appliance.contract.voices import DEFAULT_VOICE
from appliance.core.lesson import Lesson

log = logging.getLogger(__name__)


def refuses_voice(error: dict[str, Any], session_event_id: str | None) -> bool:
    """True when this ``error`` refused the session config sent last because of its voice (OpenAI
    answers ``invalid_value`` with ``param`` naming ``session.audio.output.voice``)."""
    about = f"{error.get('param') or ''} {error.get('message') or ''}".lower()
    return session_event_id is not None and error.get("event_id") == session_event_id and "voice" in about


def fall_back(session: dict[str, Any], error: dict[str, Any]) -> tuple[dict[str, Any], str, str] | None:
    """(the session with the default voice, the voice now used, the warning) after ``session``'s voice was
    refused; without a voice ("") when the default itself was refused; None when it named no voice."""
    audio = dict(session.get("audio") or {})
    output = audio.get("output")
    output = output if isinstance(output, dict) else {}
    refused = str(output.get("voice") or "")
    if not refused:
        return None
    if refused != DEFAULT_VOICE:
        audio["output"] = {**output, "voice": DEFAULT_VOICE}
        voice, using = DEFAULT_VOICE, f"the default voice {DEFAULT_VOICE}"
    else:
        audio.pop("output", None)
        voice, using = "", "the server's own voice"
    reason = str(error.get("message") or error.get("code") or "invalid_value")[:200]
    return {**session, "audio": audio}, voice, f"the model refused the voice {refused[:40]!r} ({reason}); using {using}"


class SessionConfig:
    """The session config the kiosk sends when a call opens, as last sent (its ``event_id`` identifies
    the error that refuses it), with at most one fallback for a refused voice."""

    def __init__(self, session: dict[str, Any]) -> None:
        self.session = session
        self.event_id: str | None = None
        self._fell_back = False

    def update(self) -> dict[str, Any]:
        """The ``session.update`` to send now."""
        event = events.session_update(**self.session)
        self.event_id = event["event_id"]
        return event

    def on_error(self, error: dict[str, Any], lesson: Lesson) -> dict[str, Any] | None:
        """The ``session.update`` to send again when ``error`` refused the voice (noted in the lesson's
        errors and logged as a warning), else None."""
        if self._fell_back or not refuses_voice(error, self.event_id):
            return None
        fallback = fall_back(self.session, error)
        if fallback is None:
            return None
        self._fell_back = True
        self.session, lesson.voice, warning = fallback
        log.warning("%s", warning)
        lesson.add_error("voice_refused", warning)
        return self.update()
