"""Real PortAudio through a private headless PulseAudio whose only speaker (a null sink) or only
microphone (a sine source) is unloaded mid-stream and loaded again under the same name: the kiosk
is told, nothing blocks, and audio flows again without a restart.

Each server holds just the device under test: with a second sink or source PulseAudio would move
the stream there instead of dropping it (a move is no failure, and no report is expected)."""

from __future__ import annotations

import asyncio
import queue
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from appliance.audio.dsp import rms_dbfs
from appliance.audio.pyaudio_backend import PyAudioSink, PyAudioSource
from tests.audio_helpers import PulseServer, peak_hz, pulse_server, tone, voiced_seconds

SPEAKER_ONLY = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={sock}
load-module module-null-sink sink_name=speaker
set-default-sink speaker
"""
MIC_ONLY = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={sock}
load-module module-sine-source source_name=mic frequency=440 rate=48000
set-default-source mic
"""
RETRY = {"retry_min_s": 0.2, "retry_max_s": 1.0}
DETECT_BOUND_S = 2.0


def private_pulse(script: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    base = Path(tempfile.mkdtemp(prefix="stella-pulse-"))
    try:
        with pulse_server(base, script=script) as server:
            for key in ("XDG_RUNTIME_DIR", "HOME", "PULSE_SERVER"):
                monkeypatch.setenv(key, server.env[key])
            monkeypatch.delenv("PULSE_SINK", raising=False)
            monkeypatch.delenv("PULSE_SOURCE", raising=False)
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def speaker_pulse(monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    yield from private_pulse(SPEAKER_ONLY, monkeypatch)


@pytest.fixture
def mic_pulse(monkeypatch: pytest.MonkeyPatch) -> Iterator[PulseServer]:
    yield from private_pulse(MIC_ONLY, monkeypatch)


class HealthLog:
    def __init__(self) -> None:
        self.reports: queue.Queue[tuple[str, bool, str, float]] = queue.Queue()

    def __call__(self, kind: str, ok: bool, detail: str) -> None:
        self.reports.put((kind, ok, detail, time.monotonic()))

    async def next(self, timeout: float = 15.0) -> tuple[str, bool, str, float]:
        return await asyncio.to_thread(self.reports.get, True, timeout)


def _raw(path: Path) -> np.ndarray:
    data = path.read_bytes()
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")


async def _until_voiced(path: Path, seconds: float, timeout: float = 10.0) -> np.ndarray:
    async with asyncio.timeout(timeout):
        while voiced_seconds(_raw(path), 48000) < seconds:
            await asyncio.sleep(0.05)  # polling a file another process (parec) writes
    return _raw(path)


async def test_speaker_sink_unloaded_mid_playback_is_reported_and_plays_again(
        speaker_pulse: PulseServer, tmp_path: Path) -> None:
    """Guards against a speaker that vanished mid-lesson staying silent until the kiosk restarts."""
    speaker = PyAudioSink("pulse", sample_rate=48000, **RETRY)
    health = HealthLog()
    speaker.set_health_callback(health)
    await speaker.start()
    before = tmp_path / "before.raw"
    parec = speaker_pulse.record(before)
    try:
        speaker.write(tone(440, 5.0))
        await _until_voiced(before, 0.3)  # the tone is playing
        lost_at = time.monotonic()
        args = speaker_pulse.unload("module-null-sink", "speaker")
        kind, ok, detail, at = await health.next()
        assert (kind, ok) == ("speaker", False) and at - lost_at < DETECT_BOUND_S, detail
        assert not speaker.healthy and "'pulse'" in (speaker.problem or "")
        speaker.write(tone(440, 1.0))  # dropped, never blocks or raises
        assert speaker.buffered_s == 0.0
    finally:
        parec.terminate()
        parec.wait(10)

    speaker_pulse.pactl("load-module", "module-null-sink", args)
    kind, ok, detail, _ = await health.next()
    assert (kind, ok) == ("speaker", True), detail
    after = tmp_path / "after.raw"
    parec = speaker_pulse.record(after)
    try:
        speaker.write(tone(660, 1.0))
        played = await _until_voiced(after, 0.8)
    finally:
        parec.terminate()
        parec.wait(10)
    assert peak_hz(played, 48000) == pytest.approx(660, abs=3)  # the new tone, not the stale 440 Hz
    async with asyncio.timeout(10):
        await speaker.close()
    assert speaker.failures == 1 and speaker.recoveries == 1


async def test_microphone_source_unloaded_is_reported_and_hears_again(mic_pulse: PulseServer) -> None:
    """Guards against a microphone that vanished mid-lesson leaving the kiosk deaf until a restart."""
    mic = PyAudioSource("pulse", sample_rate=16000, **RETRY)
    health = HealthLog()
    mic.set_health_callback(health)
    await mic.start()

    async def hear_tone() -> np.ndarray:
        async with asyncio.timeout(10):
            while rms_dbfs(frame := mic.read(320)) < -30:
                await asyncio.sleep(0.02)  # the paced track's 20 ms step
        return np.concatenate([frame, *[mic.read(320) for _ in range(3)]])

    assert peak_hz(await hear_tone(), 16000) == pytest.approx(440, abs=60)
    lost_at = time.monotonic()
    args = mic_pulse.unload("module-sine-source", "mic")
    kind, ok, detail, at = await health.next()
    assert (kind, ok) == ("microphone", False) and at - lost_at < DETECT_BOUND_S, detail
    assert not mic.read(320).any()  # silence while it is gone

    mic_pulse.pactl("load-module", "module-sine-source", args)
    kind, ok, detail, _ = await health.next()
    assert (kind, ok) == ("microphone", True), detail
    assert peak_hz(await hear_tone(), 16000) == pytest.approx(440, abs=60)
    await mic.close()
