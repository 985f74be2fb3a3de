"""Messages to the kiosk's owner task: from the button, the call, timers, devices, the control socket.

Everything that changes kiosk state arrives as one of these on one queue, so state has a single
owner. The first five come from outside (button, control socket, service manager); the rest are
posted by the kiosk's own tasks, timers and ports' call-backs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from appliance.call.events import ServerEvent
from appliance.core.lesson import Lesson


@dataclass(frozen=True)
class Press:
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Release:
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Say:
    text: str


@dataclass(frozen=True)
class EndLesson:
    reason: str


@dataclass(frozen=True)
class Shutdown:
    pass


@dataclass(frozen=True)
class Connected:
    lesson: Lesson
    link: object
    """The attempt this call was opened by: messages from it carry the same object."""
    call: Any
    session: dict[str, Any] | None = None
    """The session config (GA ``session.update`` fields) to send when the channel opens."""


@dataclass(frozen=True)
class ConnectFailed:
    lesson: Lesson
    code: str
    message: str
    retryable: bool = True


@dataclass(frozen=True)
class ResumeNow:
    """Time for the next try at moving a dropped lesson to a new call."""

    session_id: str


@dataclass(frozen=True)
class CallEvent:
    link: object
    event: ServerEvent


@dataclass(frozen=True)
class CallClosed:
    link: object
    reason: str


@dataclass(frozen=True)
class RemoteTrack:
    link: object
    track: Any


@dataclass(frozen=True)
class Audible:
    """The speaker started or stopped emitting the call's audio, heard at ``at`` (monotonic)."""

    link: object
    audible: bool
    at: float


@dataclass(frozen=True)
class ConversationTimer:
    """A timer the call's conversation asked for has fired."""

    link: object
    name: str
    token: float | None


@dataclass(frozen=True)
class LessonTimer:
    """A lesson-wide timer: ``idle``, ``wrap_up`` or ``time_limit``."""

    session_id: str
    name: str


@dataclass(frozen=True)
class ErrorShown:
    pass


@dataclass(frozen=True)
class RetrySave:
    pass


@dataclass(frozen=True)
class Heartbeat:
    """Posted by the watchdog; handling it proves the owner task still makes progress."""

    seq: int


@dataclass(frozen=True)
class DeviceHealth:
    """A microphone or speaker failed (``ok`` False) or is usable again."""

    kind: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class FirstSync:
    """The first attempt to send a just-saved lesson to the companion (``synced``: it took it)."""

    record: dict[str, Any]
    synced: bool


@dataclass(frozen=True)
class Ready:
    """Start-up is through (devices tried, their state shown): set this event for whoever waits."""

    event: asyncio.Event
