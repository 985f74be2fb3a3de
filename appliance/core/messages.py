"""Messages to the kiosk's owner task: from the button, the call, timers, the control socket.

Everything that changes kiosk state arrives as one of these on one queue, so state has a single
owner. The underscored ones are internal (posted by the kiosk's own tasks and timers).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from appliance.call.events import ServerEvent
from appliance.core.lesson import Lesson

if TYPE_CHECKING:  # aiortc loads after the daemon is READY (appliance.call.webrtc.warm_up)
    from aiortc.mediastreams import MediaStreamTrack


@dataclass(frozen=True)
class Press:
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Release:
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class _LongPress:
    press_at: float


@dataclass(frozen=True)
class _RemoteTrack:
    call: Any
    track: MediaStreamTrack


@dataclass(frozen=True)
class _IdleCheck:
    session_id: str
    activity: int


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
class _Connected:
    lesson: Lesson
    call: Any
    resume_instructions: str | None = None
    """Set when this call resumes a lesson whose call dropped: the session's new instructions."""
    session: dict[str, Any] | None = None
    """The session config (GA ``session.update`` fields) the kiosk sends when the channel opens."""


@dataclass(frozen=True)
class _Greet:
    """Time to greet on this call (its session config is applied, or the wait for it ran out)."""

    call: Any


@dataclass(frozen=True)
class _ConnectFailed:
    lesson: Lesson
    code: str
    message: str


@dataclass(frozen=True)
class _CallEvent:
    call: Any
    event: ServerEvent


@dataclass(frozen=True)
class _CallClosed:
    call: Any
    reason: str


@dataclass(frozen=True)
class _Audible:
    audible: bool
    at: float


@dataclass(frozen=True)
class _ErrorShown:
    pass


@dataclass(frozen=True)
class _RetrySave:
    pass


@dataclass(frozen=True)
class _Heartbeat:
    """Posted by the watchdog; handling it proves the owner task still makes progress."""

    seq: int


@dataclass(frozen=True)
class _DeviceHealth:
    """A microphone or speaker failed (``ok`` False) or is usable again (posted from its watch thread)."""

    kind: str
    ok: bool
    detail: str
