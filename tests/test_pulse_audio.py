"""The real PortAudio path (PyAudio) through a private headless PulseAudio server: a virtual
speaker (null sink, recorded off its monitor) and a virtual microphone (fed with paplay)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from appliance.audio.base import AudioDeviceError
from appliance.audio.dsp import rms_dbfs
from appliance.audio.pyaudio_backend import PyAudioSink, PyAudioSource, RingBuffer
from tests.harness import espeak

SCRIPT = """
load-module module-native-protocol-unix auth-anonymous=1 socket={sock}
load-module module-null-sink sink_name=speaker
load-module module-null-sink sink_name=micfeed
load-module module-remap-source source_name=mic master=micfeed.monitor
set-default-sink speaker
set-default-source mic
"""


@pytest.fixture
def pulse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if not shutil.which("pulseaudio") or not shutil.which("pactl"):
        pytest.skip("pulseaudio is not installed (scripts/setup.sh installs it)")
    sock = tmp_path / "native"
    (tmp_path / "script.pa").write_text(SCRIPT.format(sock=sock))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(tmp_path), "PULSE_SERVER": f"unix:{sock}"}
    proc = subprocess.Popen(["pulseaudio", "--daemonize=no", "-n", "-F", str(tmp_path / "script.pa"),
                             "--exit-idle-time=-1", "--disallow-exit", "--disable-shm"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:  # readiness
        assert proc.poll() is None, proc.stderr.read().decode()[-500:] if proc.stderr else "pulseaudio died"
        assert time.monotonic() < deadline, "pulseaudio did not come up"
        time.sleep(0.05)
    for key in ("XDG_RUNTIME_DIR", "HOME", "PULSE_SERVER"):
        monkeypatch.setenv(key, env[key])
    yield env
    proc.terminate()
    proc.wait(10)


def test_ring_buffer_overrun_and_underrun() -> None:
    ring = RingBuffer(100)
    ring.push(np.arange(80, dtype=np.int16))
    ring.push(np.arange(80, 150, dtype=np.int16))  # 50 oldest dropped
    assert ring.overruns == 1 and len(ring) == 100
    assert ring.pop(10).tolist() == list(range(50, 60))
    out = ring.pop(200)
    assert ring.underruns == 1 and out[90:].max() == 0 and out[:90].tolist() == list(range(60, 150))


async def test_unknown_device_name_lists_the_real_ones(pulse: dict[str, str]) -> None:
    with pytest.raises(AudioDeviceError) as info:
        await PyAudioSource("seeed-voicecard").start()
    assert "'pulse'" in str(info.value) and "input_device" in str(info.value)


async def test_pyaudio_speaker_and_microphone(pulse: dict[str, str], tmp_path: Path) -> None:
    rate = 48000
    # Speaker: a 1 s tone played by PyAudioSink is recorded off the null sink's monitor.
    recording = tmp_path / "speaker.raw"
    with open(recording, "wb") as out:
        parec = subprocess.Popen(["parec", "--device=speaker.monitor", "--raw", "--format=s16le",
                                  f"--rate={rate}", "--channels=1"], env=pulse, stdout=out)
        sink = PyAudioSink("pulse", sample_rate=rate)
        await sink.start()
        t = np.arange(rate) / rate
        sink.write((8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
        async with asyncio.timeout(10):
            while len(sink.buffer):  # wait until PortAudio has taken every sample
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # let the server deliver the tail to the monitor
        await sink.close()
        parec.terminate()
        parec.wait(10)
    played = np.frombuffer(recording.read_bytes(), dtype="<i2")
    loud = [rms_dbfs(played[i:i + 960]) > -30 for i in range(0, len(played) - 960, 960)]
    assert 0.8 <= sum(loud) * 0.02 <= 1.3, f"{sum(loud) * 0.02:.2f} s of tone recorded"

    # Microphone: spoken WAV played into the virtual mic is captured by PyAudioSource.
    clip = espeak("Hello, I am the microphone test.", tmp_path / "mic.wav")
    source = PyAudioSource("pulse", sample_rate=rate)
    await source.start()
    paplay = subprocess.Popen(["paplay", "--device=micfeed", str(clip)], env=pulse)
    captured = []
    started = time.monotonic()
    while time.monotonic() - started < 4.0:  # the clip is ~2 s; read in 20 ms steps like the call track
        await asyncio.sleep(0.02)
        captured.append(source.read(960))
    assert paplay.wait(10) == 0
    await source.close()
    audio = np.concatenate(captured)
    voiced = [rms_dbfs(audio[i:i + 960]) > -45 for i in range(0, len(audio) - 960, 960)]
    seconds = sum(voiced) * 0.02
    result = subprocess.run(["sox", "--i", "-D", str(clip)], capture_output=True, text=True)
    expected = float(result.stdout.strip())
    assert 0.5 * expected <= seconds <= 1.2 * expected, (seconds, expected)


async def test_lesson_through_real_portaudio(pulse: dict[str, str], tmp_path: Path) -> None:
    """Spoken WAV into the virtual mic reaches the simulator as speech; the tutor is recorded off the
    virtual speaker's monitor with the expected duration and energy."""
    from appliance.state import State
    from tests.harness import LEARNER_LINES, lesson_stack
    from tests.test_lesson_e2e import tutor_quiet_after

    rate = 48000
    clip = espeak(LEARNER_LINES[1], tmp_path / "learner.wav")  # "Stop."
    recording = tmp_path / "speaker.raw"
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(audio={"input": "pyaudio", "output": "pyaudio", "input_device": "pulse",
                                     "output_device": "pulse"})
        with open(recording, "wb") as out:
            parec = subprocess.Popen(["parec", "--device=speaker.monitor", "--raw", "--format=s16le",
                                      f"--rate={rate}", "--channels=1"], env=pulse, stdout=out)
            try:
                mic = PyAudioSource("pulse", sample_rate=rate)
                speaker = PyAudioSink("pulse", sample_rate=rate)
                async with stack.kiosk(config, mic=mic, speaker=speaker) as (kiosk, rec, _):
                    kiosk.press()
                    await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
                    # Play without blocking the loop: the kiosk must keep reading the microphone meanwhile.
                    paplay = await asyncio.create_subprocess_exec("paplay", "--device=micfeed", str(clip),
                                                                  env=pulse)
                    assert await asyncio.wait_for(paplay.wait(), 30) == 0
                    await rec.until(lambda: bool(rec.saved), what="the spoken stop ended the lesson")
                    assert kiosk.state is State.IDLE
                    sim_call = [*stack.simulator.calls.values(), *stack.simulator.ended_calls.values()][0]
            finally:
                parec.terminate()
                parec.wait(10)
    assert [t.text for t in rec.learner_turns()] == [LEARNER_LINES[1]]
    assert rec.saved[0][0]["end_reason"] == "voice_stop"
    # The greeting is the tutor audio that was played in full (the answer to "stop" is cut by the hang-up).
    greeting = next(e for e in sim_call.sent if e["type"] == "response.done")
    expected_s = greeting["response"]["usage"]["output_token_details"]["audio_tokens"] * 0.05
    played = np.frombuffer(recording.read_bytes(), dtype="<i2")
    audible_s = sum(rms_dbfs(played[i:i + 960]) > -45 for i in range(0, len(played) - 960, 960)) * 0.02
    assert 0.6 * expected_s <= audible_s <= 1.6 * expected_s, (audible_s, expected_s)
