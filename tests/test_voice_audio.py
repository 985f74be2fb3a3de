"""The tutor's voice, heard: the simulator speaks each Realtime voice at its own pitch, and a whole lesson
over real WebRTC is heard in the voice the kiosk chose (measured on the audio the kiosk wrote to its
speaker WAV, not read from an event); a voice the model refuses falls back to the default, with a
warning, and the lesson goes on."""

from __future__ import annotations

import logging
import wave
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from appliance.audio.wav import ScriptedMicrophone
from appliance.common.net import enable_loopback_candidates
from appliance.contract.voices import DEFAULT_VOICE, VOICES
from appliance.core.state import State
from appliance.simulator.server import RealtimeSimulator, SimulatorConfig
from appliance.simulator.server import main as simulator_main
from appliance.simulator.voice import espeak_available, synthesize
from tests.audio_helpers import median_pitch_hz
from tests.harness import API_KEY, lesson_stack, logged_events, tutor_quiet_after
from tests.simulator_helpers import Client, mint

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is required (scripts/setup.sh)")

SENTENCE = "Hello! I am your English tutor. What fruit do you like to eat?"


async def pitches(text: str) -> dict[str, float]:
    """Each voice's median pitch saying ``text`` (as the simulator renders it)."""
    return {voice: median_pitch_hz(await synthesize(text, "espeak", voice), 48000) for voice in VOICES}


async def test_each_voice_speaks_at_its_own_pitch() -> None:
    heard = await pitches(SENTENCE)
    ladder = sorted(heard.values())
    assert all(high / low > 1.06 for low, high in pairwise(ladder)), heard


async def test_the_synthetic_voice_also_differs_per_voice() -> None:
    heard = {v: median_pitch_hz(await synthesize(SENTENCE, "synthetic", v), 48000) for v in VOICES}
    ladder = sorted(heard.values())
    assert all(high / low > 1.06 for low, high in pairwise(ladder)), heard


def tutor_audio(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        channels, rate = w.getnchannels(), w.getframerate()
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return samples, rate


async def heard_voice(wav: Path, text: str) -> tuple[str, float, dict[str, float]]:
    """The voice whose rendering of ``text`` is nearest in pitch to what the kiosk played."""
    samples, rate = tutor_audio(wav)
    played = median_pitch_hz(samples, rate)
    renderings = await pitches(text)
    nearest = min(renderings, key=lambda v: abs(np.log(renderings[v] / played)))
    return nearest, played, renderings


async def greeting_lesson(tmp: Path, voice: str, **simulator: object) -> tuple[dict, str]:
    """One lesson with ``[lesson] voice``: the greeting heard out, then the button ends it."""
    async with lesson_stack(tmp, **simulator) as stack, \
            stack.kiosk(stack.config(lesson={"voice": voice})) as (kiosk, rec, _):
        kiosk.press()
        await rec.until(lambda: State.CONNECTED in rec.states, what="connected")
        await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting heard")
        kiosk.press()
        await rec.until(lambda: bool(rec.saved), what="saved")
    record, _ = rec.saved[0]
    greeting = next(t["text"] for t in record["turns"] if t["role"] == "tutor")
    return record, greeting


@pytest.mark.parametrize("voice", ["shimmer", "cedar"])
async def test_the_lesson_is_heard_in_the_kiosks_voice(tmp_path: Path, voice: str) -> None:
    record, greeting = await greeting_lesson(tmp_path, voice)
    nearest, played, renderings = await heard_voice(tmp_path / "tutor.wav", greeting)
    assert nearest == voice, f"heard {played:.0f} Hz, nearest {nearest}; renderings {renderings}"
    assert record["voice"] == voice
    sent = [e for _, e in logged_events(tmp_path, "client") if e["type"] == "session.update"]
    assert sent[0]["session"]["audio"]["output"]["voice"] == voice


async def test_a_refused_voice_falls_back_to_the_default_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    record, greeting = await greeting_lesson(tmp_path, "ballad", refused_voices=frozenset({"ballad"}))
    # The lesson went on: the greeting was heard, in the default voice.
    nearest, played, renderings = await heard_voice(tmp_path / "tutor.wav", greeting)
    assert nearest == DEFAULT_VOICE, f"heard {played:.0f} Hz, nearest {nearest}; renderings {renderings}"
    assert record["voice"] == DEFAULT_VOICE
    refusals = [e for e in record["errors"] if e["code"] == "voice_refused"]
    assert len(refusals) == 1 and "ballad" in refusals[0]["message"] and DEFAULT_VOICE in refusals[0]["message"]
    assert any(r.levelno == logging.WARNING and "'ballad'" in r.getMessage() for r in caplog.records)
    server = [e for _, e in logged_events(tmp_path, "server") if e["type"] == "error"]
    assert server and server[0]["error"]["param"] == "session.audio.output.voice"
    sent = [e["session"]["audio"]["output"]["voice"] for _, e in logged_events(tmp_path, "client")
            if e["type"] == "session.update" and "output" in e["session"].get("audio", {})]
    assert sent == ["ballad", DEFAULT_VOICE]


async def test_the_simulator_refuses_unknown_and_refused_voices_and_applies_nothing_of_them(tmp_path: Path) -> None:
    enable_loopback_candidates()
    sim = RealtimeSimulator(SimulatorConfig(api_keys=frozenset({API_KEY}), refused_voices=frozenset({"ballad"})))
    await sim.start()
    mic = ScriptedMicrophone()
    await mic.start()
    client = Client(sim, await mint(sim), mic)  # the token's session speaks marin
    await client.call.open(10)
    try:
        await client.until("session.created")
        for n, voice in enumerate(("robot", "ballad"), 1):
            client.call.send({"type": "session.update", "event_id": f"evt_{voice}",
                              "session": {"type": "realtime", "instructions": "Changed.",
                                          "audio": {"output": {"voice": voice}}}})
            error = (await client.until("error", n)).data["error"]
            assert error["code"] == "invalid_value" and error["param"] == "session.audio.output.voice"
            assert error["event_id"] == f"evt_{voice}"
        call = next(iter(sim.calls.values()))
        assert call.speaker == "marin" and call.session["instructions"] == "Be Stella."  # nothing applied
        client.call.send({"type": "session.update",
                          "session": {"type": "realtime", "audio": {"output": {"voice": "sage"}}}})
        updated = (await client.until("session.updated")).data["session"]
        assert updated["audio"]["output"]["voice"] == "sage" and call.speaker == "sage"
    finally:
        await client.close()
        await mic.close()
        await sim.stop()


def test_the_refuse_voice_option_takes_only_ga_voices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        simulator_main(["--refuse-voice", "robot"])
    assert info.value.code == 2 and "--refuse-voice" in capsys.readouterr().err
