"""The kiosk's side of the Realtime protocol on a live loopback call, against servers that misbehave:
config ignored in the token, failed and incomplete responses, failed transcriptions, barge-in, short
holds, the server's own session limit."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import TypeAdapter

from appliance.core.state import State
from appliance.core.transcript import NOT_UNDERSTOOD
from appliance.daemon.control import ControlServer, send_command
from tests.harness import LEARNER_LINES, Recorder, espeak, inject, lesson_stack, simulated_call, tutor_quiet_after

CLIENT = TypeAdapter(RealtimeClientEvent)
SERVER = TypeAdapter(RealtimeServerEvent)


def assert_server_events_valid(stack: Any) -> None:
    """Every event the simulator sent, its fault switches' included, is a valid GA server event."""
    calls = [*stack.simulator.calls.values(), *stack.simulator.ended_calls.values()]
    assert calls
    for call in calls:
        for event in call.sent:
            SERVER.validate_python(event)


def client_events(tmp_path: Path) -> list[dict[str, Any]]:
    """What the kiosk sent, from the simulator's event log (which records both directions)."""
    entries = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    return [entry["event"] for entry in entries if entry.get("direction") == "client"]


async def saved(kiosk: Any, rec: Recorder, reason_stop: bool = True) -> dict[str, Any]:
    if reason_stop:
        kiosk.request_stop()
    await rec.until(lambda: bool(rec.saved), what="lesson saved")
    return rec.saved[0][0]


async def test_greeting_when_the_server_ignores_the_token_config(tmp_path: Path) -> None:
    """Against a server that ignores token-embedded config, a bare response.create was refused ("no
    instructions and no input") and the learner had to speak first. The kiosk now sends the session
    it holds, waits for session.updated and greets: the greeting follows the lesson's instructions."""
    async with lesson_stack(tmp_path, ignore_token_config=True) as stack, stack.kiosk() as (kiosk, rec, _mic):
        kiosk.press()
        await rec.until(lambda: tutor_quiet_after(rec, 1), timeout=15, what="greeting with no learner speech")
        greeting = rec.tutor_turns()[0].text
        record = await saved(kiosk, rec)
    assert "Today we will practise" in greeting, greeting  # the session's instructions reached the server
    assert record["metrics"]["first_audio_ms"] < 8000
    assert not [e for e in record["errors"] if "instructions" in e["message"]]
    sent = client_events(tmp_path)
    types = [e["type"] for e in sent]
    assert types.index("session.update") < types.index("response.create")
    update = sent[types.index("session.update")]["session"]
    assert update["instructions"] and update["audio"]["output"]["voice"] == "marin"
    assert update["audio"]["input"]["transcription"]["model"]
    assert update["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    for event in sent:
        CLIENT.validate_python(event)


async def test_a_failed_greeting_is_asked_for_once_more(tmp_path: Path) -> None:
    """A greeting whose response failed left the kiosk silent until the learner spoke."""
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        stack.simulator.faults.fail_next_response = {"status": "failed"}
        kiosk.press()
        await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting after the retry")
        record = await saved(kiosk, rec)
    assert [e["type"] for e in client_events(tmp_path)].count("response.create") == 2
    assert [e["code"] for e in record["errors"]] == ["response_failed"]
    assert_server_events_valid(stack)


async def test_incomplete_response_is_marked_and_the_lesson_goes_on(tmp_path: Path) -> None:
    """An incomplete response was saved as a normal tutor turn and its reason never recorded."""
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        kiosk.press()
        await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
        stack.simulator.faults.fail_next_response = {"status": "incomplete", "reason": "max_output_tokens"}
        kiosk.say("Tell me a long story, please.")
        await rec.until(lambda: tutor_quiet_after(rec, 2), what="cut-off answer")
        kiosk.say("What is the word for manzana?")
        await rec.until(lambda: tutor_quiet_after(rec, 3), what="the next answer")
        record = await saved(kiosk, rec)
    tutor = [t for t in record["turns"] if t["role"] == "tutor"]
    assert_server_events_valid(stack)
    assert [t.get("status") for t in tutor] == [None, "incomplete", None]
    assert [(e["code"], e["message"]) for e in record["errors"]] == [("response_incomplete", "max_output_tokens")]
    assert record["end_reason"] == "stop_command"


async def test_quota_failure_ends_the_lesson_with_the_error_cue(tmp_path: Path) -> None:
    """A response failed for quota went unnoticed: every later response failed the same way. (Each quota
    code and its end reason: tests/test_conversation.py; one of them here, through a real lesson.)"""
    code, reason = "insufficient_quota", "quota_exceeded"
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        kiosk.press()
        await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
        stack.simulator.faults.fail_next_response = {
            "status": "failed", "error": {"type": "invalid_request_error", "code": code, "message": "You exceeded "
                                          "your current quota, please check your plan and billing details."}}
        kiosk.say("Hello?")
        record = await saved(kiosk, rec, reason_stop=False)
        await rec.until(lambda: kiosk.state is State.IDLE, what="idle after the error")
    assert_server_events_valid(stack)
    assert record["end_reason"] == reason
    assert State.ERROR in rec.states
    assert record["errors"][-1]["code"] == "response_failed" and code in record["errors"][-1]["message"]


async def test_failed_transcription_keeps_the_learner_turn(tmp_path: Path) -> None:
    """A transcription failure made the learner's turn vanish (a spoken "stop" could be lost)."""
    clip = espeak(LEARNER_LINES[0], tmp_path / "learner.wav")
    async with lesson_stack(tmp_path) as stack:  # noqa: SIM117 - the kiosk's config comes from the stack
        async with stack.kiosk(stack.config(audio={"echo_tail_ms": 0})) as (kiosk, rec, mic):
            kiosk.press()
            await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
            stack.simulator.faults.fail_next_transcription = {"message": "Audio could not be decoded."}
            mic.say(clip)
            await rec.until(lambda: bool(rec.learner_turns()), what="learner turn")
            record = await saved(kiosk, rec)
    assert_server_events_valid(stack)
    learner = [t for t in record["turns"] if t["role"] == "learner"]
    assert learner == [{**learner[0], "text": NOT_UNDERSTOOD, "status": "failed", "source": "voice"}]
    assert ("transcription_failed", "Audio could not be decoded.") in [(e["code"], e["message"])
                                                                      for e in record["errors"]]
    assert record["metrics"]["learner_words"] == 0


async def played_at_least(kiosk: Any, seconds: float, timeout: float = 15.0) -> None:
    """Wait until the speaker has played ``seconds`` of audible tutor speech."""
    async with asyncio.timeout(timeout):
        while kiosk.parts.speaker.pump is None or kiosk.parts.speaker.pump.audible_s < seconds:
            await asyncio.sleep(0.02)


async def test_barge_in_truncates_to_what_was_played(tmp_path: Path) -> None:
    """A barge-in left the model believing the learner heard the whole answer, saved the full text,
    and cancelled a response that had already finished (a response_cancel_not_active error)."""
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        kiosk.press()
        await played_at_least(kiosk, 1.0)
        full = rec.tutor_turns()[0].text
        kiosk.press()  # interrupts the greeting
        kiosk.release()
        await rec.until(lambda: rec.audible[-1] is False, what="tutor silenced")
        call = simulated_call(stack)
        await rec.until(lambda: bool(call.truncated), what="truncate at the server")
        kiosk.say("Sorry, go on.")
        await rec.until(lambda: tutor_quiet_after(rec, 2), what="the lesson goes on")
        record = await saved(kiosk, rec)
    spoken = next(e for e in call.sent if e["type"] == "response.output_item.added")["item"]["id"]
    item_ms = call.generated_ms[spoken]
    assert_server_events_valid(stack)
    assert list(call.truncated) == [spoken]
    assert 900 <= call.truncated[spoken] < item_ms - 300, (call.truncated, item_ms)
    heard = next(t for t in record["turns"] if t["role"] == "tutor")
    assert heard["interrupted"] is True
    assert 0 < len(heard["text"].split()) < len(full.split())
    types = [e["type"] for e in client_events(tmp_path)]
    assert "response.cancel" not in types  # the greeting's response had already finished
    assert "response_cancel_not_active" not in {e["code"] for e in record["errors"]}
    for event in client_events(tmp_path):
        CLIENT.validate_python(event)


async def test_too_short_hold_sends_no_turn(tmp_path: Path) -> None:
    """A hold with almost no audio still committed and asked for a response (the server refuses the
    commit, and the tutor answered nothing)."""
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(button={"mode": "hold"})
        async with stack.kiosk(config) as (kiosk, rec, _mic):
            kiosk.press()
            kiosk.release()
            await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
            kiosk.press()
            kiosk.release()  # a tap: no audio captured
            kiosk.say("Hello!")
            await rec.until(lambda: tutor_quiet_after(rec, 2), what="answer to the typed line")
            record = await saved(kiosk, rec)
    types = [e["type"] for e in client_events(tmp_path)]
    assert "input_audio_buffer.commit" not in types
    assert types.count("response.create") == 2  # the greeting and the typed line
    assert not [e for e in record["errors"] if e["code"] == "input_audio_buffer_commit_empty"]


async def test_server_session_limit_has_its_own_end_reason(tmp_path: Path) -> None:
    """The server's session_expired was recorded as the kiosk's own time_limit."""
    async with lesson_stack(tmp_path, max_session_s=2.0) as stack, stack.kiosk() as (kiosk, rec, _mic):
        kiosk.press()
        record = await saved(kiosk, rec, reason_stop=False)
    assert record["end_reason"] == "session_expired"


async def test_control_socket_press_interrupts_and_the_lesson_goes_on(tmp_path: Path) -> None:
    """`press` over the control socket never released: interrupting the tutor became a long press
    that ended the lesson. `stop` was recorded as a button press."""
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(button={"long_press_s": 0.5})
        async with stack.kiosk(config) as (kiosk, rec, _mic):
            server = ControlServer(tmp_path / "control.sock", kiosk)
            await server.start()
            try:
                assert (await send_command(server.path, {"command": "press"}))["ok"]
                await played_at_least(kiosk, 0.5)
                assert (await send_command(server.path, {"command": "press"}))["ok"]  # barge-in
                await rec.until(lambda: rec.audible[-1] is False, what="tutor silenced")
                kiosk.say("Please ask me a question.")
                await rec.until(lambda: tutor_quiet_after(rec, 2), what="answer (lesson still on)")
                assert kiosk.state is State.CONNECTED and not rec.saved
                bad = await send_command(server.path, {"command": "hold", "seconds": "long"})
                assert not bad["ok"] and "seconds" in bad["error"]
                assert (await send_command(server.path, {"command": "stop"}))["ok"]
                await rec.until(lambda: bool(rec.saved), what="saved")
            finally:
                await server.stop()
    assert rec.saved[0][0]["end_reason"] == "stop_command"


async def test_control_socket_hold_is_a_long_press(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(button={"long_press_s": 0.5})
        async with stack.kiosk(config) as (kiosk, rec, _mic):
            server = ControlServer(tmp_path / "control.sock", kiosk)
            await server.start()
            try:
                assert (await send_command(server.path, {"command": "press"}))["ok"]
                await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
                assert (await send_command(server.path, {"command": "hold", "seconds": 1.0}))["ok"]
                await rec.until(lambda: bool(rec.saved), what="saved after the long press")
            finally:
                await server.stop()
    assert rec.saved[0][0]["end_reason"] == "button"


async def test_cost_from_duration_when_usage_has_no_details(tmp_path: Path) -> None:
    """A server whose usage has no per-token-type details gave an estimated cost of $0.
    Mutation seen failing: tutor audio counted at 600 tokens/min instead of 1200."""
    clip = espeak(LEARNER_LINES[0], tmp_path / "learner.wav")
    async with lesson_stack(tmp_path) as stack:  # noqa: SIM117 - the kiosk's config comes from the stack
        async with stack.kiosk(stack.config(audio={"echo_tail_ms": 0})) as (kiosk, rec, mic):
            stack.simulator.faults.usage_without_details = True
            kiosk.press()
            await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
            mic.say(clip)
            await rec.until(lambda: tutor_quiet_after(rec, 2), what="answer")
            record = await saved(kiosk, rec)
    metrics = record["metrics"]
    assert metrics["cost_estimated_from"] == "duration"
    assert metrics["usage"]["output_audio_tokens"] == 0
    assert 1.5 < metrics["learner_audio_s"] < 8 and metrics["tutor_audio_s"] > 3
    # By hand, from OpenAI's published figures (https://openai.com/api/pricing/ and the Realtime cost guide):
    # user audio is 1 token per 100 ms at $10/1M, tutor audio 1 token per 50 ms at $20/1M (gpt-realtime-mini).
    # The record's durations are rounded; the cost was computed before rounding: equal to within a micro-dollar.
    expected = (metrics["learner_audio_s"] * 10 * 10.0 + metrics["tutor_audio_s"] * 20 * 20.0) / 1e6
    assert expected > 0 and metrics["est_cost_usd"] == pytest.approx(expected, abs=2e-6)


async def test_unknown_event_types_are_logged_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        caplog.set_level(logging.DEBUG, logger="appliance.core")
        kiosk.press()
        await rec.until(lambda: kiosk.state is State.CONNECTED, what="connected")
        for _ in range(3):
            inject(stack, json.dumps({"type": "response.brand_new_thing", "event_id": "e1"}))
        inject(stack, json.dumps({"type": "response.output_audio_transcript.done", "response_id": "r_mark",
                                  "item_id": "i_mark", "transcript": "marker"}))
        await rec.until(lambda: any(t.text == "marker" for t in rec.turns), what="marker turn")
        await saved(kiosk, rec)
    lines = [r for r in caplog.records if "response.brand_new_thing" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert not [r for r in caplog.records if "unknown Realtime event" in r.getMessage()
                and "session" in r.getMessage()]
