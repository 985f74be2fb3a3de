"""The clocks a test sets: a fake monotonic/wall/sync triple for a Clock, and libfaketime for a real
process's own clocks. Shared by tests/test_clock.py, test_redate.py and test_token_clock.py."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from appliance.common.clock import Clock
from appliance.core.lesson import Lesson
from tests.harness import KIOSK_ID

TRUE_NOW = 1_795_000_000.0  # 2026-11-18
DAY = 86400.0


@dataclass
class FakeTime:
    """The three readings a Clock takes, set by the test: a monotonic timeline, the system's wall
    clock (steppable independently, like NTP does) and the kernel's sync state."""

    mono: float = 1000.0
    wall: float = TRUE_NOW
    synced: bool | None = True

    def clock(self) -> Clock:
        return Clock(monotonic=lambda: self.mono, wall=lambda: self.wall, synced=lambda: self.synced)

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def parse(iso: str) -> float:
    """Seconds since the epoch of an ISO 8601 UTC stamp as records carry them ("...Z")."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def libfaketime() -> str:
    """The libfaketime library to preload into a real process (skips the test where it is missing)."""
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    if not found:
        pytest.skip("libfaketime is not installed (Debian package faketime; scripts/setup.sh installs it)")
    return found[0]


FAKETIME_KEEP_MONOTONIC = {"FAKETIME_DONT_FAKE_MONOTONIC": "1"}
"""libfaketime's documented switch that leaves CLOCK_MONOTONIC alone (as an NTP step does)."""


YEARS_5 = 5 * 365 * DAY


def stale_lesson(t: FakeTime) -> dict[str, Any]:
    """A lesson on a clock five years behind, not synchronized: 4 s to a turn, an error at 9 s, 30 s long."""
    lesson = Lesson(kiosk_id=KIOSK_ID, clock=t.clock())
    t.advance(4)
    lesson.transcript.add_typed("hello from the past")
    t.advance(5)
    lesson.add_error("late_audio", "a gap in the tutor's audio")
    t.advance(21)
    return lesson.to_record("button")
