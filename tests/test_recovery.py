"""Recovering from server failures mid-lesson, end to end against the simulator: a failed answer, a
dropped call on a server with one session slot, a prefetched token the server no longer accepts, and
what the learner sees and hears while a lesson is resumed."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

from appliance.audio.wav import read_wav
from appliance.call.webrtc import RealtimeCall
from appliance.core.state import State
from appliance.simulator.asr import DEFAULT_PHRASES
from tests.audio_helpers import tone_runs
from tests.harness import (
    LEARNER_LINES,
    LED_PINS,
    PinTape,
    Recorder,
    espeak,
    eventually,
    lesson_stack,
    logged_events,
)

SECOND_LINE = "I like to play football with my friends."
PHRASES = (*DEFAULT_PHRASES, *LEARNER_LINES, SECOND_LINE)


def tutor_quiet_after(rec: Recorder, turns: int) -> bool:
    """The tutor finished ``turns`` turns and has gone quiet after each."""
    return len(rec.tutor_turns()) >= turns and rec.audible.count(False) >= turns and rec.audible[-1] is False


def when(rec: Recorder, what: State | str, nth: int = 1) -> float:
    """The monotonic time of the ``nth`` ``what`` in the recorder's timeline."""
    times = [t for t, event in rec.timeline if event == what]
    assert len(times) >= nth, (what, rec.timeline)
    return times[nth - 1]


def error_cues(path: Path) -> int:
    """How many times the error cue (three 220 Hz notes, the last 0.3 s) is in a WAV the speaker wrote."""
    samples, rate = read_wav(path)
    return sum(1 for _at, length in tone_runs(samples, rate, 220.0) if length >= 0.33)


def failed_then_asked_again(tmp: Path) -> list[float]:
    """Seconds from each failed ``response.done`` to the next ``response.create`` the kiosk sent."""
    failed = [ts for ts, e in logged_events(tmp, "server")
              if e["type"] == "response.done" and e["response"]["status"] == "failed"]
    asked = [ts for ts, e in logged_events(tmp, "client") if e["type"] == "response.create"]
    return [min(ts for ts in asked if ts > at) - at for at in failed if any(ts > at for ts in asked)]


async def greeted(kiosk: Any, rec: Recorder) -> None:
    kiosk.press()
    await rec.until(lambda: tutor_quiet_after(rec, 1), what="the greeting")


async def saved_after_stop(kiosk: Any, rec: Recorder) -> dict[str, Any]:
    kiosk.request_stop()
    await rec.until(lambda: bool(rec.saved), what="lesson saved")
    return rec.saved[-1][0]


# -- a failed answer ----------------------------------------------------------------------------


async def test_a_failed_answer_is_asked_again_and_the_tutor_answers(tmp_path: Path) -> None:
    """Before: an answer that failed on the server (response.done "failed", server_error) in the middle
    of a lesson was neither retried nor reported: silence until the idle goodbye, the lesson ended
    "idle". Now the kiosk asks again after about a second and the tutor answers the learner."""
    clip = espeak(LEARNER_LINES[0], tmp_path / "learner.wav")
    async with lesson_stack(tmp_path, phrases=PHRASES) as stack, stack.kiosk() as (kiosk, rec, mic):
        await greeted(kiosk, rec)
        stack.simulator.faults.fail_next_response = {"status": "failed"}
        mic.say(clip)
        await rec.until(lambda: bool(rec.learner_turns()), what="the learner's turn")
        await rec.until(lambda: len(rec.tutor_turns()) >= 2, timeout=15, what="the tutor's answer")
        assert "Anna" in rec.tutor_turns()[1].text or "apples" in rec.tutor_turns()[1].text, rec.tutor_turns()
        record = await saved_after_stop(kiosk, rec)
    delays = failed_then_asked_again(tmp_path)
    assert len(delays) == 1 and 0.8 <= delays[0] <= 2.5, delays
    assert "response_failed" in [e["code"] for e in record["errors"]]
    assert record["end_reason"] == "stop_command"


async def test_an_answer_failing_twice_is_heard_as_the_error_cue_and_the_next_turn_is_answered(
        tmp_path: Path) -> None:
    """Before: failed answers were met with silence. Now, when the second try fails too, the learner
    hears the error cue (its 220 Hz notes are in what the speaker played) and the tutor answers the
    learner's next turn."""
    first = espeak(LEARNER_LINES[0], tmp_path / "first.wav")
    second = espeak(SECOND_LINE, tmp_path / "second.wav")
    async with lesson_stack(tmp_path, phrases=PHRASES) as stack:  # noqa: SIM117 - the config comes from the stack
        async with stack.kiosk(stack.config(audio={"cues": True})) as (kiosk, rec, mic):
            await greeted(kiosk, rec)
            stack.simulator.faults.fail_next_response = {"status": "failed", "times": 2}
            mic.say(first)
            await eventually(lambda: len(failed_then_asked_again(tmp_path)) >= 1
                             and not stack.simulator.faults.fail_next_response
                             and sum(e["type"] == "response.done" and e["response"]["status"] == "failed"
                                     for _ts, e in logged_events(tmp_path, "server")) == 2,
                             timeout=15, what="the answer and its second try failed")
            mic.say(second)
            await rec.until(lambda: any("football" in t.text for t in rec.tutor_turns()), timeout=15,
                            what="the answer to the next turn")
            await saved_after_stop(kiosk, rec)
    assert error_cues(tmp_path / "tutor.wav") == 1


# -- a dropped call on a server with one session slot ---------------------------------------------


async def test_resume_waits_for_the_session_slot_and_the_lesson_goes_on(tmp_path: Path) -> None:
    """Before: on a server with one session slot, a call that stalled for 4 s was resumed once, at once,
    and refused with 503 session_limit_reached (the old call still held the slot, freed 0.4 s later);
    the lesson ended. Now the resume is tried again after a pause (about 0, 1 and 3 s after the drop)
    and the lesson goes on on the new call."""
    async with lesson_stack(tmp_path, max_sessions=1, slot_release_s=0.4) as stack, \
            stack.kiosk() as (kiosk, rec, _mic):
        await greeted(kiosk, rec)
        kiosk.say("I like green apples")
        await rec.until(lambda: tutor_quiet_after(rec, 2), what="the answer")
        first = next(iter(stack.simulator.calls.values()))
        stack.simulator.freeze_calls(hear_client=True)  # the server stalls; the kiosk's hang-up reaches it
        await rec.until(lambda: State.DISCONNECTED in rec.states, timeout=10, what="the drop shown")
        await rec.until(lambda: rec.states.count(State.CONNECTED) >= 2, timeout=15, what="resumed")
        dropped_at, resumed_at = when(rec, State.DISCONNECTED), when(rec, State.CONNECTED, 2)
        refusals = list(stack.simulator.limit_refusals)
        assert first.ended.is_set() and len(stack.simulator.calls) == 1
        assert refusals and refusals[0] - dropped_at < 0.5, (refusals, dropped_at)  # tried at once
        assert 0.8 <= resumed_at - dropped_at <= 4.5, resumed_at - dropped_at
        await rec.until(lambda: tutor_quiet_after(rec, 3), what="the tutor back on the new call")
        kiosk.say("Are you still there?")
        await rec.until(lambda: tutor_quiet_after(rec, 4), what="an answer on the new call")
        record = await saved_after_stop(kiosk, rec)
    assert len(rec.saved) == 1 and record["end_reason"] == "stop_command"
    codes = [e["code"] for e in record["errors"]]
    assert codes.count("call_dropped") == 1 and "resume_failed" not in codes, codes


async def test_a_resume_refused_every_time_saves_the_lesson_as_dropped(tmp_path: Path) -> None:
    """Before: one resume try, at once. Now three tries, about 0, 1 and 3 s after the drop; when every
    one is refused the lesson is saved as call_dropped with resume_failed among its errors."""
    async with lesson_stack(tmp_path, max_sessions=1, slot_release_s=30.0) as stack, \
            stack.kiosk() as (kiosk, rec, _mic):
        await greeted(kiosk, rec)
        stack.simulator.freeze_calls(hear_client=True)
        await rec.until(lambda: State.DISCONNECTED in rec.states, timeout=10, what="the drop shown")
        await rec.until(lambda: bool(rec.saved), timeout=20, what="the lesson saved")
        dropped_at = when(rec, State.DISCONNECTED)
        refusals = list(stack.simulator.limit_refusals)
    record = rec.saved[0][0]
    assert record["end_reason"] == "call_dropped"
    assert {"call_dropped", "resume_failed"} <= {e["code"] for e in record["errors"]}
    offsets = [round(t - dropped_at, 2) for t in refusals]
    assert len(offsets) == 3 and offsets[0] < 0.5 and 0.8 <= offsets[1] <= 1.6 and offsets[2] <= 4.6, offsets
    assert all(b - a >= 0.8 for a, b in itertools.pairwise(refusals)), offsets  # a pause before each try


async def test_resume_tries_come_about_0_1_and_3_s_after_the_drop(tmp_path: Path) -> None:
    """The resume schedule as documented: tries about 0, 1 and 3 s after the drop (within 0.5 s each)."""
    async with lesson_stack(tmp_path, max_sessions=1, slot_release_s=30.0) as stack, \
            stack.kiosk() as (kiosk, rec, _mic):
        await greeted(kiosk, rec)
        stack.simulator.freeze_calls(hear_client=True)
        await rec.until(lambda: bool(rec.saved), timeout=25, what="the lesson saved")
        offsets = [t - when(rec, State.DISCONNECTED) for t in stack.simulator.limit_refusals]
    assert len(offsets) == 3 and all(abs(o - at) <= 0.5 for o, at in zip(offsets, (0.0, 1.0, 3.0), strict=True)), \
        [round(o, 2) for o in offsets]


# -- a token the server no longer accepts -------------------------------------------------------------


async def test_a_refused_prefetched_token_is_replaced_without_a_second_press(tmp_path: Path) -> None:
    """Before: the token fetched while idle was refused with 401 at the press (expired or revoked; here
    the server revokes every token it issued) and the learner heard the error cue and had to press
    again. Now the kiosk opens the call once more with a fresh token and the lesson starts from that
    one press, never showing an error."""
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        await eventually(lambda: stack.simulator.issued_tokens >= 1, what="a token fetched while idle")
        assert stack.simulator.revoke_tokens() == 1
        kiosk.press()
        await rec.until(lambda: State.CONNECTED in rec.states or State.ERROR in rec.states, what="the press's end")
        assert State.ERROR not in rec.states, rec.states
        await rec.until(lambda: tutor_quiet_after(rec, 1), what="the greeting")
        assert rec.states == [State.IDLE, State.CONNECTING, State.CONNECTED], rec.states
        assert stack.simulator.requests.count(("POST", "/v1/realtime/calls")) == 2
        record = await saved_after_stop(kiosk, rec)
    assert record["end_reason"] == "stop_command"


# -- what a resume looks and sounds like ---------------------------------------------------------------


class SlowNetworkCall(RealtimeCall):
    """A real call whose offer leaves a second late (a slow school network): a resume takes a while."""

    async def open(self, timeout_s: float) -> None:
        await asyncio.sleep(1.0)  # the slow network under test
        await super().open(timeout_s)


async def test_the_error_led_blinks_for_the_whole_resume_and_the_error_cue_plays(tmp_path: Path) -> None:
    """Before: a dropped call was shown as an error for 0 ms (error, then connecting at once): the error
    cue played but the error LED never lit. Now the disconnected state shows from the drop until the
    new call is up: the error LED blinks (0.25 s on, 0.25 s off) for the whole resume, then goes off,
    and the error cue plays once."""
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(audio={"cues": True})
        async with stack.kiosk(config, hardware=True, call_factory=SlowNetworkCall) as (kiosk, rec, _mic):
            assert stack.pins is not None
            await greeted(kiosk, rec)
            tape = PinTape(stack.pins)
            stack.simulator.freeze_calls()
            await rec.until(lambda: rec.states.count(State.CONNECTED) >= 2, timeout=25, what="resumed")
            dropped_at, resumed_at = when(rec, State.DISCONNECTED), when(rec, State.CONNECTED, 2)
            await saved_after_stop(kiosk, rec)
    assert resumed_at - dropped_at >= 1.0  # the slow network: a resume long enough to watch
    error = [(t, v) for t, v in tape.changes(LED_PINS.error) if dropped_at - 0.05 <= t <= resumed_at + 0.05]
    assert error and error[0][1] == 1.0 and abs(error[0][0] - dropped_at) <= 0.05, error[:4]
    edges = [t for (t, v), (_, before) in zip(error, [(0.0, 0.0), *error], strict=False) if v != before]
    intervals = [b - a for a, b in itertools.pairwise(edges)][:-1]  # the last is cut short by the reconnect
    assert len(intervals) >= 3 and all(0.15 <= i <= 0.4 for i in intervals), [round(i, 3) for i in intervals]
    assert tape.value_at(LED_PINS.error, resumed_at + 0.01) == 0.0
    assert tape.value_at(LED_PINS.connecting, (dropped_at + resumed_at) / 2) == 0.0  # not shown as a new lesson
    assert error_cues(tmp_path / "tutor.wav") == 1
