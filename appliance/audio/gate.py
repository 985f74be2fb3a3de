"""Half-duplex microphone gate: the tutor must not hear itself through the kiosk's own speaker.

Without echo cancellation a speaker centimetres from the mic makes the tutor interrupt itself.
While the tutor is audible (plus a short tail for the room's echo) the microphone sends silence;
the source is still read so its buffer never piles up. Full duplex passes everything through
(for AEC hardware or PulseAudio's echo-cancel module).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from appliance.audio.base import AudioSource


class HalfDuplexGate:
    def __init__(self, source: AudioSource, mode: str = "half_duplex", tail_ms: int = 300,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self._clock = clock
        self.mode = mode
        self.tail_s = tail_ms / 1000
        self._tutor_audible = False
        self._open_after = 0.0

    @property
    def sample_rate(self) -> int:
        return self.source.sample_rate

    def set_tutor_audible(self, audible: bool) -> None:
        if audible:
            self._tutor_audible = True
        elif self._tutor_audible:
            self._tutor_audible = False
            self._open_after = self._clock() + self.tail_s

    @property
    def gated(self) -> bool:
        if self.mode != "half_duplex":
            return False
        return self._tutor_audible or self._clock() < self._open_after

    def read(self, n: int) -> np.ndarray:
        samples = self.source.read(n)
        if self.gated:
            return np.zeros(n, dtype=np.int16)
        return samples
