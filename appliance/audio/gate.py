"""Half-duplex microphone gate: the tutor must not hear itself through the kiosk's own speaker.

Without echo cancellation a speaker centimetres from the mic makes the tutor interrupt itself.
While the tutor is audible (plus a short tail for the room's echo) the microphone sends silence;
the source is still read so its buffer never piles up (stale audio would otherwise reach the
tutor after the gate opens). Full duplex passes everything through (for AEC hardware or
PulseAudio's echo-cancel module).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from appliance.audio.base import AudioSource

HALF_DUPLEX = "half_duplex"
FULL_DUPLEX = "full_duplex"


class HalfDuplexGate:
    """Wraps a source's ``read``; the kiosk says when the tutor is audible.

    The kiosk combines the speaker's measured audibility (SpeakerPump) with the server's
    ``output_audio_buffer.started/stopped`` hints and calls ``set_tutor_audible``; the tail
    starts when the tutor stops. Any mode other than ``half_duplex`` passes audio through.
    """

    def __init__(self, source: AudioSource, mode: str = HALF_DUPLEX, tail_ms: int = 300,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self._clock = clock
        self.mode = mode
        self.tail_s = tail_ms / 1000
        self._tutor_audible = False
        self._open_after = 0.0
        self.gated_samples = 0

    @property
    def sample_rate(self) -> int:
        return self.source.sample_rate

    @property
    def full_duplex(self) -> bool:
        return self.mode != HALF_DUPLEX

    def set_tutor_audible(self, audible: bool) -> None:
        """The tutor started (True) or stopped (False) being audible; False starts the tail."""
        if audible:
            self._tutor_audible = True
        elif self._tutor_audible:
            self._tutor_audible = False
            self._open_after = self._clock() + self.tail_s

    @property
    def gated(self) -> bool:
        """True while reads return silence."""
        if self.full_duplex:
            return False
        return self._tutor_audible or self._clock() < self._open_after

    def read(self, n: int) -> np.ndarray:
        """``n`` samples from the source, or silence while gated (the source is read anyway)."""
        samples = self.source.read(n)
        if self.gated:
            self.gated_samples += n
            return np.zeros(n, dtype=np.int16)
        return samples
