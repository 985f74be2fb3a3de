"""Shared audio test helpers: speech fixtures, tones, a synthetic remote track, level measures and
a private headless PulseAudio server (real PortAudio without a sound card).

Fixtures here are plain functions; a test module uses them by importing the fixture's name
(``from tests.audio_helpers import pulse  # noqa: F401``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from appliance.audio.dsp import rms_dbfs

# -- signals and measures ---------------------------------------------------------------------


def tone(freq: float, seconds: float, rate: int = 48000, level: float = 0.25) -> np.ndarray:
    """A sine as int16 mono (``level`` of full scale)."""
    t = np.arange(int(rate * seconds)) / rate
    return (level * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency in the signal (FFT peak, Hann window)."""
    x = samples.astype(np.float64) * np.hanning(len(samples))
    spectrum = np.abs(np.fft.rfft(x))
    spectrum[0] = 0.0
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def median_pitch_hz(samples: np.ndarray, rate: int, low_hz: float = 60.0, high_hz: float = 400.0) -> float:
    """The median fundamental frequency of the voiced 40 ms frames (normalised autocorrelation, 10 ms hop).

    Frames quieter than 1/20 of the loudest sample or without a clear period (correlation under 0.5)
    are skipped, so silence and unvoiced sounds do not count."""
    x = samples.astype(np.float64)
    if rate > 16000:  # decimate for speed: the fundamental of a voice stays far below 8 kHz
        step = rate // 16000
        x = np.convolve(x, np.ones(step) / step, mode="same")[::step]
        rate //= step
    frame, hop = int(0.04 * rate), int(0.01 * rate)
    shortest, longest = int(rate / high_hz), int(rate / low_hz)
    floor = 0.05 * (np.max(np.abs(x)) if len(x) else 0.0)
    found = []
    for start in range(0, len(x) - frame, hop):
        f = x[start:start + frame]
        if np.sqrt(np.mean(f ** 2)) < floor:
            continue
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[frame - 1:]
        if ac[0] <= 0:
            continue
        ac = ac / ac[0]
        lag = shortest + int(np.argmax(ac[shortest:longest]))
        if ac[lag] > 0.5:
            found.append(rate / lag)
    assert found, "no voiced frames"
    return float(np.median(found))


def tone_runs(samples: np.ndarray, rate: int, hz: float, min_s: float = 0.1) -> list[tuple[float, float]]:
    """(start s, length s) of every stretch at least ``min_s`` long where a tone at ``hz`` (and its
    harmonics) carries nearly all the sound: a cue's notes, never speech, whose energy is spread out.

    Blocks of 80 ms every 20 ms; a block counts when it is louder than -40 dBFS and ≥ 80 % of its
    energy lies within 30 Hz of ``hz`` or of twice ``hz``."""
    window, hop = int(rate * 0.08), int(rate * 0.02)
    freqs = np.fft.rfftfreq(window, 1 / rate)
    near = (np.abs(freqs - hz) <= 30) | (np.abs(freqs - 2 * hz) <= 30)
    taper = np.hanning(window)
    runs: list[tuple[float, float]] = []
    start: int | None = None
    last = 0
    for pos in range(0, len(samples) - window + 1, hop):
        block = samples[pos:pos + window]
        power = np.abs(np.fft.rfft(block.astype(np.float64) * taper)) ** 2
        total = float(power[1:].sum())
        tonal = rms_dbfs(block) > -40 and total > 0 and float(power[near].sum()) / total >= 0.8
        if tonal and start is None:
            start = pos
        if tonal:
            last = pos
        elif start is not None:
            runs.append((start / rate, (last + window - start) / rate))
            start = None
    if start is not None:
        runs.append((start / rate, (last + window - start) / rate))
    return [(at, length) for at, length in runs if length >= min_s]


def voiced_seconds(samples: np.ndarray, rate: int, threshold_dbfs: float = -45.0) -> float:
    """Seconds of 20 ms blocks louder than ``threshold_dbfs``."""
    block = rate // 50
    loud = sum(rms_dbfs(samples[i:i + block]) > threshold_dbfs for i in range(0, len(samples) - block + 1, block))
    return loud * 0.02


def wav_seconds(path: Path) -> float:
    """A WAV file's duration as sox reports it (an independent reader)."""
    result = subprocess.run(["sox", "--i", "-D", str(path)], capture_output=True, text=True, check=True)
    return float(result.stdout.strip())


# -- speech fixtures ---------------------------------------------------------------------------

_SPEECH_CACHE = Path(tempfile.gettempdir()) / f"stella-speech-{os.getuid()}"


def espeak_wav(text: str, path: Path | None = None, voice: str = "en-us", speed: int = 150) -> Path:
    """``text`` spoken by espeak-ng into a WAV file (22.05 kHz mono); skips when espeak-ng is missing.

    Without ``path`` the clip is cached per text in the temp directory, so suites that reuse a
    phrase synthesise it once.
    """
    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng is not installed (scripts/setup.sh installs it)")
    if path is None:
        import hashlib

        _SPEECH_CACHE.mkdir(exist_ok=True)
        key = hashlib.sha1(f"{voice}|{speed}|{text}".encode()).hexdigest()[:16]
        path = _SPEECH_CACHE / f"{key}.wav"
        if path.exists() and path.stat().st_size > 44:
            return path
    tmp = path.with_suffix(".part.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(tmp), text], check=True,
                   capture_output=True)
    tmp.replace(path)  # atomic: parallel tests never read half a file
    return path


# -- a synthetic remote track ------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    """``seconds`` of a sine at ``freq`` Hz (0 = silence) at ``level`` of full scale."""

    seconds: float
    freq: float = 0.0
    level: float = 0.25


class ScriptedTrack(MediaStreamTrack):
    """Produces what aiortc's remote track does: s16 stereo (packed) 48 kHz 960-sample frames.

    Plays ``segments`` as fast as it is read (no pacing: the consumer is the test's clock), then
    ends with MediaStreamError like a closed call; ``hold_at_end`` instead stops delivering frames
    without ending, like a server that sends nothing after the tutor's last word.
    """

    kind = "audio"

    def __init__(self, segments: Sequence[Segment], hold_at_end: bool = False) -> None:
        super().__init__()
        self.rate = 48000
        parts = [tone(s.freq, s.seconds, self.rate, s.level) if s.freq else
                 np.zeros(int(self.rate * s.seconds), dtype=np.int16) for s in segments]
        self.samples = np.concatenate(parts)
        self.hold_at_end = hold_at_end
        self._pos = 0
        self.sent_frames = 0

    async def recv(self) -> av.AudioFrame:
        if self._pos >= len(self.samples):
            if self.hold_at_end:
                await asyncio.Event().wait()
            raise MediaStreamError
        chunk = np.zeros(960, dtype=np.int16)
        piece = self.samples[self._pos:self._pos + 960]
        chunk[:len(piece)] = piece
        stereo = np.repeat(chunk, 2).reshape(1, -1)  # interleaved L R L R, as aiortc decodes
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = self.rate
        frame.pts = self._pos
        frame.time_base = fractions.Fraction(1, self.rate)
        self._pos += 960
        self.sent_frames += 1
        await asyncio.sleep(0)  # let other tasks run, as a real track's queue does
        return frame


# -- a private headless PulseAudio -------------------------------------------------------------

PULSE_SCRIPT = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={sock}
load-module module-null-sink sink_name=speaker sink_properties=device.description=VirtualSpeaker
load-module module-null-sink sink_name=micfeed sink_properties=device.description=MicFeed
load-module module-remap-source source_name=mic master=micfeed.monitor source_properties=device.description=VirtualMic
set-default-sink speaker
set-default-source mic
"""


@dataclass
class PulseServer:
    """A running private PulseAudio: ``env`` reaches it; sink ``speaker`` (record ``speaker.monitor``),
    source ``mic`` (fed by playing into sink ``micfeed``)."""

    env: dict[str, str]
    runtime_dir: Path

    def record(self, path: Path, device: str = "speaker.monitor", rate: int = 48000) -> subprocess.Popen:
        """Start recording raw s16le mono from ``device`` into ``path`` (terminate it when done)."""
        with open(path, "wb") as out:
            return subprocess.Popen(["parec", f"--device={device}", "--raw", "--format=s16le", f"--rate={rate}",
                                     "--channels=1", "--latency-msec=20"], env=self.env, stdout=out)

    def pactl(self, *args: str) -> str:
        """Run ``pactl`` against this server; its output (raises when it fails)."""
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, check=True,
                              timeout=10).stdout

    def unload(self, module: str, name: str) -> str:
        """Unload the loaded ``module`` whose arguments name ``name`` (e.g. a sink); returns its arguments."""
        for line in self.pactl("list", "short", "modules").splitlines():
            index, loaded, *rest = line.split("\t")
            if loaded == module and f"_name={name}" in (rest[0] if rest else ""):
                self.pactl("unload-module", index)
                return rest[0]
        raise AssertionError(f"no {module} named {name} is loaded")

    def play(self, wav: Path, device: str = "micfeed") -> subprocess.Popen:
        """Play a WAV file into ``device`` (by default: into the virtual microphone)."""
        return subprocess.Popen(["paplay", f"--device={device}", str(wav)], env=self.env)


@contextlib.contextmanager
def pulse_server(base: Path, ready_timeout_s: float = 15.0, script: str = PULSE_SCRIPT) -> Iterator[PulseServer]:
    """Start a private PulseAudio under ``base`` running ``script`` (``{sock}`` is its socket);
    skip the test when PulseAudio is not installed."""
    missing = [tool for tool in ("pulseaudio", "pactl", "parec", "paplay") if not shutil.which(tool)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (apt: pulseaudio pulseaudio-utils libasound2-plugins)")
    base.mkdir(parents=True, exist_ok=True)
    sock = base / "native"
    script_path = base / "script.pa"
    script_path.write_text(script.format(sock=sock))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(base), "HOME": str(base), "PULSE_SERVER": f"unix:{sock}"}
    for key in ("PULSE_SINK", "PULSE_SOURCE"):
        env.pop(key, None)
    log = open(base / "pulseaudio.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(["pulseaudio", "--daemonize=no", "-n", "-F", str(script_path), "--exit-idle-time=-1",
                             "--disallow-exit", "--disable-shm", "--log-target=stderr"],
                            env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + ready_timeout_s
        # Waiting on readiness: the server answers `pactl info` once its socket accepts clients.
        while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
            if proc.poll() is not None:
                raise RuntimeError(f"pulseaudio exited ({proc.returncode}): "
                                   f"{(base / 'pulseaudio.log').read_text(errors='replace')[-800:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"pulseaudio did not answer within {ready_timeout_s} s")
            time.sleep(0.05)
        yield PulseServer(env=env, runtime_dir=base)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture
def pulse(monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    """A private PulseAudio for one test, with this process's environment pointing at it.

    PortAudio's ALSA "pulse"/"default" devices (libasound2-plugins) connect to ``PULSE_SERVER``
    when a stream opens, so the variables are set before any PyAudio device is opened. The runtime
    directory is short (a unix socket path must fit in 108 bytes).
    """
    base = Path(tempfile.mkdtemp(prefix="stella-pulse-"))
    try:
        with pulse_server(base) as server:
            for key in ("XDG_RUNTIME_DIR", "HOME", "PULSE_SERVER"):
                monkeypatch.setenv(key, server.env[key])
            monkeypatch.delenv("PULSE_SINK", raising=False)
            monkeypatch.delenv("PULSE_SOURCE", raising=False)
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


# -- level envelopes (the LED level meter's tests) ------------------------------------------------
METER_RATE = 48000
METER_FRAME = METER_RATE // 50


def envelope_db(seconds: float, low: float, high: float) -> np.ndarray:
    """Per 20 ms frame, the tone's level in dBFS: a ramp up, a hold, a gap of silence, bursts, a ramp down."""
    n = round(seconds * 50)
    t = np.arange(n) / 50
    env = np.full(n, -120.0)
    q = seconds / 5
    up, hold, gap, bursts = t < q, (t >= q) & (t < 2 * q), (t >= 2 * q) & (t < 2 * q + 0.3), t >= 3 * q
    env[up] = low + (high - low) * t[up] / q
    env[hold] = high
    env[(t >= 2 * q + 0.3) & (t < 3 * q)] = low
    burst_on = ((t * 5).astype(int) % 2 == 0)
    env[bursts & (t < 4 * q)] = np.where(burst_on[bursts & (t < 4 * q)], high - 2, low + 2)
    down = t >= 4 * q
    env[down] = high - (high - low) * (t[down] - 4 * q) / q
    env[gap] = -120.0
    return env


def enveloped_tone(env_db: np.ndarray) -> np.ndarray:
    """A 440 Hz tone whose RMS over each 20 ms frame is that frame's level (int16, one continuous wave)."""
    amplitude = np.repeat(np.sqrt(2) * 32767 * 10 ** (env_db / 20), METER_FRAME)
    t = np.arange(amplitude.size) / METER_RATE
    return np.round(amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])
