"""Time the kiosk can trust: monotonic time for every duration, wall time only for stamps.

Why: most Raspberry Pi boards have no battery-backed clock. They boot with the time saved at the
last shutdown (fake-hwclock) or an old build date, and minutes later network time
(systemd-timesyncd, chrony) steps the clock forward by hours or days. A duration measured as the
difference of two ``time.time()`` values then counts that step as lesson time, and a stamp read
before the step carries a stale date.

So every instant the kiosk keeps is a monotonic reading (``CLOCK_MONOTONIC`` never steps). It becomes
a wall time only when a record is written, through an :class:`Anchor`: one wall reading paired with
the monotonic instant it was read at, ``wall = anchor.wall + (instant - anchor.mono)``. The clock
keeps the most trustworthy anchor it has seen: a new anchor is taken when the clock becomes
synchronized or the system clock is stepped, so instants recorded before network time arrived are
placed correctly once it has. If synchronization is later lost (no NTP answer for about nine hours
makes the kernel drop it), the last synchronized anchor is kept and extrapolated.

How synchronization is detected, without needing systemd as PID 1:

* ``adjtimex(2)`` read-only (``modes = 0``, allowed for any user), through libc with ctypes. The
  kernel's ``maxerror`` is what NTP daemons keep small: systemd-timesyncd, chrony and ntpd all reset
  it when they discipline the clock, and the kernel grows it by 500 ppm until it reaches 16 s
  (``NTP_PHASE_LIMIT``) and marks the clock unsynchronized. ``maxerror < 16 s`` is the test
  ``timedatectl`` itself uses (systemd's ``ntp_synced()``); it ignores ``STA_UNSYNC`` on purpose
  because timesyncd keeps that bit set when the RTC runs in local time. This works on Debian and
  Raspberry Pi OS (32- and 64-bit: the structure is declared with C ``long`` fields) whichever NTP
  client is installed, and in containers (it reads the host kernel's state, which is the clock in use).
* Fallback when the call is unavailable: ``/run/systemd/timesync/synchronized``, which
  systemd-timesyncd creates at its first synchronization (``/run`` is emptied at boot).
* When neither can tell (another OS), the system clock is trusted, as before this module existed.

The sync source, monotonic and wall readers are injectable, so tests model steps and late sync.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ctypes import _CArgObject  # what ctypes.byref returns (a name only the type stubs have)

TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
NTP_PHASE_LIMIT_US = 16_000_000
"""The kernel's limit on ``maxerror`` (µs): at or above it the clock counts as unsynchronized."""
STEP_TOLERANCE_S = 0.1
"""A change of ``wall - monotonic`` larger than this is a step of the system clock: take a new anchor.
Below it the old anchor is kept, so stamps of one record do not jitter by the microseconds between
two readings."""

SyncSource = Callable[[], bool | None]
"""Says whether the system clock is synchronized; ``None`` when it cannot tell."""


class _Timex(ctypes.Structure):
    """``struct timex`` as declared in <sys/timex.h> for the legacy ``adjtimex`` symbol."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long), ("time_usec", ctypes.c_long), ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long), ("jitter", ctypes.c_long), ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long), ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long), ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
        ("_slack", ctypes.c_char * 64),  # room for anything a libc adds; the kernel never writes past it
    ]


@functools.cache
def _adjtimex() -> Callable[[_CArgObject], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        return libc.adjtimex
    except (OSError, AttributeError):
        return None


def kernel_synchronized() -> bool | None:
    """The kernel's view (``adjtimex``, read-only); ``None`` when the call is not available."""
    call = _adjtimex()
    if call is None:
        return None
    timex = _Timex()
    if call(ctypes.byref(timex)) < 0:
        return None
    return 0 <= timex.maxerror < NTP_PHASE_LIMIT_US


def timesync_flag(path: Path = TIMESYNC_FLAG) -> bool | None:
    """systemd-timesyncd's flag file: ``True`` once it synchronized since boot, else ``None``.

    A missing file does not prove the clock is unsynchronized (chrony or ntpd never create it)."""
    try:
        return True if path.exists() else None
    except OSError:
        return None


def system_synchronized() -> bool | None:
    """The default sync source: the kernel when it can answer, else timesyncd's flag."""
    state = kernel_synchronized()
    return state if state is not None else timesync_flag()


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@functools.cache
def boot_id() -> str | None:
    """This boot's id: monotonic instants mean something only within the boot that read them."""
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def parse_iso(text: str) -> float:
    """Epoch seconds of an ISO 8601 time as :func:`iso_utc` writes it; ValueError if it is not one."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso_utc(epoch_s: float) -> str:
    """ISO 8601 UTC with milliseconds, the format of session records."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Anchor:
    """A wall reading and the monotonic instant it was taken at: converts instants to wall times.

    One record is built with one anchor, so its stamps are consistent with each other and with its
    monotonic duration whatever the system clock does meanwhile."""

    wall: float
    mono: float
    synced: bool
    """The wall reading came from a synchronized clock (or one that cannot say: trusted)."""

    def wall_at(self, mono: float) -> float:
        return self.wall + (mono - self.mono)

    def mono_at(self, wall: float) -> float:
        return self.mono + (wall - self.wall)


class Clock:
    """Monotonic time for durations and timeouts, trustworthy wall time for stamps.

    Not thread-safe by design: the kiosk's event loop owns it (reads from other threads only see a
    complete anchor, since replacing it is one assignment)."""

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
                 synced: SyncSource = system_synchronized) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self._synced = synced
        self._anchor: Anchor | None = None

    def monotonic(self) -> float:
        """Seconds on a timeline that never steps: use for every duration, timeout and instant kept."""
        return self._monotonic()

    def synchronized(self) -> bool:
        """Is the system clock synchronized to network time now? (``True`` when the system cannot tell.)"""
        return self._synced() is not False

    def anchor(self) -> Anchor:
        """The most trustworthy anchor: refreshed on a step of the clock or a change of trust.

        A synchronized anchor is never replaced by an unsynchronized one: after losing network time the
        kiosk extrapolates from its last good reading rather than follow an unchecked clock."""
        state = self._synced()
        synced = state is not False
        mono = self._monotonic()
        wall = self._wall()
        old = self._anchor
        if old is None or self._better(old, synced, wall, mono):
            old = self._anchor = Anchor(wall, mono, synced)
        return old

    @staticmethod
    def _better(old: Anchor, synced: bool, wall: float, mono: float) -> bool:
        """A new reading replaces the anchor when it gained trust, or kept it and shows a step."""
        if synced != old.synced:
            return synced
        return abs(old.wall_at(mono) - wall) > STEP_TOLERANCE_S

    def wall(self) -> float:
        """Wall time now (epoch seconds), from the best anchor."""
        anchor = self.anchor()
        return anchor.wall_at(self._monotonic())

    def wall_at(self, mono: float) -> float:
        """The wall time of an earlier (or later) monotonic instant, from the best anchor."""
        return self.anchor().wall_at(mono)

    def status_line(self) -> str | None:
        """One line for ``stella-kiosk status`` and the logs when times may be wrong; ``None`` when fine."""
        anchor = self.anchor()
        if self._synced() is not False:
            return None
        if anchor.synced:
            return (f"not synchronized since {iso_utc(anchor.wall)} (network time unreachable); "
                    "lesson times are extrapolated from then")
        return ("not synchronized: the date may be stale until network time is reached (check the network "
                "and `timedatectl timesync-status`); lesson times are corrected once it is")


class EpochTimeline(Clock):
    """A clock whose one reader already gives epoch seconds: instants are wall times as they are.

    Keeps ``Transcript(clock=callable)`` working for callers that hand in a plain time function."""

    def __init__(self, now: Callable[[], float]) -> None:
        super().__init__(monotonic=now, wall=now, synced=lambda: True)

    def anchor(self) -> Anchor:
        return Anchor(0.0, 0.0, True)


@functools.cache
def system_clock() -> Clock:
    """The process's clock: shared, so the synchronized anchor outlives any one lesson."""
    return Clock()
