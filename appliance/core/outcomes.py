"""What a conversation asks the kiosk to do: returned values, never call-backs.

Why values: the conversation holds no reference to the kiosk, the call or the speaker, so it can be
tested alone (every input is a method call, every effect a value in the returned list), and the
kiosk stays the one place where effects happen, in the order they were returned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from appliance.core.transcript import Turn


@dataclass(frozen=True)
class Send:
    """Send this client event on the call's data channel."""

    event: dict[str, Any]


@dataclass(frozen=True)
class ClearSpeaker:
    """Drop the tutor audio the speaker still holds (the learner interrupted)."""


@dataclass(frozen=True)
class TutorHeard:
    """The tutor became audible to the learner (True) or went quiet (False): LEDs and observers follow."""

    audible: bool


@dataclass(frozen=True)
class Listening:
    """Hold-to-talk: the learner's held turn started (True) or ended (False)."""

    on: bool


@dataclass(frozen=True)
class TurnChanged:
    """A turn was completed or cut to what was heard: tell observers and checkpoint the lesson."""

    turn: Turn


@dataclass(frozen=True)
class Checkpoint:
    """The lesson's data changed (e.g. a turn's status): keep it on disk."""


@dataclass(frozen=True)
class Touch:
    """The learner did something (or the tutor just finished): restart the idle countdown."""


@dataclass(frozen=True)
class ErrorCue:
    """Something failed that the learner should hear about (the lesson goes on)."""


@dataclass(frozen=True)
class EndLesson:
    """End the lesson with this reason; ``error`` (when set) is shown first as the kiosk's error state."""

    reason: str
    error: str | None = None


@dataclass(frozen=True)
class StartTimer:
    """Call back ``on_timer(name, token)`` after ``delay_s`` (replacing a pending timer of that name)."""

    name: str
    delay_s: float
    token: float | None = None


@dataclass(frozen=True)
class StopTimer:
    name: str


Outcome = Send | ClearSpeaker | TutorHeard | Listening | TurnChanged | Checkpoint | Touch | ErrorCue | EndLesson \
    | StartTimer | StopTimer
