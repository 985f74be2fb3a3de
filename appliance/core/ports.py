"""The kiosk core's ports: what it asks of the world, as small interfaces.

The core (the orchestrator and the conversation) imports no hardware, audio backend, store, companion
client or WebRTC stack: it is handed objects that satisfy these protocols (appliance.daemon.assemble
builds the real ones; tests may hand in their own). Each port says *what* the core needs in its own
words — what the learner sees and hears, what is kept, how a call is opened — not how it is done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import numpy as np

from appliance.call.events import ServerEvent
from appliance.common.timeline import CallTimeline
from appliance.contract.record import SessionRecord
from appliance.core.lesson import Lesson
from appliance.core.state import Cue, State
from appliance.core.transcript import Turn


class Activity(Enum):
    """What happens inside a connected lesson (shown on the connected LED)."""

    NONE = "none"
    SPEAKING = "speaking"
    LISTENING = "listening"


# -- what the learner sees and hears -------------------------------------------------------------


class Lights(Protocol):
    """The status LEDs: one pattern per state (and activity), the same again is a no-op."""

    def show(self, state: State, activity: Activity = Activity.NONE) -> None: ...


class Speaker(Protocol):
    """The speaker as the core uses it: cues, the call's audio, and a way to cut it off."""

    def cue(self, cue: Cue) -> None: ...

    def play(self, track: Any, on_audible: Callable[[bool, float], None],
             timeline: CallTimeline | None = None) -> None:
        """Drain a call's remote audio track to the speaker until it ends or :meth:`stop`; report each
        change of audibility with its instant (monotonic seconds); stamp first frame / first audible."""

    def stop(self) -> None:
        """The call is over: stop draining its track."""

    def clear(self) -> None:
        """Drop the tutor audio not yet played (barge-in)."""

    @property
    def backlog_s(self) -> float:
        """Audio queued in the speaker and not yet heard."""


class Microphone(Protocol):
    sample_rate: int

    def read(self, n: int) -> np.ndarray: ...


class Notifier(Protocol):
    """The service manager (systemd): status line, watchdog, stopping."""

    def status(self, text: str) -> None: ...
    def watchdog_interval_s(self) -> float | None: ...
    def watchdog(self) -> None: ...
    def stopping(self) -> None: ...


class KioskObserver(Protocol):
    """Hooks for the CLI, the demo, the scripted learner and tests; all called on the event loop."""

    def state_changed(self, state: State, detail: str) -> None: ...
    def turn(self, turn: Turn) -> None: ...
    def tutor_audible(self, audible: bool) -> None: ...
    def lesson_saved(self, record: dict[str, Any], synced: bool) -> None: ...


class Service(Protocol):
    """Slow work the kiosk starts once its message loop runs (sound devices, the call stack's import)."""

    async def start(self, post: Callable[[object], None]) -> None:
        """Start; report to the kiosk only through ``post`` (thread-safe)."""

    async def stop(self) -> None: ...


# -- what is kept ----------------------------------------------------------------------------------


class Keeper(Protocol):
    """Lessons on disk (checkpoints, finished records, ones the disk refused), retention and sync."""

    async def start(self, post: Callable[[object], None]) -> None:
        """At start-up: retention, lessons a power cut interrupted, the sync task; ``post`` reports to the
        kiosk (each lesson's first sync attempt)."""

    def checkpoint(self, lesson: Lesson) -> None:
        """Keep the lesson so far (queued to the disk; never waits on the loop)."""

    async def keep(self, record: SessionRecord) -> str | None:
        """Save a finished lesson durably and queue it for sync; the reason when the disk refused it
        (the record is then held in memory and retried: never lost)."""

    async def retry_held(self) -> bool:
        """Write the lessons held in memory again; True when none is left."""

    async def stop(self, budget_s: float) -> None:
        """At exit: last tries for held lessons within ``budget_s``, then the sync task ends."""

    async def sync_now(self, timeout_s: float) -> int:
        """Sync now and wait (bounded) for the attempt; how many lessons still wait (-1: store unreadable)."""

    def publish(self, status: dict[str, Any]) -> None:
        """The kiosk's latest status (its heartbeats to the companion carry it)."""

    def internals(self) -> dict[str, Any]:
        """Sizes of what it holds that could grow over months."""

    def summary(self) -> dict[str, Any]:
        """Outbox size, lessons held in memory, store problems (for `status`)."""


# -- how a call is opened ----------------------------------------------------------------------------


class Call(Protocol):
    call_id: str | None

    @property
    def connected(self) -> bool: ...

    def send(self, event: dict[str, Any]) -> bool: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class CallHandlers:
    """Where a call reports; each runs on the event loop and only posts a message to the kiosk."""

    on_event: Callable[[ServerEvent], None]
    on_remote_track: Callable[[Any], None]
    on_closed: Callable[[str], None]
    mic_frames: Callable[[int], np.ndarray]


@dataclass(frozen=True)
class OpenedCall:
    call: Call
    session: dict[str, Any] | None
    """The session config to send when the channel opens (GA ``session.update`` fields)."""


class OpenFailed(Exception):
    """A call could not be opened; ``retryable``: trying again later may work."""

    def __init__(self, code: str, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable


class CallOpener(Protocol):
    """Fetches the lesson's materials (plan, token) and opens a call; raises :class:`OpenFailed`."""

    async def open(self, lesson: Lesson, handlers: CallHandlers, *, resume: bool) -> OpenedCall: ...

    def lesson_over(self) -> None:
        """A lesson ended: get the next one's materials ready."""


@dataclass
class KioskParts:
    """Everything the kiosk acts through (built by appliance.daemon.assemble, or by a test)."""

    lights: Lights
    speaker: Speaker
    mic: Microphone
    keeper: Keeper
    opener: CallOpener
    notifier: Notifier
    observer: KioskObserver
    services: list[Service] = field(default_factory=list)
    """Slow start-up work (sound devices, the call stack's import), started after the loop, stopped last."""
