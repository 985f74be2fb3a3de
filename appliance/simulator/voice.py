"""The simulated tutor's voice: espeak-ng when installed, else a synthetic voice-like signal.

Either way the audio is clearly audible speech-shaped sound at 48 kHz mono, so the kiosk's
speaker path, echo gate and "first tutor audio" timing are exercised for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import shutil
import wave

import numpy as np

from appliance.audio.dsp import resample, to_mono

RATE = 48000


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


async def synthesize(text: str, voice: str = "auto") -> np.ndarray:
    """Speech for ``text`` as int16 mono at 48 kHz."""
    if voice in ("auto", "espeak") and espeak_available():
        proc = await asyncio.create_subprocess_exec(
            "espeak-ng", "-v", "en-us", "-s", "165", "--stdout", text,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        try:
            data, _ = await proc.communicate()
        except BaseException:
            # Cancelled mid-sentence (the call ended): espeak-ng would block on a pipe nobody reads, and
            # its transport would outlive the loop. Kill it and reap it before passing the cancel on.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await proc.communicate()
            raise
        if proc.returncode == 0 and data:
            with wave.open(io.BytesIO(data)) as w:
                rate, channels = w.getframerate(), w.getnchannels()
                samples = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            return resample(to_mono(samples, channels), rate, RATE)
    return synthetic_voice(text)


def synthetic_voice(text: str) -> np.ndarray:
    """A buzz with harmonics and a syllable envelope, ~65 ms per character (no TTS needed)."""
    seconds = max(0.4, 0.065 * len(text))
    t = np.arange(int(RATE * seconds)) / RATE
    pitch = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t) ** 2
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.03)
    return (tone * syllables * fade * 6000).astype(np.int16)
