"""The level of a stretch of audio, in dB relative to full scale.

Shared by the audio paths (is the tutor audible?), the kiosk core (did the learner speak while holding
the button?) and the simulator (voice activity): one definition, numpy only.
"""

from __future__ import annotations

import numpy as np

INT16_MAX = 32767.0


def rms_dbfs(samples: np.ndarray) -> float:
    """Level of int16 PCM in dB relative to full scale (-120.0 for digital silence)."""
    if samples.size == 0:
        return -120.0
    x = samples.astype(np.float32)
    rms = float(np.sqrt(np.dot(x, x) / x.size))  # float32 is plenty for a level in dB, and 4x faster
    if rms < 1e-9:
        return -120.0
    return max(-120.0, 20.0 * np.log10(rms / INT16_MAX))
