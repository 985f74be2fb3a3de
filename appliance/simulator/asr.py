"""Speech recognition for the simulator: closed-vocabulary template matching.

The simulator cannot run a real speech recogniser offline, but it can recognise a configured
list of phrases (by default "stop" and a few common learner lines): each phrase is spoken once
with espeak-ng at start-up, and an utterance is matched against those templates by dynamic time
warping over log-mel spectra (classic isolated-word recognition). A match gives its phrase as the
transcript; anything else becomes "(speech, N s)". That is enough to hold a lesson, to end one by
saying "stop", and to test both, at zero cost.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from appliance.audio.dsp import resample

log = logging.getLogger(__name__)

RATE = 16000
FRAME = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 24
MATCH_THRESHOLD = 0.3
"""Mean per-frame distance (after normalisation) below which an utterance matches a template."""

DEFAULT_PHRASES = (
    "stop",
    "hello",
    "yes",
    "no",
    "thank you",
    "goodbye",
)


def _mel_filters(n_fft: int = 512) -> np.ndarray:
    def hz_to_mel(f: np.ndarray | float) -> np.ndarray:
        return 2595 * np.log10(1 + np.asarray(f) / 700)

    mels = np.linspace(hz_to_mel(100), hz_to_mel(7000), N_MELS + 2)
    hz = 700 * (10 ** (mels / 2595) - 1)
    bins = np.floor((n_fft + 1) * hz / RATE).astype(int)
    filters = np.zeros((N_MELS, n_fft // 2 + 1))
    for m in range(1, N_MELS + 1):
        left, centre, right = bins[m - 1], bins[m], bins[m + 1]
        filters[m - 1, left:centre] = (np.arange(left, centre) - left) / max(1, centre - left)
        filters[m - 1, centre:right] = (right - np.arange(centre, right)) / max(1, right - centre)
    return filters


_FILTERS = _mel_filters()


def features(samples16k: np.ndarray) -> np.ndarray:
    """Log-mel frames of the voiced part, mean- and variance-normalised per band."""
    x = samples16k.astype(np.float64) / 32768
    if len(x) < FRAME:
        x = np.pad(x, (0, FRAME - len(x)))
    n = 1 + (len(x) - FRAME) // HOP
    idx = np.arange(FRAME)[None, :] + HOP * np.arange(n)[:, None]
    frames = x[idx] * np.hanning(FRAME)
    power = np.abs(np.fft.rfft(frames, 512)) ** 2
    logmel = np.log(power @ _FILTERS.T + 1e-10)
    energy = logmel.max(axis=1)
    voiced = energy > energy.max() - 9  # trim leading/trailing silence
    if voiced.any():
        first, last = np.argmax(voiced), len(voiced) - np.argmax(voiced[::-1])
        logmel = logmel[first:last]
    logmel = logmel - logmel.mean(axis=0)
    return logmel / (logmel.std(axis=0) + 1e-6)


def dtw_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean frame distance along the best alignment (band-limited to keep it fast)."""
    n, m = len(a), len(b)
    if n == 0 or m == 0 or max(n, m) > 2.5 * min(n, m):
        return float("inf")
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).mean(axis=2))
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    band = max(abs(n - m) + 10, int(0.3 * max(n, m)))
    for i in range(1, n + 1):
        lo, hi = max(1, int(i * m / n) - band), min(m, int(i * m / n) + band)
        for j in range(lo, hi + 1):
            acc[i, j] = cost[i - 1, j - 1] + min(acc[i - 1, j], acc[i, j - 1], acc[i - 1, j - 1])
    return float(acc[n, m] / (n + m))


class PhraseRecognizer:
    """Recognises a closed list of phrases spoken by espeak-ng voices (or anything close to them)."""

    def __init__(self, phrases: tuple[str, ...] | list[str] = DEFAULT_PHRASES) -> None:
        self.phrases = [p.strip() for p in phrases if p.strip()]
        self._templates: list[tuple[str, np.ndarray]] | None = None
        self._lock = asyncio.Lock()

    async def _load(self) -> list[tuple[str, np.ndarray]]:
        from appliance.simulator.voice import espeak_available, synthesize

        if self._templates is None:
            templates = []
            if espeak_available():
                for phrase in self.phrases:
                    audio = await synthesize(phrase, "espeak")
                    templates.append((phrase, features(resample(audio, 48000, RATE))))
            else:
                log.info("espeak-ng not installed: the simulator cannot recognise phrases")
            self._templates = templates
        return self._templates

    async def transcribe(self, samples48k: np.ndarray) -> str:
        """The phrase heard, or "(speech, N s)" when it is none of the known phrases."""
        seconds = len(samples48k) / 48000
        async with self._lock:
            templates = await self._load()
        if templates:
            utterance = features(resample(samples48k, 48000, RATE))
            scores = await asyncio.to_thread(lambda: [(dtw_distance(utterance, t), p) for p, t in templates])
            best, phrase = min(scores)
            if best < MATCH_THRESHOLD:
                log.info("recognised %r (distance %.2f)", phrase, best)
                return phrase
            log.info("no phrase matched (closest %r at %.2f)", phrase, best)
        return f"(speech, {seconds:.1f} s)"
