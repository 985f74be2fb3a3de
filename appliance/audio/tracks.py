"""aiortc media tracks that pace themselves in wall-clock time.

aiortc pulls frames from a track as fast as ``recv()`` returns them, so an outgoing track must
sleep until each 20 ms frame is due (monotonic ``pts``, ``time_base = 1/rate``); when the source
has nothing it sends silence so the far end keeps a steady stream.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from appliance.audio.dsp import to_mono

FRAME_MS = 20

#: A frame supplier: called with a sample count, returns that many int16 mono samples.
FrameSupplier = Callable[[int], np.ndarray]


class PacedAudioTrack(MediaStreamTrack):
    """Outgoing mono int16 audio, one 20 ms frame per 20 ms of wall-clock time."""

    kind = "audio"

    def __init__(self, supplier: FrameSupplier, sample_rate: int = 48000) -> None:
        super().__init__()
        self._supplier = supplier
        self.sample_rate = sample_rate
        self.samples_per_frame = sample_rate * FRAME_MS // 1000
        self._time_base = fractions.Fraction(1, sample_rate)
        self._start: float | None = None
        self._pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            due = self._start + self._pts / self.sample_rate
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 0.5:
                # The loop was blocked for a long time: restart the clock rather than burst.
                self._start = now - self._pts / self.sample_rate
        samples = self._supplier(self.samples_per_frame)
        if samples.size != self.samples_per_frame:
            padded = np.zeros(self.samples_per_frame, dtype=np.int16)
            padded[: min(samples.size, self.samples_per_frame)] = samples[: self.samples_per_frame]
            samples = padded
        frame = av.AudioFrame.from_ndarray(
            samples.astype(np.int16, copy=False).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += self.samples_per_frame
        return frame


def frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """Decode a received aiortc frame (s16, usually stereo 48 kHz interleaved) to mono int16."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    data = data.reshape(channels, -1).T.reshape(-1) if frame.format.is_planar else data.reshape(-1)
    if data.dtype != np.int16:
        data = np.clip(data * 32767.0, -32768, 32767).astype(np.int16)
    return to_mono(data, channels)
