"""The two audio interfaces every backend implements: a microphone (source) and a speaker (sink).

Both are non-blocking: PortAudio and the WebRTC track run on their own clocks, so a read returns
silence when nothing was captured and a write only queues samples.

Both report their health: a device that disappears mid-lesson (a USB card pulled, a sound server
restarted) is reported through the health callback, and reported again once it is usable again;
meanwhile a read returns silence and a write is dropped, so nothing blocks or raises into the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np


class AudioDeviceError(Exception):
    """A device is missing or cannot be opened; the message names it and lists what exists."""


class HealthReporting(Protocol):
    """What every sound device tells about itself: whether it works now, and who hears when that changes."""

    @property
    def healthy(self) -> bool:
        """False from a reported failure until the device is usable again."""
        ...

    @property
    def problem(self) -> str | None:
        """One line saying why the device is not usable (None while it is)."""
        ...

    def set_health_callback(self, callback: Callable[[str, bool, str], None]) -> None:
        """``callback(kind, ok, detail)`` on each change, from ANY thread (hand it to the loop).

        kind is "microphone" or "speaker"; ok False when the device failed, True when it is
        usable again; detail is a one-line readable reason.
        """
        ...


class AudioSource(HealthReporting, Protocol):
    """The microphone: int16 mono at ``sample_rate``."""

    sample_rate: int

    async def start(self) -> None: ...

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` samples; silence for what was not captured (never blocks)."""
        ...

    async def close(self) -> None: ...



class AudioSink(HealthReporting, Protocol):
    """The speaker: int16 mono at ``sample_rate``."""

    sample_rate: int

    async def start(self) -> None: ...

    def write(self, samples: np.ndarray) -> None:
        """Queue samples for playback (never blocks)."""
        ...

    async def close(self) -> None: ...

