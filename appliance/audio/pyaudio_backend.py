"""Real microphone and speaker through PortAudio (PyAudio), chosen by device name.

PortAudio calls back on its own thread; that thread only moves samples in or out of a bounded,
lock-protected ring buffer. Devices are picked by a case-insensitive substring of their name
("USB", "seeed", "pulse"), never by index, because indexes change between boots. When the device
will not run at the wanted rate, it runs at its own default rate and the samples are resampled.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from appliance.audio.base import AudioDeviceError
from appliance.audio.devices import DeviceInfo, find_device, list_devices, pyaudio_instance
from appliance.audio.dsp import resample

log = logging.getLogger(__name__)

BUFFER_S = 2.0
FRAMES_PER_BUFFER_S = 0.02


class RingBuffer:
    """Bounded int16 FIFO shared by one PortAudio thread and the event loop."""

    def __init__(self, capacity: int) -> None:
        self._data = np.zeros(capacity, dtype=np.int16)
        self._start = 0
        self._size = 0
        self._lock = threading.Lock()
        self.overruns = 0
        self.underruns = 0

    def __len__(self) -> int:
        return self._size

    def push(self, samples: np.ndarray) -> None:
        """Append; when full, the oldest samples are dropped (counted as an overrun)."""
        with self._lock:
            cap = len(self._data)
            if len(samples) >= cap:
                samples = samples[-cap:]
            drop = max(0, self._size + len(samples) - cap)
            if drop:
                self.overruns += 1
                self._start = (self._start + drop) % cap
                self._size -= drop
            end = (self._start + self._size) % cap
            first = min(len(samples), cap - end)
            self._data[end:end + first] = samples[:first]
            self._data[: len(samples) - first] = samples[first:]
            self._size += len(samples)

    def pop(self, n: int) -> np.ndarray:
        """Take ``n`` samples; missing ones are silence (counted as an underrun)."""
        out = np.zeros(n, dtype=np.int16)
        with self._lock:
            take = min(n, self._size)
            cap = len(self._data)
            first = min(take, cap - self._start)
            out[:first] = self._data[self._start:self._start + first]
            out[first:take] = self._data[: take - first]
            self._start = (self._start + take) % cap
            self._size -= take
            if take < n:
                self.underruns += 1
        return out


class _PyAudioStream:
    """Shared opening logic: find the device, negotiate the rate, open a callback stream."""

    direction = "input"

    def __init__(self, device_name: str, sample_rate: int = 48000) -> None:
        self.device_name = device_name
        self.sample_rate = sample_rate
        self._pa: Any = None
        self._stream: Any = None
        self.device: DeviceInfo | None = None
        self.device_rate = sample_rate

    def _open(self, callback: Any) -> None:
        import pyaudio

        self._pa = pyaudio_instance()
        devices = list_devices(self._pa)
        self.device = find_device(devices, self.device_name, self.direction)
        is_input = self.direction == "input"
        last_error: Exception | None = None
        for rate in dict.fromkeys([self.sample_rate, int(self.device.default_rate), 48000, 44100, 16000]):
            try:
                self._stream = self._pa.open(
                    format=pyaudio.paInt16, channels=1, rate=rate, input=is_input, output=not is_input,
                    input_device_index=self.device.index if is_input else None,
                    output_device_index=None if is_input else self.device.index,
                    frames_per_buffer=int(rate * FRAMES_PER_BUFFER_S), stream_callback=callback)
                self.device_rate = rate
                break
            except (OSError, ValueError) as exc:
                last_error = exc
        else:
            self._pa.terminate()
            raise AudioDeviceError(f"cannot open {self.direction} device {self.device.name!r} at any usual rate "
                                   f"({last_error}); is it in use by another program?")
        if self.device_rate != self.sample_rate:
            log.info("%s device %r runs at %d Hz; resampling to %d Hz", self.direction, self.device.name,
                     self.device_rate, self.sample_rate)
        self._stream.start_stream()

    async def close(self) -> None:
        if self._stream is not None:
            try:
                self._stream.stop_stream()
                self._stream.close()
            except OSError as exc:
                log.warning("closing the %s device: %s", self.direction, exc)
            self._stream = None
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None


class PyAudioSource(_PyAudioStream):
    """The kiosk microphone."""

    direction = "input"

    def __init__(self, device_name: str = "default", sample_rate: int = 48000) -> None:
        super().__init__(device_name, sample_rate)
        self.buffer = RingBuffer(int(sample_rate * BUFFER_S))

    async def start(self) -> None:
        import pyaudio

        def callback(data: bytes, frames: int, info: Any, status: int) -> tuple[None, int]:
            samples = np.frombuffer(data, dtype="<i2")
            if self.device_rate != self.sample_rate:
                samples = resample(samples, self.device_rate, self.sample_rate)
            self.buffer.push(samples)
            return None, pyaudio.paContinue

        self._open(callback)

    def read(self, n: int) -> np.ndarray:
        return self.buffer.pop(n)


class PyAudioSink(_PyAudioStream):
    """The kiosk speaker."""

    direction = "output"

    def __init__(self, device_name: str = "default", sample_rate: int = 48000) -> None:
        super().__init__(device_name, sample_rate)
        self.buffer = RingBuffer(int(sample_rate * 30))  # earcons and a whole tutor answer fit

    async def start(self) -> None:
        import pyaudio

        def callback(data: bytes | None, frames: int, info: Any, status: int) -> tuple[bytes, int]:
            need = frames
            if self.device_rate != self.sample_rate:
                need = round(frames * self.sample_rate / self.device_rate)
            samples = self.buffer.pop(need) if len(self.buffer) else np.zeros(need, dtype=np.int16)
            if self.device_rate != self.sample_rate:
                samples = resample(samples, self.sample_rate, self.device_rate)
            out = np.zeros(frames, dtype=np.int16)
            out[: min(frames, len(samples))] = samples[:frames]
            return out.astype("<i2").tobytes(), pyaudio.paContinue

        self._open(callback)

    def write(self, samples: np.ndarray) -> None:
        self.buffer.push(samples.astype(np.int16, copy=False))
