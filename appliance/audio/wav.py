"""WAV-file audio: a scripted learner as microphone and a recorder as speaker.

Why: the demo, the tests and an admin trying a kiosk without hardware need a learner who speaks
on cue and a speaker whose output can be checked afterwards, through the same interface as the
real devices.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from appliance.audio.base import AudioDeviceError
from appliance.audio.dsp import resample, to_mono
from appliance.audio.health import AlwaysHealthy


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM WAV file as int16 mono samples and its rate; AudioDeviceError when unreadable.

    8, 16, 24 and 32-bit integer PCM are accepted (any channel count, downmixed).
    """
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except FileNotFoundError:
        raise AudioDeviceError(f"WAV file {path} does not exist") from None
    except (OSError, EOFError, wave.Error) as exc:
        raise AudioDeviceError(f"cannot read WAV file {path}: {exc} (16-bit PCM works: "
                               f"sox {path} -b 16 -e signed-integer fixed.wav)") from None
    if width == 2:
        samples = np.frombuffer(frames, dtype="<i2")
    elif width == 1:
        samples = (np.frombuffer(frames, dtype=np.uint8).astype(np.int16) - 128) << 8
    elif width == 3:
        samples = np.frombuffer(frames, dtype=np.uint8).reshape(-1, 3)[:, 1:].copy().view("<i2").reshape(-1)
    elif width == 4:
        samples = (np.frombuffer(frames, dtype="<i4") >> 16).astype(np.int16)
    else:
        raise AudioDeviceError(f"{path}: {width * 8}-bit samples are not supported; use 16-bit PCM")
    usable = len(samples) - len(samples) % channels  # a truncated file may end mid-frame
    return to_mono(samples[:usable].astype(np.int16, copy=False), channels), rate


def as_int16(samples: np.ndarray) -> np.ndarray:
    """int16 mono PCM from int16 or float (-1.0..1.0) samples."""
    samples = np.asarray(samples).reshape(-1)
    if np.issubdtype(samples.dtype, np.floating):
        return np.clip(np.round(samples * 32767.0), -32768, 32767).astype(np.int16)
    return samples.astype(np.int16, copy=False)


class ScriptedMicrophone(AlwaysHealthy):
    """A microphone that is silent until told to ``say`` a clip, then plays it once.

    Reads are pulled by the paced WebRTC track, so a clip is "spoken" in real time. When every
    queued clip has been read out, ``wait_idle()`` returns and ``on_idle`` (if given) is called on
    the event loop, whichever thread did the reading.
    """

    def __init__(self, sample_rate: int = 48000, on_idle: Callable[[], None] | None = None) -> None:
        self.sample_rate = sample_rate
        self.on_idle = on_idle
        self._clips: collections.deque[np.ndarray] = collections.deque()
        self._current: np.ndarray | None = None
        self._pos = 0
        self._busy = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.clips_spoken = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        """Drop whatever is still queued; waiters are released (nothing more will be said)."""
        self.clear()

    def say(self, clip: str | Path | np.ndarray, rate: int | None = None) -> float:
        """Queue a clip (WAV path, or int16/float samples at ``rate``); returns its length in seconds.

        Raises AudioDeviceError for a missing or unreadable WAV file.
        """
        if self._loop is None:
            with contextlib.suppress(RuntimeError):  # said before the loop runs: bound at start()
                self._loop = asyncio.get_running_loop()
        if isinstance(clip, np.ndarray):
            samples, clip_rate = as_int16(clip), rate or self.sample_rate
        else:
            samples, clip_rate = read_wav(clip)
        samples = resample(samples, clip_rate, self.sample_rate)
        self._clips.append(samples)
        self._busy = True
        self._idle.clear()
        return len(samples) / self.sample_rate

    def clear(self) -> None:
        """Stop speaking now (the learner is interrupted); counts as idle."""
        self._clips.clear()
        self._current = None
        if self._busy:
            self._went_idle()

    @property
    def speaking(self) -> bool:
        """True from ``say`` until the last queued sample has been read."""
        return self._busy

    @property
    def queued_s(self) -> float:
        """Seconds of speech still to be read."""
        left = sum(len(c) for c in self._clips)
        if self._current is not None:
            left += len(self._current) - self._pos
        return left / self.sample_rate

    async def wait_idle(self) -> None:
        """Until every queued clip has been read out (wrap in a timeout: reads drive this)."""
        await self._idle.wait()

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` samples of queued speech, silence after it (never blocks)."""
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
                self.clips_spoken += 1
        if self._busy and self._current is None and not self._clips:
            self._went_idle()
        return out

    def _went_idle(self) -> None:
        self._busy = False
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or loop is running:
            self._idle.set()
            if self.on_idle is not None:
                if running is not None:
                    running.call_soon(self.on_idle)
                else:
                    self.on_idle()
        elif not loop.is_closed():
            # asyncio.Event is not thread-safe: hand the news to the loop that owns it.
            loop.call_soon_threadsafe(self._idle.set)
            if self.on_idle is not None:
                loop.call_soon_threadsafe(self.on_idle)


class WavFileSink(AlwaysHealthy):
    """Records everything the speaker would play into a mono 16-bit WAV file.

    Each write reaches the OS at once and the header's lengths are patched as it goes (the
    ``wave`` module seeks back after every write), so a killed process leaves a valid file with
    everything written so far; ``close`` finalises it.
    """

    def __init__(self, path: str | Path, sample_rate: int = 48000) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._wav: wave.Wave_write | None = None
        self.samples_written = 0

    @property
    def seconds_written(self) -> float:
        return self.samples_written / self.sample_rate

    async def start(self) -> None:
        """Create (or truncate) the file; AudioDeviceError names the path when that fails."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            wav = wave.open(str(self.path), "wb")  # noqa: SIM115 - kept open for the whole call
        except OSError as exc:
            raise AudioDeviceError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(self.sample_rate)
        wav.writeframes(b"")  # header on disk now: an empty lesson is still a valid file
        self._wav = wav

    def write(self, samples: np.ndarray) -> None:
        """Append int16 mono samples (ignored before ``start`` and after ``close``)."""
        if self._wav is None:
            return
        self._wav.writeframes(as_int16(samples).astype("<i2", copy=False).tobytes())
        self.samples_written += len(samples)

    async def close(self) -> None:
        if self._wav is not None:
            self._wav.close()
            self._wav = None


class NullSink(AlwaysHealthy):
    """A speaker that discards everything (benchmarks, headless trials) but counts it."""

    def __init__(self, sample_rate: int = 48000) -> None:
        self.sample_rate = sample_rate
        self.samples_written = 0

    async def start(self) -> None:
        pass

    def write(self, samples: np.ndarray) -> None:
        self.samples_written += len(samples)

    async def close(self) -> None:
        pass
