"""Interrupting the tutor, end to end against the simulator: which item is cut, where, and what the
lesson record keeps, on an OpenAI-like server and on a third-party server that sends no
``output_audio_buffer.*`` nor ``response.output_item.*`` events and streams its answers sentence by
sentence.

The simulator refuses a truncate the way OpenAI does (``invalid_value`` for an item not played yet or
a cut beyond the audio played), so a wrong truncate shows up as a server error here.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from appliance.core.state import State
from appliance.simulator.call import SimulatedCall
from appliance.simulator.tutor import reply
from tests.harness import LEARNER_LINES, Recorder, Stack, espeak, eventually, lesson_stack

HEARD_TOLERANCE_MS = 250
"""A truncate names what the learner heard: at most what the server played, and at most this much less
(the jitter buffer and the network, ~80–120 ms on loopback, plus the speaker noticing the sound)."""
SENTENCE_PAUSE_S = 1.2
"""The third-party server's silence between sentences: well over the speaker's 0.3 s hangover."""
THIRD_PARTY = {"audio_buffer_events": False, "item_events": False, "sentence_pause_s": SENTENCE_PAUSE_S}
"""A server that sends no ``output_audio_buffer.*`` and no ``response.output_item.*`` events (the tutor's item
is named only by its content and transcript events) and streams each answer sentence by sentence."""


def tutor_answer(learner_text: str) -> str:
    """The whole answer the simulated tutor gives to the learner's first turn (its rules are fixed)."""
    return reply(learner_text, 1)


def the_call(stack: Stack) -> SimulatedCall:
    calls = list(stack.simulator.calls.values())
    assert len(calls) == 1, calls
    return calls[0]


def sent(call: SimulatedCall, event_type: str) -> list[dict[str, Any]]:
    return [e for e in call.sent if e["type"] == event_type]


def received(call: SimulatedCall, event_type: str) -> list[dict[str, Any]]:
    return [e for e in call.received if e["type"] == event_type]


def responses(call: SimulatedCall) -> list[str]:
    """Ids of the responses the server created, in order."""
    return [e["response"]["id"] for e in sent(call, "response.created")]


def item_of(call: SimulatedCall, response_id: str) -> str:
    return next(e["item_id"] for e in sent(call, "response.content_part.added") if e["response_id"] == response_id)


def status_of(call: SimulatedCall, response_id: str) -> str | None:
    done = [e for e in sent(call, "response.done") if e["response"]["id"] == response_id]
    return done[0]["response"]["status"] if done else None


def server_errors(call: SimulatedCall) -> list[dict[str, Any]]:
    return [e["error"] for e in sent(call, "error")]


async def connected_with_greeting_audible(stack: Stack, kiosk: Any, rec: Recorder) -> SimulatedCall:
    kiosk.press()
    await rec.until(lambda: rec.audible[:1] == [True], what="greeting audible")
    return the_call(stack)


async def greeting_heard_out(call: SimulatedCall, rec: Recorder) -> None:
    """The server has played the whole greeting and the kiosk's speaker has gone quiet after it."""
    await eventually(lambda: status_of(call, responses(call)[0]) and not call.speaking, timeout=30,
                     what="the greeting played out")
    await rec.until(lambda: rec.audible[-1] is False, what="the speaker quiet after the greeting")


async def typed_answer_audible(stack: Stack, kiosk: Any, rec: Recorder) -> SimulatedCall:
    """A lesson whose greeting was heard out, then a typed message whose answer is now audible."""
    call = await connected_with_greeting_audible(stack, kiosk, rec)
    await greeting_heard_out(call, rec)
    heard_before = len(rec.audible)
    kiosk.say("I like green apples")
    await rec.until(lambda: len(rec.audible) > heard_before and rec.audible[-1] is True, what="answer audible")
    return call


async def saved_after_stop(kiosk: Any, rec: Recorder) -> dict[str, Any]:
    kiosk.request_stop()
    await rec.until(lambda: bool(rec.saved), what="lesson saved")
    return rec.saved[0][0]


async def test_barge_in_after_a_typed_message_truncates_the_greeting_being_heard(tmp_path: Path) -> None:
    """Before: a message typed while the greeting played, then a press, truncated the typed message's
    answer (not yet audible) at 0 ms; the server refused it (invalid_value), the greeting actually playing
    was never cut nor marked interrupted, and the refusal went into the lesson record. Now the active
    answer is cancelled, the greeting is truncated at what was heard, and the record keeps the greeting
    as an interrupted turn with no server error."""
    # The model "thinks" 2 s before each answer's audio: the typed message's answer is still active
    # (named, not audible) when the learner presses during the greeting.
    async with lesson_stack(tmp_path, response_delay_s=2.0) as stack, stack.kiosk() as (kiosk, rec, _mic):
        call = await connected_with_greeting_audible(stack, kiosk, rec)
        greeting = responses(call)[0]
        kiosk.say("I like green apples")
        answer = await eventually(lambda: responses(call)[1:2] and responses(call)[1], what="the answer created")
        await eventually(lambda: any(e["response_id"] == answer for e in sent(call, "response.output_item.added")),
                         what="the answer's item named")
        await asyncio.sleep(0.2)  # the learner presses a moment later
        assert rec.audible[-1] is True and status_of(call, answer) is None, "press not while the greeting plays"
        kiosk.press()
        await rec.until(lambda: rec.audible[-1] is False, what="the greeting cut off")
        truncate = (await eventually(lambda: received(call, "conversation.item.truncate"), what="a truncate"))[0]
        await eventually(lambda: sent(call, "conversation.item.truncated") or server_errors(call),
                         what="the server's answer to the truncate")
        assert server_errors(call) == []
        assert truncate["item_id"] == item_of(call, greeting), (truncate, item_of(call, answer))
        played = call.played_ms[item_of(call, greeting)]
        assert played - HEARD_TOLERANCE_MS <= truncate["audio_end_ms"] <= played, (truncate["audio_end_ms"], played)
        assert [e["response_id"] for e in received(call, "response.cancel")] == [answer]
        assert kiosk.state is State.CONNECTED
        record = await saved_after_stop(kiosk, rec)
    tutor = [t for t in record["turns"] if t["role"] == "tutor"]
    assert tutor[0].get("interrupted") is True and tutor[0]["text"].endswith("…"), tutor
    full_greeting = next(e["transcript"] for e in sent(call, "response.output_audio_transcript.done")
                         if e["response_id"] == greeting)
    assert len(tutor[0]["text"].split()) < len(full_greeting.split())
    assert not [e for e in record["errors"] if "invalid_value" in str(e)], record["errors"]


async def test_press_in_a_pause_of_a_streamed_answer_interrupts_it(tmp_path: Path) -> None:
    """Before: on a server that sends no output_audio_buffer events (THIRD_PARTY) and streams its answer
    sentence by sentence, a press in the silence between two sentences ended the lesson (end reason "button")
    although the server was still generating the answer. Now the press interrupts: the response is
    cancelled, the item heard is truncated within what was played, and the lesson goes on."""
    async with lesson_stack(tmp_path, **THIRD_PARTY) as stack, stack.kiosk() as (kiosk, rec, _mic):
        call = await connected_with_greeting_audible(stack, kiosk, rec)
        greeting = responses(call)[0]
        await rec.until(lambda: rec.audible[-2:] == [True, False], what="the pause after the first sentence")
        assert status_of(call, greeting) is None, "the greeting ended before its pause"
        kiosk.press()
        await eventually(lambda: received(call, "response.cancel") or rec.saved, what="the press handled")
        assert not rec.saved, rec.saved[0][0]["end_reason"]
        assert [e["response_id"] for e in received(call, "response.cancel")] == [greeting]
        await eventually(lambda: status_of(call, greeting), what="the greeting's end")
        assert status_of(call, greeting) == "cancelled"
        assert server_errors(call) == []
        truncates = received(call, "conversation.item.truncate")
        assert [t["item_id"] for t in truncates] == [item_of(call, greeting)]
        assert truncates[0]["audio_end_ms"] <= call.played_ms[item_of(call, greeting)]
        assert kiosk.state is State.CONNECTED
        record = await saved_after_stop(kiosk, rec)
    assert record["end_reason"] == "stop_command"


async def test_learner_audio_in_a_pause_of_a_streamed_answer_is_not_sent(tmp_path: Path) -> None:
    """Before: the half-duplex gate opened in every pause of a streamed answer (the speaker was quiet),
    so the tutor's own pauses let the room into the call and the server took it for the learner
    interrupting. Now the microphone stays closed until the answer is over: the server hears no speech
    while the response is active and the answer completes."""
    clip = espeak(LEARNER_LINES[0], tmp_path / "learner.wav")
    async with lesson_stack(tmp_path, **THIRD_PARTY) as stack, stack.kiosk() as (kiosk, rec, mic):
        call = await connected_with_greeting_audible(stack, kiosk, rec)
        greeting = responses(call)[0]
        await rec.until(lambda: rec.audible[-2:] == [True, False], what="the pause after the first sentence")
        assert status_of(call, greeting) is None, "the greeting ended before its pause"
        mic.say(clip)  # ~3 s of speech in the room, starting in the pause
        await eventually(lambda: status_of(call, greeting), timeout=30, what="the greeting's end")
        assert status_of(call, greeting) == "completed"
        done_at = call.sent.index(next(e for e in sent(call, "response.done") if e["response"]["id"] == greeting))
        heard = [i for i, e in enumerate(call.sent) if e["type"] == "input_audio_buffer.speech_started"]
        assert not [i for i in heard if i < done_at], "the server heard the room during the answer"
        assert kiosk.state is State.CONNECTED and not rec.saved


async def test_barge_in_without_buffer_events_truncates_what_was_heard(tmp_path: Path) -> None:
    """Before: on a server that sends neither output_audio_buffer nor response.output_item events
    (THIRD_PARTY), a press 0.7 s into a long answer sent no truncate at all (the item playing was
    learned only from those events), and the record kept
    the whole answer as heard. Now the truncate names the answer's item at about the milliseconds heard
    (within HEARD_TOLERANCE_MS under what the server played), and the record keeps the answer as an
    interrupted turn with only the share of its words that was heard."""
    async with lesson_stack(tmp_path, **THIRD_PARTY) as stack, stack.kiosk() as (kiosk, rec, _mic):
        call = await typed_answer_audible(stack, kiosk, rec)
        audible_at = time.monotonic()
        answer = responses(call)[1]
        await asyncio.sleep(0.7)  # the learner listens for 0.7 s, then presses
        assert status_of(call, answer) is None and rec.audible[-1] is True
        pressed_at = time.monotonic()
        kiosk.press()
        truncate = (await eventually(lambda: received(call, "conversation.item.truncate"), what="a truncate"))[0]
        await eventually(lambda: sent(call, "conversation.item.truncated") or server_errors(call),
                         what="the server's answer to the truncate")
        assert server_errors(call) == []
        assert truncate["item_id"] == item_of(call, answer)
        played = call.played_ms[item_of(call, answer)]
        assert played - HEARD_TOLERANCE_MS <= truncate["audio_end_ms"] <= played, (truncate["audio_end_ms"], played)
        assert abs(truncate["audio_end_ms"] - 1000 * (pressed_at - audible_at)) <= HEARD_TOLERANCE_MS
        record = await saved_after_stop(kiosk, rec)
    tutor = [t for t in record["turns"] if t["role"] == "tutor"]
    assert tutor[-1].get("interrupted") is True, tutor
    kept = tutor[-1]["text"].removesuffix("…").split()
    whole = tutor_answer("I like green apples").split()
    assert 0 < len(kept) < len(whole) and kept == whole[:len(kept)], (kept, whole)


async def test_an_interrupted_streamed_sentence_keeps_only_the_words_heard(tmp_path: Path) -> None:
    """A press 0.7 s into the first sentence (about 2 s) of a streamed answer: the record's interrupted
    turn keeps about the share of that sentence's words that was heard, not the whole sentence."""
    async with lesson_stack(tmp_path, **THIRD_PARTY) as stack, stack.kiosk() as (kiosk, rec, _mic):
        call = await typed_answer_audible(stack, kiosk, rec)
        answer = responses(call)[1]
        await asyncio.sleep(0.7)  # the learner listens for 0.7 s, then presses
        kiosk.press()
        await eventually(lambda: status_of(call, answer), what="the answer cancelled")
        record = await saved_after_stop(kiosk, rec)
    sentence = "".join(e["delta"] for e in sent(call, "response.output_audio_transcript.delta")
                       if e["response_id"] == answer).split()
    heard_share = 0.7 / (call.generated_ms[item_of(call, answer)] / 1000)
    kept = [t for t in record["turns"] if t["role"] == "tutor"][-1]["text"].removesuffix("…").split()
    assert len(kept) <= round(len(sentence) * heard_share) + 1, (kept, sentence, heard_share)


async def test_barge_in_after_a_pause_in_a_streamed_answer_truncates_within_what_was_played(
        tmp_path: Path) -> None:
    """A press in the second sentence of a streamed answer, after a pause of SENTENCE_PAUSE_S: the
    truncate must name the answer's item at no more than the audio played (the pause is silence, not
    part of the item's audio), or the server refuses it with invalid_value."""
    async with lesson_stack(tmp_path, **THIRD_PARTY) as stack, stack.kiosk() as (kiosk, rec, _mic):
        call = await connected_with_greeting_audible(stack, kiosk, rec)
        greeting = responses(call)[0]
        await rec.until(lambda: rec.audible[-2:] == [True, False], what="the pause after the first sentence")
        await rec.until(lambda: rec.audible[-3:] == [True, False, True], what="the second sentence audible")
        await asyncio.sleep(0.5)  # the learner listens to half a second of it, then presses
        assert status_of(call, greeting) is None and rec.audible[-1] is True
        kiosk.press()
        await eventually(lambda: sent(call, "conversation.item.truncated") or server_errors(call),
                         what="the server's answer to the truncate")
        assert server_errors(call) == []
        truncate = received(call, "conversation.item.truncate")[0]
        assert truncate["item_id"] == item_of(call, greeting)
        played = call.played_ms[item_of(call, greeting)]
        assert played - HEARD_TOLERANCE_MS <= truncate["audio_end_ms"] <= played, (truncate["audio_end_ms"], played)
