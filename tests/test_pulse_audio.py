"""A whole lesson through the real PortAudio path (PyAudio) and a private headless PulseAudio: the
learner's voice is played into a virtual microphone, the tutor is recorded off a virtual speaker.

The device-level checks (device choice, speaker and microphone alone, ring buffers) live in
tests/test_audio_pyaudio.py; this file only adds the lesson on top of them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from appliance.audio.dsp import rms_dbfs
from appliance.audio.pyaudio_backend import PyAudioSink, PyAudioSource
from tests.audio_helpers import PulseServer, pulse  # noqa: F401
from tests.harness import espeak


async def test_lesson_through_real_portaudio(pulse: PulseServer, tmp_path: Path) -> None:  # noqa: F811
    """Spoken WAV into the virtual mic reaches the simulator as speech; the tutor is recorded off the
    virtual speaker's monitor with the expected duration and energy."""
    from appliance.core.state import State
    from tests.harness import LEARNER_LINES, lesson_stack, tutor_quiet_after

    rate = 48000
    clip = espeak(LEARNER_LINES[1], tmp_path / "learner.wav")  # "Stop."
    recording = tmp_path / "speaker.raw"
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(audio={"input": "pyaudio", "output": "pyaudio", "input_device": "pulse",
                                     "output_device": "pulse"})
        parec = pulse.record(recording, rate=rate)
        try:
            mic = PyAudioSource("pulse", sample_rate=rate)
            speaker = PyAudioSink("pulse", sample_rate=rate)
            async with stack.kiosk(config, mic=mic, speaker=speaker) as (kiosk, rec, _):
                kiosk.press()
                await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
                # Play without blocking the loop: the kiosk must keep reading the microphone meanwhile.
                paplay = await asyncio.create_subprocess_exec("paplay", "--device=micfeed", str(clip),
                                                              env=pulse.env)
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
