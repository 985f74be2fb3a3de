"""Whole lessons over real WebRTC on loopback: kiosk ↔ simulator, kiosk ↔ companion."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai.types.realtime import RealtimeClientEvent
from pydantic import TypeAdapter

from appliance.audio.dsp import rms_dbfs
from appliance.core.state import State
from appliance.store.sessions import SessionStore
from tests.harness import KIOSK_ID, LEARNER_LINES, espeak, lesson_stack, tutor_quiet_after


async def test_whole_lesson_typed_and_spoken(tmp_path: Path) -> None:
    clip = espeak(LEARNER_LINES[0], tmp_path / "learner.wav")
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, mic):
        kiosk.press()
        await rec.until(lambda: State.CONNECTED in rec.states, what="connected")
        # The tutor speaks first (greeting), audibly.
        await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
        # A typed message is answered with a tutor turn.
        kiosk.say("What is the English word for manzana?")
        await rec.until(lambda: tutor_quiet_after(rec, 2), what="typed answer")
        # A spoken utterance becomes a learner voice turn and is answered.
        mic.say(clip)
        await rec.until(lambda: any(t.source == "voice" for t in rec.learner_turns()), what="learner turn")
        await rec.until(lambda: tutor_quiet_after(rec, 3), what="spoken answer")
        kiosk.press()
        await rec.until(lambda: bool(rec.saved), what="saved")
        assert kiosk.state is State.IDLE
        call_ids = [*stack.simulator.calls, *stack.simulator.ended_calls]
        async with httpx.AsyncClient() as http:
            listed = (await http.get(f"{stack.companion.base_url}/api/sessions",
                                     headers={"Authorization": f"Bearer {stack.device_key}"})).json()

    assert rec.states[:3] == [State.IDLE, State.CONNECTING, State.CONNECTED]
    assert rec.states[-2:] == [State.IDLE, State.STOPPING]  # the lesson ended idle, then the kiosk stopped
    record, synced = rec.saved[0]
    assert synced, "the companion did not confirm the session"
    assert record["end_reason"] == "button" and record["kiosk_id"] == KIOSK_ID
    roles = [(t["role"], t["source"]) for t in record["turns"]]
    spoken = [t["text"] for t in record["turns"] if t["role"] == "learner" and t["source"] == "voice"]
    assert spoken == [LEARNER_LINES[0]]  # recognised by the simulator from the audio
    assert roles.count(("learner", "text")) == 1 and roles.count(("learner", "voice")) == 1
    assert roles.count(("tutor", "voice")) >= 3
    assert record["metrics"]["connect_ms"] > 0 and record["metrics"]["first_audio_ms"] > record["metrics"]["connect_ms"]
    assert record["metrics"]["usage"]["output_audio_tokens"] > 0

    # Saved locally, marked synced, received by the companion exactly once.
    stored = [d for d in SessionStore(tmp_path / "state").documents() if d["session_id"] == record["session_id"]]
    assert len(stored) == 1 and stored[0]["state"] == "synced"
    sessions = listed["sessions"]
    assert [s["session_id"] for s in sessions].count(record["session_id"]) == 1

    # The tutor's audio reached the speaker sink and is not silence.
    with wave.open(str(tmp_path / "tutor.wav")) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        rate = w.getframerate()
    loud = [rms_dbfs(audio[i:i + rate // 10]) for i in range(0, len(audio) - rate // 10, rate // 10)]
    assert sum(level > -40 for level in loud) >= 10, "less than a second of audible tutor speech"

    # Every client event the kiosk sent is a valid GA event.
    adapter = TypeAdapter(RealtimeClientEvent)
    logged = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    sent = [entry["event"] for entry in logged if entry.get("call_id") in call_ids and entry["direction"] == "client"]
    assert {e["type"] for e in sent} >= {"response.create", "conversation.item.create"}
    for event in sent:
        adapter.validate_python(event)


async def test_saying_stop_ends_the_lesson(tmp_path: Path) -> None:
    stop = espeak(LEARNER_LINES[1], tmp_path / "stop.wav")
    async with lesson_stack(tmp_path) as stack:  # noqa: SIM117 - the kiosk's config comes from the stack
        # No echo tail: the learner answers the moment the tutor is quiet, and "stop" is short.
        async with stack.kiosk(stack.config(audio={"echo_tail_ms": 0})) as (kiosk, rec, mic):
            kiosk.press()
            await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
            mic.say(stop)
            await rec.until(lambda: bool(rec.saved), what="lesson saved after 'stop'")
    record = rec.saved[0][0]
    assert record["end_reason"] == "voice_stop"
    assert record["turns"][-1] == {**record["turns"][-1], "role": "learner", "text": "Stop.", "source": "voice"}


async def test_press_while_connecting_is_ignored_and_second_press_ends(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        kiosk.press()
        kiosk.press()  # impatient double press: must not cancel the lesson
        await rec.until(lambda: State.CONNECTED in rec.states)
        assert rec.states.count(State.CONNECTING) == 1
        kiosk.press()
        await rec.until(lambda: bool(rec.saved))
        assert rec.saved[0][0]["end_reason"] == "button"


async def test_companion_down_gives_error_then_idle(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(companion={"url": "http://127.0.0.1:9", "timeout_s": 2.0})
        async with stack.kiosk(config) as (kiosk, rec, _mic):
            kiosk.press()
            await rec.until(lambda: State.ERROR in rec.states, timeout=10)
            await rec.until(lambda: rec.states[-1] is State.IDLE, timeout=10)
            assert State.CONNECTED not in rec.states
            assert not rec.saved


async def test_refused_token_is_a_clear_error(tmp_path: Path) -> None:
    from appliance.call.webrtc import CallError, RealtimeCall

    async with lesson_stack(tmp_path) as stack:
        call = RealtimeCall(stack.simulator.base_url, "ek_not_a_real_token", lambda n: np.zeros(n, np.int16),
                            on_event=lambda e: None, on_remote_track=lambda t: None, on_closed=lambda r: None)
        with pytest.raises(CallError) as info:
            await call.open(10)
        assert info.value.status == 401 and not info.value.retryable
        assert "refused" in info.value.message


async def test_time_limit_ends_the_lesson(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(lesson={"max_minutes": 0.1, "greeting": False})
        async with stack.kiosk(config) as (kiosk, rec, _mic):
            kiosk.press()
            await rec.until(lambda: bool(rec.saved), timeout=30)
            assert rec.saved[0][0]["end_reason"] == "time_limit"


async def test_shutdown_mid_lesson_saves_it(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:
        async with stack.kiosk() as (kiosk, rec, _mic):
            kiosk.press()
            await rec.until(lambda: State.CONNECTED in rec.states)
        # leaving the context shut the kiosk down
        reasons = [r["end_reason"] for r in SessionStore(tmp_path / "state").records()]
        assert reasons == ["shutdown"]

