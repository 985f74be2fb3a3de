"""WAV-file audio: a scripted learner as microphone and a recorder as speaker (demo, tests, admins
trying a kiosk without hardware)."""

from __future__ import annotations

import asyncio
import collections
import wave
from pathlib import Path

import numpy as np

from appliance.audio.base import AudioDeviceError
from appliance.audio.dsp import resample, to_mono


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM WAV file as int16 mono samples and its rate; AudioDeviceError when unreadable."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioDeviceError(f"cannot read WAV file {path}: {exc}") from None
    if width == 2:
        samples = np.frombuffer(frames, dtype="<i2")
    elif width == 1:
        samples = ((np.frombuffer(frames, dtype=np.uint8).astype(np.int16) - 128) << 8)
    elif width == 4:
        samples = (np.frombuffer(frames, dtype="<i4") >> 16).astype(np.int16)
    else:
        raise AudioDeviceError(f"{path}: {width * 8}-bit samples are not supported; use 16-bit PCM")
    return to_mono(samples.astype(np.int16), channels), rate


class ScriptedMicrophone:
    """A microphone that is silent until told to ``say`` a clip, then plays it once.

    Reads are pulled by the paced WebRTC track, so a clip is "spoken" in real time.
    """

    def __init__(self, sample_rate: int = 48000) -> None:
        self.sample_rate = sample_rate
        self._clips: collections.deque[np.ndarray] = collections.deque()
        self._current: np.ndarray | None = None
        self._pos = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        self._clips.clear()
        self._current = None

    def say(self, clip: str | Path | np.ndarray, rate: int | None = None) -> float:
        """Queue a clip (WAV path, or int16 samples at ``rate``); returns its length in seconds."""
        if isinstance(clip, np.ndarray):
            samples, clip_rate = clip.astype(np.int16, copy=False), rate or self.sample_rate
        else:
            samples, clip_rate = read_wav(clip)
        samples = resample(samples, clip_rate, self.sample_rate)
        self._clips.append(samples)
        self._idle.clear()
        return len(samples) / self.sample_rate

    @property
    def speaking(self) -> bool:
        return not self._idle.is_set()

    async def wait_idle(self) -> None:
        """Until every queued clip has been read out."""
        await self._idle.wait()

    def read(self, n: int) -> np.ndarray:
        out = np.zeros(n, dtype=np.int16)
        filled = 0
        while filled < n:
            if self._current is None:
                if not self._clips:
                    break
                self._current, self._pos = self._clips.popleft(), 0
            take = min(n - filled, len(self._current) - self._pos)
            out[filled:filled + take] = self._current[self._pos:self._pos + take]
            filled += take
            self._pos += take
            if self._pos >= len(self._current):
                self._current = None
        if self._current is None and not self._clips and not self._idle.is_set():
            self._idle.set()
        return out


class WavFileSink:
    """Records everything the speaker would play into a mono 16-bit WAV file.

    Frames are written as they come (the header is fixed on close), so a killed process loses
    at most what the OS had not flushed.
    """

    def __init__(self, path: str | Path, sample_rate: int = 48000) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._wav: wave.Wave_write | None = None
        self.samples_written = 0

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - kept open for the whole call
        except OSError as exc:
            raise AudioDeviceError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(self.sample_rate)
        self._wav = wav

    def write(self, samples: np.ndarray) -> None:
        if self._wav is None:
            return
        self._wav.writeframes(samples.astype("<i2", copy=False).tobytes())
        self.samples_written += len(samples)

    async def close(self) -> None:
        if self._wav is not None:
            self._wav.close()
            self._wav = None


class NullSink:
    """A speaker that discards everything (benchmarks, headless trials)."""

    def __init__(self, sample_rate: int = 48000) -> None:
        self.sample_rate = sample_rate
        self.samples_written = 0

    async def start(self) -> None:
        pass

    def write(self, samples: np.ndarray) -> None:
        self.samples_written += len(samples)

    async def close(self) -> None:
        pass
