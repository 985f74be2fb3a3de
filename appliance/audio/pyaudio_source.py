"""The kiosk microphone through PortAudio: capture on PortAudio's thread, read on the loop.

Why its own module: what the microphone adds to the shared stream is its own policy: a small
capture ring, resampling on the event loop's side (state kept across chunks), and shedding a
backlog so the tutor hears the learner now rather than seconds late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from appliance.audio.devices import pyaudio_instance
from appliance.audio.dsp import StreamResampler, to_mono
from appliance.audio.health import MICROPHONE
from appliance.audio.portaudio_stream import PortAudioStream
from appliance.audio.ring import RingBuffer

MIC_BUFFER_S = 2.0
"""Microphone ring size; bounds memory if nobody reads (e.g. between lessons)."""
MIC_MAX_LATENCY_S = 0.2
"""Backlog beyond this sheds quiet blocks at read time: the tutor hears the learner now."""
MIC_HARD_LATENCY_S = 1.5
"""Backlog beyond this is dropped, oldest first, speech or not."""
QUIET_DBFS = -50.0
PAUSE_S = 0.3
PAUSE_KEEP_S = 0.1
"""Backlog shedding: only quiet (< QUIET_DBFS) runs of PAUSE_S or more are pauses worth shortening."""


class PyAudioSource(PortAudioStream):
    """The kiosk microphone: ``read`` returns what was captured, with a small bounded backlog."""

    direction = "input"
    kind = MICROPHONE

    def __init__(self, device_name: str = "default", sample_rate: int = 48000,
                 pa_factory: Callable[[], Any] = pyaudio_instance,
                 max_latency_s: float = MIC_MAX_LATENCY_S, **supervision: float) -> None:
        super().__init__(device_name, sample_rate, pa_factory, **supervision)
        self.max_latency_s = max_latency_s
        self.buffer = RingBuffer(int(sample_rate * MIC_BUFFER_S))
        self._resampler = StreamResampler(sample_rate, sample_rate)
        self._ready = np.zeros(0, dtype=np.int16)
        self.underruns = 0
        self.latency_trims = 0
        self.shed_blocks = 0

    @property
    def overruns(self) -> int:
        return self.buffer.overruns + self.buffer.device_overflows

    def _prepare(self) -> None:
        with self._io_lock:
            if self.buffer.rate != self.device_rate:  # a reopen at the same rate keeps the loop's objects
                self.buffer = RingBuffer(int(self.device_rate * MIC_BUFFER_S), self.device_rate)
                self._resampler = StreamResampler(self.device_rate, self.sample_rate)

    def _forget_audio(self) -> None:
        with self._io_lock:
            self.buffer.clear()
            self._ready = np.zeros(0, dtype=np.int16)
            self._resampler = StreamResampler(self.device_rate, self.sample_rate)

    async def start(self) -> None:
        """Open the device and watch it; AudioDeviceError names it and lists the input devices that exist."""
        await asyncio.to_thread(self._open)
        self._start_supervisor()

    def _make_callback(self) -> Callable[[bytes | None, int, Any, int], tuple[None, int]]:
        import pyaudio

        ring, channels = self.buffer, self.channels

        seen = self._callback_seen

        def callback(data: bytes | None, frames: int, info: Any, status: int) -> tuple[None, int]:
            seen()
            ring.note_status(status)
            if data:
                samples = np.frombuffer(data, dtype="<i2")
                ring.push(to_mono(samples, channels) if channels > 1 else samples)
            return None, pyaudio.paContinue

        return callback

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` int16 mono samples; silence when not enough was captured (never blocks).

        An underrun returns a whole frame of silence and keeps the partial capture for the next
        read: the backlog then absorbs the jitter between PortAudio's and the track's clocks
        instead of cutting a gap into every other frame of speech.
        """
        if self._stream is None:  # closed, or failed and not back yet
            return np.zeros(n, dtype=np.int16)
        with self._io_lock:
            captured = self.buffer.pop_all()
            if captured.size:
                self._ready = np.concatenate([self._ready, self._resampler.process(captured)])
            self._shed_latency(n)
            if self._ready.size < n:
                self.underruns += 1
                return np.zeros(n, dtype=np.int16)
            out = self._ready[:n].copy()
            self._ready = self._ready[n:]
            return out

    def _shed_latency(self, n: int) -> None:
        """Keep the learner's words timely after reads fell behind (a loop stall, clock drift).

        Beyond ``max_latency_s`` the middle of pauses (quiet runs of at least ``PAUSE_S``, minus
        ``PAUSE_KEEP_S`` at each end) is dropped, oldest first: speech caught during a stall
        still reaches the tutor whole, just sooner, and short silences inside words (a "t"
        closure) are never touched. Beyond ``MIC_HARD_LATENCY_S`` the oldest audio goes,
        whatever it holds.
        """
        rate = self.sample_rate
        hard = self._ready.size - n - int(MIC_HARD_LATENCY_S * rate)
        if hard > 0:
            self._ready = self._ready[hard:]
            self.latency_trims += 1
        excess = self._ready.size - n - int(self.max_latency_s * rate)
        block = max(1, rate // 50)
        blocks = self._ready.size // block
        if excess < block or blocks == 0:
            return
        frames = self._ready[: blocks * block].reshape(blocks, block).astype(np.float64)
        quiet = 20 * np.log10(np.sqrt(np.mean(frames * frames, axis=1)) / 32767 + 1e-9) < QUIET_DBFS
        drop = _pause_middles(quiet, round(PAUSE_S * 50), round(PAUSE_KEEP_S * 50))[: excess // block]
        if drop.size:
            keep = np.ones(self._ready.size, dtype=bool)
            keep[(drop[:, None] * block + np.arange(block)).reshape(-1)] = False
            self._ready = self._ready[keep]
            self.shed_blocks += int(drop.size)


def _pause_middles(quiet: np.ndarray, min_run: int, keep: int) -> np.ndarray:
    """Indexes of quiet blocks inside runs of at least ``min_run``, minus ``keep`` at each end."""
    padded = np.concatenate([[False], quiet, [False]]).astype(np.int8)
    edges = np.diff(padded)
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    picks = [np.arange(s + keep, e - keep) for s, e in zip(starts, ends, strict=True) if e - s >= min_run]
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
