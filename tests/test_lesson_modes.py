"""Button modes, barge-in and lesson limits, end to end against the simulator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from appliance.core.state import State
from tests.harness import LEARNER_LINES, espeak, lesson_stack, tutor_quiet_after


def client_events(tmp_path: Path) -> list[dict]:
    entries = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    return [entry["event"] for entry in entries if entry["direction"] == "client"]


async def test_press_while_tutor_speaks_interrupts_it(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        kiosk.press()
        await rec.until(lambda: rec.audible[:1] == [True], what="greeting audible")
        kiosk.press()  # barge-in, not the end of the lesson
        await rec.until(lambda: rec.audible[-1] is False, what="tutor silenced")
        types = [e["type"] for e in client_events(tmp_path)]
        assert "output_audio_buffer.clear" in types and "conversation.item.truncate" in types
        assert kiosk.state is State.CONNECTED and not rec.saved
        kiosk.press()  # the tutor is quiet now: this press ends the lesson
        await rec.until(lambda: bool(rec.saved))
        assert rec.saved[0][0]["end_reason"] == "button"


async def test_hold_to_talk(tmp_path: Path) -> None:
    clip = espeak(LEARNER_LINES[0], tmp_path / "learner.wav")
    async with lesson_stack(tmp_path) as stack:
        # A long press is 1 s here: the 3 s spoken turn must not end the lesson.
        config = stack.config(button={"mode": "hold", "long_press_s": 1.0})
        async with stack.kiosk(config) as (kiosk, rec, mic):
            kiosk.press()
            kiosk.release()
            await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
            mic.say(clip)  # spoken while the button is NOT held: the tutor must not hear it
            await asyncio.wait_for(mic.wait_idle(), 20)
            kiosk.press()
            mic.say(clip)
            await asyncio.wait_for(mic.wait_idle(), 20)
            kiosk.release()
            await rec.until(lambda: bool(rec.learner_turns()), what="learner turn")
            await rec.until(lambda: tutor_quiet_after(rec, 2), what="answer")
            assert [t.text for t in rec.learner_turns()] == [LEARNER_LINES[0]]
    events = client_events(tmp_path)
    updates = [e for e in events if e["type"] == "session.update"]
    assert updates and updates[0]["session"]["audio"]["input"]["turn_detection"] is None
    types = [e["type"] for e in events]
    assert types.count("input_audio_buffer.commit") == 1
    assert types.index("input_audio_buffer.clear") < types.index("input_audio_buffer.commit")


async def test_long_press_ends_the_lesson(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(button={"mode": "hold", "long_press_s": 0.5})
        async with stack.kiosk(config) as (kiosk, rec, _mic):
            kiosk.press()
            kiosk.release()
            await rec.until(lambda: State.CONNECTED in rec.states)
            kiosk.press()  # held silently, never released
            await rec.until(lambda: bool(rec.saved), what="long press end")
            assert rec.saved[0][0]["end_reason"] == "button"


async def test_idle_learner_gets_a_goodbye_and_the_lesson_ends(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:  # noqa: SIM117
        async with stack.kiosk(stack.config(lesson={"idle_limit_s": 5})) as (kiosk, rec, _mic):
            kiosk.press()
            await rec.until(lambda: bool(rec.saved), timeout=30, what="idle end")
    record = rec.saved[0][0]
    assert record["end_reason"] == "idle"
    assert "goodbye" in record["turns"][-1]["text"].lower()
    notes = [e for e in client_events(tmp_path) if e["type"] == "conversation.item.create"
             and e["item"]["role"] == "system"]
    assert notes and "silent" in notes[0]["item"]["content"][0]["text"]


async def test_time_limit_wraps_up_first(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:  # noqa: SIM117
        async with stack.kiosk(stack.config(lesson={"max_minutes": 0.2})) as (kiosk, rec, _mic):
            kiosk.press()
            await rec.until(lambda: bool(rec.saved), timeout=30, what="time limit")
    record = rec.saved[0][0]
    assert record["end_reason"] == "time_limit"
    notes = [e["item"]["content"][0]["text"] for e in client_events(tmp_path)
             if e["type"] == "conversation.item.create" and e["item"]["role"] == "system"]
    assert notes and "wrap up" in notes[0].lower()
    assert "goodbye" in record["turns"][-1]["text"].lower()  # the wrap-up answer was spoken


async def test_no_companion_is_heard_not_just_seen(tmp_path: Path) -> None:
    """A learner with no screen hears the error cue when the kiosk cannot reach the companion."""
    from appliance.audio.dsp import rms_dbfs
    from appliance.audio.wav import read_wav

    async with lesson_stack(tmp_path) as stack:
        config = stack.config(companion={"url": "http://127.0.0.1:9", "timeout_s": 1.0}, audio={"cues": True})
        async with stack.kiosk(config) as (kiosk, rec, _mic):
            ready_samples = kiosk.parts.speaker.sink.samples_written  # the ready chime
            kiosk.press()
            await rec.until(lambda: State.ERROR in rec.states, what="error")
            error_samples = kiosk.parts.speaker.sink.samples_written - ready_samples
    samples, rate = read_wav(tmp_path / "tutor.wav")
    assert 0.5 < error_samples / rate < 1.0  # the three low notes
    assert rms_dbfs(samples[-error_samples:]) > -30


async def test_barge_in_also_drops_what_the_speaker_still_has_queued(tmp_path: Path) -> None:
    from appliance.audio.wav import WavFileSink

    class QueueingSpeaker(WavFileSink):
        cleared = 0

        def clear(self) -> None:
            self.cleared += 1

    async with lesson_stack(tmp_path) as stack:
        speaker = QueueingSpeaker(tmp_path / "tutor.wav", 48000)
        async with stack.kiosk(speaker=speaker) as (kiosk, rec, _mic):
            kiosk.press()
            await rec.until(lambda: rec.audible[:1] == [True], what="greeting audible")
            kiosk.press()
            await rec.until(lambda: rec.audible[-1] is False, what="tutor silenced")
    assert speaker.cleared == 1
