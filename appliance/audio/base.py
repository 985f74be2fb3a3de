"""The two audio interfaces every backend implements: a microphone (source) and a speaker (sink).

Both are non-blocking: PortAudio and the WebRTC track run on their own clocks, so a read returns
silence when nothing was captured and a write only queues samples.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class AudioDeviceError(Exception):
    """A device is missing or cannot be opened; the message names it and lists what exists."""


class AudioSource(Protocol):
    """The microphone: int16 mono at ``sample_rate``."""

    sample_rate: int

    async def start(self) -> None: ...

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` samples; silence for what was not captured (never blocks)."""
        ...

    async def close(self) -> None: ...


class AudioSink(Protocol):
    """The speaker: int16 mono at ``sample_rate``."""

    sample_rate: int

    async def start(self) -> None: ...

    def write(self, samples: np.ndarray) -> None:
        """Queue samples for playback (never blocks)."""
        ...

    async def close(self) -> None: ...
