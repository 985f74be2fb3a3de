"""A simple energy voice-activity detector over 20 ms frames (the simulator's "server VAD")."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.audio.dsp import rms_dbfs


@dataclass
class VadResult:
    started: bool = False
    stopped: bool = False


class EnergyVad:
    """Speech starts after ``min_speech_ms`` above the threshold, stops after ``silence_ms`` below."""

    def __init__(self, threshold_dbfs: float = -45.0, min_speech_ms: int = 100, silence_ms: int = 500) -> None:
        self.threshold_dbfs = threshold_dbfs
        self.min_speech_ms = min_speech_ms
        self.silence_ms = silence_ms
        self.in_speech = False
        self._loud_ms = 0.0
        self._quiet_ms = 0.0

    def feed(self, samples: np.ndarray, ms: float) -> VadResult:
        loud = rms_dbfs(samples) > self.threshold_dbfs
        result = VadResult()
        if not self.in_speech:
            self._loud_ms = self._loud_ms + ms if loud else 0.0
            if self._loud_ms >= self.min_speech_ms:
                self.in_speech, self._quiet_ms = True, 0.0
                result.started = True
        else:
            self._quiet_ms = 0.0 if loud else self._quiet_ms + ms
            if self._quiet_ms >= self.silence_ms:
                self.in_speech, self._loud_ms = False, 0.0
                result.stopped = True
        return result
