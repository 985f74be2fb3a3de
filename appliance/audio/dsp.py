"""Small numpy signal helpers for the audio paths (no allocations beyond what numpy needs).

Everything here works on int16 PCM, the format aiortc decodes to and PortAudio plays.
"""

from __future__ import annotations

import numpy as np

from appliance.common.level import rms_dbfs as rms_dbfs  # measured here by the audio paths too

INT16_MAX = 32767


def to_mono(samples: np.ndarray, channels: int) -> np.ndarray:
    """Downmix interleaved int16 PCM with ``channels`` channels to mono int16."""
    if channels == 1:
        return samples.astype(np.int16, copy=False)
    frames = samples.reshape(-1, channels).astype(np.int32)
    return (frames.sum(axis=1) // channels).astype(np.int16)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample one whole clip of mono int16 PCM by linear interpolation.

    Only for whole clips (a WAV cue, a test fixture, the simulator's speech analysis): never for a
    stream cut into chunks, where each chunk would be interpolated on its own and the boundaries
    click (use :class:`StreamResampler`). Linear leaves images at about -55 dB: fine for analysis,
    not for what the learner hears live.
    """
    if from_rate == to_rate or samples.size == 0:
        return samples.astype(np.int16, copy=False)
    n_out = round(samples.size * to_rate / from_rate)
    positions = np.arange(n_out, dtype=np.float64) * (from_rate / to_rate)
    out = np.interp(positions, np.arange(samples.size, dtype=np.float64), samples.astype(np.float64))
    return np.clip(np.round(out), -32768, INT16_MAX).astype(np.int16)


def apply_volume(samples: np.ndarray, volume_percent: int) -> np.ndarray:
    """Scale int16 PCM by a 0–100 volume (perceptual: squared curve).

    The gain is at most 1, so the result always fits int16: no clipping pass (this runs on every
    20 ms frame of the tutor's voice).
    """
    if volume_percent >= 100:
        return samples
    gain = np.float32((max(0, volume_percent) / 100.0) ** 2)
    return (samples * gain).astype(np.int16)


class StreamResampler:
    """One resampler for one stream of mono int16 chunks: a continuous windowed-sinc filter (swresample).

    Why not ``resample`` per chunk: each chunk would be interpolated on its own, so the gap
    between two chunks is never interpolated and odd chunk sizes drift in phase; on a live
    device stream that is an audible buzz at the chunk rate. Why not linear interpolation kept
    across chunks either: it leaves images of every tone at -55 to -65 dB that fold back into the
    audible band. libswresample (in PyAV, which aiortc already needs) keeps its filter state
    between calls, so chunk boundaries do not exist for it; it holds back a few samples (under
    1 ms) as filter delay.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._resampler = None
        if from_rate != to_rate:
            import av  # lazily: the daemon's start-up does not pay for it until audio flows

            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=to_rate)
        self._primed = False

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Resample the next chunk of mono int16 samples (the output length varies by a few samples)."""
        if self._resampler is None:
            return samples.astype(np.int16, copy=False)
        if samples.size == 0:
            return np.zeros(0, dtype=np.int16)
        import av

        frame = av.AudioFrame.from_ndarray(samples.astype(np.int16, copy=False).reshape(1, -1), format="s16",
                                           layout="mono")
        frame.sample_rate = self.from_rate
        out = _joined(self._resampler.resample(frame))
        if not self._primed:
            # The filter holds back its delay from the first chunk. Leading silence in its place keeps
            # the output as long as the input from the start, so a reader that takes exactly one
            # chunk's worth (the 20 ms mic frame) does not underrun once and carry 20 ms of extra
            # latency for the rest of the call.
            self._primed = True
            short = int(samples.size * self.to_rate / self.from_rate) - out.size
            if short > 0:
                out = np.concatenate([np.zeros(short, dtype=np.int16), out])
        return out


def _joined(frames: list) -> np.ndarray:
    """The samples of packed mono s16 frames, one array (no copy for the usual single frame)."""
    if not frames:
        return np.zeros(0, dtype=np.int16)
    if len(frames) == 1:
        return frames[0].to_ndarray().reshape(-1)
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
