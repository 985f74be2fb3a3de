"""The simulated tutor's voice: espeak-ng when installed, else a synthetic voice-like signal.

Either way the audio is clearly audible speech-shaped sound at 48 kHz mono, so the kiosk's
speaker path, echo gate and "first tutor audio" timing are exercised for real. Each Realtime voice
name (``session.audio.output.voice``) speaks at its own pitch, about 15 % apart from its neighbours
(echo lowest, shimmer highest), so a test can tell from the audio a kiosk received which voice spoke.
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

#: Realtime voice → (espeak-ng variant, espeak-ng pitch 0-99), lowest voice first: each about 15 % above
#: the one before in median pitch (echo ~75 Hz … shimmer ~300 Hz).
VOICE_STYLES: dict[str, tuple[str, int]] = {
    "echo": ("m1", 0), "cedar": ("m3", 45), "ash": ("m3", 62), "verse": ("m3", 76), "ballad": ("m3", 90),
    "alloy": ("f2", 40), "marin": ("f2", 55), "coral": ("f2", 68), "sage": ("f2", 81), "shimmer": ("f2", 94),
}
#: The synthetic voice's base pitch (Hz) per Realtime voice, on the same ladder.
SYNTHETIC_PITCH: dict[str, float] = {name: 75.0 * 1.165 ** i for i, name in enumerate(VOICE_STYLES)}


def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


async def synthesize(text: str, voice: str = "auto", speaker: str = "") -> np.ndarray:
    """Speech for ``text`` as int16 mono at 48 kHz; ``voice`` is the engine (auto, espeak, synthetic),
    ``speaker`` the Realtime voice name that sets the pitch ("" or another name: espeak-ng's plain en-us,
    the voice the recogniser's phrase templates are made with)."""
    style = VOICE_STYLES.get(speaker)
    args = ["-v", f"en-us+{style[0]}", "-p", str(style[1])] if style else ["-v", "en-us"]
    if voice in ("auto", "espeak") and espeak_available():
        proc = await asyncio.create_subprocess_exec(
            "espeak-ng", *args, "-s", "165", "--stdout", text,
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
    return synthetic_voice(text, SYNTHETIC_PITCH.get(speaker, 140.0))


def synthetic_voice(text: str, base_hz: float = 140.0) -> np.ndarray:
    """A buzz with harmonics and a syllable envelope, ~65 ms per character (no TTS needed)."""
    seconds = max(0.4, 0.065 * len(text))
    t = np.arange(int(RATE * seconds)) / RATE
    pitch = base_hz * (1 + 0.14 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t) ** 2
    fade = np.minimum(1.0, np.minimum(t, seconds - t) / 0.03)
    return (tone * syllables * fade * 6000).astype(np.int16)
