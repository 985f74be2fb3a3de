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
from typing import cast

import av
import numpy as np
import numpy.typing as npt
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


class FrameConverter:
    """Received frames (any format, layout, rate) to mono int16 at one rate, as one continuous stream.

    Why one object per stream: downmix and resampling happen in one libswresample call whose
    filter state carries over from frame to frame, so 20 ms frame boundaries are inaudible (a
    stateless per-frame resample clicks at every boundary: a 50 Hz buzz). A change of the
    incoming format starts a new filter (a rare glitch is better than a crash).
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: av.AudioResampler | None = None
        self._input: tuple[str, str, int] | None = None

    def convert(self, frame: av.AudioFrame) -> np.ndarray:
        """The frame's samples as mono int16 at ``rate`` (a few samples fewer at first: filter delay)."""
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key[0] == "s16" and key[2] == self.rate and key[1] in ("mono", "stereo"):
            # Same rate: nothing to filter, so no filter state to keep; a downmix in numpy costs a
            # third of a pass through swresample (aiortc hands over 48 kHz stereo, the usual sink rate).
            self._resampler, self._input = None, key
            data = cast("npt.NDArray[np.int16]", frame.to_ndarray().reshape(-1))  # s16: int16 samples
            if key[1] == "mono":
                return data
            return ((data[0::2].astype(np.int32) + data[1::2]) >> 1).astype(np.int16)
        fresh = self._resampler is None or key != self._input
        if fresh:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
            self._input = key
        assert self._resampler is not None
        frame.pts = None  # the filter keeps its own time; a jump in the sender's pts must not reset it
        out = self._resampler.resample(frame)
        if len(out) == 1:
            samples = out[0].to_ndarray().reshape(-1)
        else:
            samples = np.concatenate([f.to_ndarray().reshape(-1) for f in out]) if out else np.zeros(0, np.int16)
        if fresh:  # leading silence for the filter's delay: every frame in gives exactly one frame out
            short = int(frame.samples * self.rate / key[2]) - samples.size
            if short > 0:
                samples = np.concatenate([np.zeros(short, dtype=np.int16), samples])
        return samples
