"""The lock-protected ring buffer between a PortAudio callback thread and the event loop.

Why a ring of its own: PortAudio calls back on its own thread, which must never wait for the loop;
the two sides meet only here, under a short lock, and memory stays bounded whoever stops reading.

Callback streams never raise on overflow (``exception_on_overflow`` only concerns blocking
reads): an overflow reported by PortAudio, or a full ring buffer, is counted and the oldest audio
is dropped; an underrun plays or returns silence and is counted.
"""

from __future__ import annotations

import threading

import numpy as np

# PortAudio callback status flags (portaudio.h); kept here so the module imports without PyAudio.
PA_INPUT_OVERFLOW = 0x2
PA_OUTPUT_UNDERFLOW = 0x4


class RingBuffer:
    """Bounded int16 FIFO shared by one PortAudio thread and the event loop."""

    def __init__(self, capacity: int, rate: int = 0) -> None:
        self._data = np.zeros(max(1, capacity), dtype=np.int16)
        self.rate = rate  # the sample rate it holds (0: not tied to a device yet)
        self._start = 0
        self._size = 0
        self._lock = threading.Lock()
        self.overruns = 0
        self.underruns = 0
        self.device_overflows = 0
        self.device_underflows = 0

    def __len__(self) -> int:
        return self._size

    @property
    def capacity(self) -> int:
        return len(self._data)

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

    def pop(self, n: int, count_underrun: bool = True) -> np.ndarray:
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
            if take < n and count_underrun:
                self.underruns += 1
        return out

    def pop_all(self) -> np.ndarray:
        """Everything buffered (possibly nothing)."""
        with self._lock:
            n = self._size
        return self.pop(n, count_underrun=False)

    def clear(self) -> None:
        with self._lock:
            self._start = self._size = 0

    def note_status(self, flags: int) -> None:
        """Count PortAudio's own overflow/underflow reports (called on the PortAudio thread)."""
        if flags:
            with self._lock:
                self.device_overflows += bool(flags & PA_INPUT_OVERFLOW)
                self.device_underflows += bool(flags & PA_OUTPUT_UNDERFLOW)
