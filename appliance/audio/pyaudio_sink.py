"""The kiosk speaker through PortAudio: queue on the loop, play on PortAudio's thread.

Why its own module: what the speaker adds to the shared stream is its own policy: a ring large
enough for cues written at once, silence (not an underrun) between answers, resampling to the
device's rate, and draining what is queued before it closes (a goodbye cue is heard whole).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from appliance.audio.devices import pyaudio_instance
from appliance.audio.dsp import StreamResampler
from appliance.audio.health import SPEAKER
from appliance.audio.portaudio_stream import FRAMES_PER_BUFFER_S, PortAudioStream
from appliance.audio.ring import RingBuffer

SPEAKER_BUFFER_S = 30.0
"""Speaker ring size: cues and any burst written at once fit; live audio arrives in real time."""
DRAIN_TIMEOUT_S = 5.0


class PyAudioSink(PortAudioStream):
    """The kiosk speaker: ``write`` queues; the PortAudio thread plays, silence when nothing is queued."""

    direction = "output"
    kind = SPEAKER

    def __init__(self, device_name: str = "default", sample_rate: int = 48000,
                 pa_factory: Callable[[], Any] = pyaudio_instance, **supervision: float) -> None:
        super().__init__(device_name, sample_rate, pa_factory, **supervision)
        self.buffer = RingBuffer(int(sample_rate * SPEAKER_BUFFER_S))
        self._resampler = StreamResampler(sample_rate, sample_rate)

    @property
    def underruns(self) -> int:
        return self.buffer.underruns + self.buffer.device_underflows

    @property
    def overruns(self) -> int:
        return self.buffer.overruns

    @property
    def buffered_s(self) -> float:
        """Seconds queued but not yet heard (ring buffer plus the device's own latency)."""
        if self._stream is None:
            return 0.0
        return len(self.buffer) / self.device_rate + self.latency_s

    def _prepare(self) -> None:
        with self._io_lock:
            if self.buffer.rate != self.device_rate:  # a reopen at the same rate keeps what is queued
                self.buffer = RingBuffer(int(self.device_rate * SPEAKER_BUFFER_S), self.device_rate)
                self._resampler = StreamResampler(self.sample_rate, self.device_rate)

    def _forget_audio(self) -> None:
        """What was queued when the speaker failed is stale by the time it is back."""
        with self._io_lock:
            self.buffer.clear()
            self._resampler = StreamResampler(self.sample_rate, self.device_rate)

    async def start(self) -> None:
        """Open the device and watch it; AudioDeviceError names it and lists the output devices that exist."""
        await asyncio.to_thread(self._open)
        self._start_supervisor()

    def _make_callback(self) -> Callable[[bytes | None, int, Any, int], tuple[bytes, int]]:
        import pyaudio

        ring, channels = self.buffer, self.channels

        seen = self._callback_seen

        def callback(data: bytes | None, frames: int, info: Any, status: int) -> tuple[bytes, int]:
            seen()
            ring.note_status(status)
            # An empty ring is a pause between answers, not an underrun.
            samples = ring.pop(frames) if len(ring) else np.zeros(frames, dtype=np.int16)
            if channels > 1:
                samples = np.repeat(samples, channels)
            return samples.astype("<i2", copy=False).tobytes(), pyaudio.paContinue

        return callback

    def write(self, samples: np.ndarray) -> None:
        """Queue int16 mono samples at ``sample_rate`` (dropped when the device is not open)."""
        if self._stream is None:  # closed, or failed and not back yet: dropped
            return
        with self._io_lock:
            self.buffer.push(self._resampler.process(samples.astype(np.int16, copy=False)))

    def clear(self) -> None:
        """Forget what is queued (the tutor was interrupted)."""
        self.buffer.clear()

    async def drain(self, timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
        """Until everything queued has been handed to the device; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while self._stream is not None and len(self.buffer):
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(FRAMES_PER_BUFFER_S)  # polling a ring fed by another thread
        return True

    async def close(self) -> None:
        """Play what is queued (a goodbye cue), then stop the device."""
        if self._stream is not None:
            await self.drain()
            await asyncio.sleep(self.latency_s)  # the device's own buffer
        await super().close()
