"""Small numpy signal helpers for the audio paths (no allocations beyond what numpy needs).

Everything here works on int16 PCM, the format aiortc decodes to and PortAudio plays.
"""

from __future__ import annotations

import numpy as np

INT16_MAX = 32767


def to_mono(samples: np.ndarray, channels: int) -> np.ndarray:
    """Downmix interleaved int16 PCM with ``channels`` channels to mono int16."""
    if channels == 1:
        return samples.astype(np.int16, copy=False)
    frames = samples.reshape(-1, channels).astype(np.int32)
    return (frames.sum(axis=1) // channels).astype(np.int16)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample mono int16 PCM by linear interpolation.

    Why linear: speech between 16/24/44.1/48 kHz on a kiosk speaker; the Opus codec in the path
    already band-limits the signal, so a polyphase filter buys nothing audible here.
    """
    if from_rate == to_rate or samples.size == 0:
        return samples.astype(np.int16, copy=False)
    n_out = round(samples.size * to_rate / from_rate)
    positions = np.arange(n_out, dtype=np.float64) * (from_rate / to_rate)
    out = np.interp(positions, np.arange(samples.size, dtype=np.float64), samples.astype(np.float64))
    return np.clip(np.round(out), -32768, INT16_MAX).astype(np.int16)


def rms_dbfs(samples: np.ndarray) -> float:
    """Level of int16 PCM in dB relative to full scale (-120.0 for digital silence)."""
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))
    if rms < 1e-9:
        return -120.0
    return max(-120.0, 20.0 * np.log10(rms / INT16_MAX))


def apply_volume(samples: np.ndarray, volume_percent: int) -> np.ndarray:
    """Scale int16 PCM by a 0–100 volume (perceptual: squared curve), clipping safely."""
    if volume_percent >= 100:
        return samples
    gain = (max(0, volume_percent) / 100.0) ** 2
    return np.clip(samples.astype(np.float32) * gain, -32768, INT16_MAX).astype(np.int16)


class StreamResampler:
    """Linear resampling of a stream cut into chunks, continuous across chunk boundaries.

    Why not ``resample`` per chunk: each chunk would be interpolated on its own, so the gap
    between two chunks is never interpolated and odd chunk sizes drift in phase; on a live
    device stream that is an audible buzz at the chunk rate. This keeps the last input sample
    and the fractional read position between calls.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._step = from_rate / to_rate
        self._pos = 0.0  # next output position, in input samples relative to ``_tail``'s start
        self._tail = np.zeros(0, dtype=np.int16)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next chunk of mono int16 samples (may return one sample more or less)."""
        if self.from_rate == self.to_rate:
            return samples.astype(np.int16, copy=False)
        if samples.size == 0:
            return np.zeros(0, dtype=np.int16)
        buf = np.concatenate([self._tail, samples.astype(np.int16, copy=False)])
        last = buf.size - 1  # interpolation needs a right neighbour: positions stay below ``last``
        count = max(0, int(np.ceil((last - self._pos) / self._step)))
        positions = self._pos + np.arange(count, dtype=np.float64) * self._step
        out = np.interp(positions, np.arange(buf.size, dtype=np.float64), buf.astype(np.float64))
        self._pos = self._pos + count * self._step - last
        self._tail = buf[-1:]
        return np.clip(np.round(out), -32768, INT16_MAX).astype(np.int16)
