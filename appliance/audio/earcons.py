"""Short sound cues made with numpy at start-up (no audio files to ship or lose).

A kiosk has no screen: a learner must *hear* that it is ready, connected, finished, or that it
cannot reach the tutor. Each cue is a few soft sine notes with a fade so it never clicks.
"""

from __future__ import annotations

import numpy as np

from appliance.core.state import Cue

__all__ = ["MELODIES", "Cue", "Earcons", "render"]


# (frequency Hz, duration s) per note; 0 Hz is a pause.
MELODIES: dict[Cue, list[tuple[float, float]]] = {
    Cue.READY: [(660.0, 0.09), (880.0, 0.12)],
    Cue.CONNECTED: [(523.3, 0.08), (659.3, 0.08), (784.0, 0.16)],
    Cue.ENDED: [(784.0, 0.1), (523.3, 0.18)],
    Cue.ERROR: [(220.0, 0.15), (0.0, 0.07), (220.0, 0.15), (0.0, 0.07), (220.0, 0.3)],
}


def render(cue: Cue, sample_rate: int, level: float = 0.3) -> np.ndarray:
    """The cue as int16 mono samples at ``sample_rate`` (peak ``level`` of full scale)."""
    notes = []
    for freq, seconds in MELODIES[cue]:
        n = int(sample_rate * seconds)
        if freq <= 0:
            notes.append(np.zeros(n))
            continue
        t = np.arange(n) / sample_rate
        # A little second harmonic makes the tone audible on small kiosk speakers.
        tone = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(4 * np.pi * freq * t)
        fade = min(n // 2, int(sample_rate * 0.01))
        envelope = np.ones(n)
        envelope[:fade] = np.linspace(0, 1, fade)
        envelope[n - fade:] = np.linspace(1, 0, fade)
        notes.append(tone * envelope / 1.3)
    samples = np.concatenate(notes) * level * 32767
    return samples.astype(np.int16)


class Earcons:
    """All cues pre-rendered once for the speaker's rate."""

    def __init__(self, sample_rate: int, level: float = 0.3) -> None:
        self.sample_rate = sample_rate
        self._cues = {cue: render(cue, sample_rate, level) for cue in Cue}

    def __getitem__(self, cue: Cue) -> np.ndarray:
        return self._cues[cue]
