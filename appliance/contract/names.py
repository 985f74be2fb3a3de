"""Fixed vocabularies of the companion API and the lesson record (PROTOCOL §2)."""

from __future__ import annotations

from typing import Final, Literal

SCHEMA_VERSION: Final = 1
"""The lesson record's ``schema`` field."""

LEVELS: Final = ("A1", "A2", "B1", "B2", "C1", "C2")
"""CEFR levels a lesson plan is made for, easiest first."""

TARGET_KINDS: Final = ("vocab", "phrase", "grammar", "pronunciation")
"""What a lesson target practises."""

EndReason = Literal["button", "voice_stop", "time_limit", "idle", "error", "shutdown", "interrupted",
                    "call_dropped", "session_expired", "stop_command", "quota_exceeded", "rate_limited"]
END_REASONS: Final[tuple[EndReason, ...]] = (
    "button", "voice_stop", "time_limit", "idle", "error", "shutdown", "interrupted", "call_dropped",
    "session_expired", "stop_command", "quota_exceeded", "rate_limited")
"""Why a lesson ended. ``session_expired``: the server's own session limit (not the kiosk's);
``stop_command``: `stella-kiosk stop` (not the button); ``quota_exceeded`` / ``rate_limited``: the
OpenAI account refused further responses; ``call_dropped``: the call broke and could not be resumed;
``interrupted``: the kiosk stopped mid-lesson (power cut, crash) and kept what was said."""

Role = Literal["learner", "tutor"]
ROLES: Final[tuple[Role, ...]] = ("learner", "tutor")

Source = Literal["voice", "text"]
SOURCES: Final[tuple[Source, ...]] = ("voice", "text")

TurnStatus = Literal["incomplete", "failed"]
TURN_STATUSES: Final[tuple[TurnStatus, ...]] = ("incomplete", "failed")
"""A turn's optional ``status``: a tutor response that did not finish, or learner speech not transcribed."""

UpdateState = Literal["idle", "checking", "downloading", "installing", "waiting-for-idle", "switching",
                      "health-check", "rolled-back", "failed"]
UPDATE_STATES: Final[tuple[UpdateState, ...]] = (
    "idle", "checking", "downloading", "installing", "waiting-for-idle", "switching", "health-check",
    "rolled-back", "failed")
"""A kiosk's heartbeat ``update_state``: what its updater is doing, or how its last update ended
(``rolled-back``: the new version was unhealthy and the previous one runs again; ``failed``: the update
was refused or could not be installed, see ``update_error``)."""
MAX_UPDATE_ERROR: Final = 500
"""Longest heartbeat ``update_error``."""
