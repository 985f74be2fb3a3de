"""One call's conversation, alone: server events, the speaker's playhead, presses and timers in; outcomes out.

Each test scripts a server the way the kiosk meets them: OpenAI-like (``output_audio_buffer.*`` events)
and a third-party server that sends none. Times are explicit (``now``), so the playhead is exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from appliance.call.events import ServerEvent
from appliance.contract.record import validate_record
from appliance.core import outcomes as o
from appliance.core.conversation import GOODBYE_MAX_S, Conversation
from appliance.core.lesson import Lesson
from appliance.core.recovery import RETRY_AFTER_S


def ev(etype: str, **fields: Any) -> ServerEvent:
    return ServerEvent(etype, {"type": etype, **fields})


def sent(outcomes: list[o.Outcome]) -> list[dict[str, Any]]:
    return [x.event for x in outcomes if isinstance(x, o.Send)]


def types(outcomes: list[o.Outcome]) -> list[str]:
    return [e["type"] for e in sent(outcomes)]


def ends(outcomes: list[o.Outcome]) -> list[str]:
    return [x.reason for x in outcomes if isinstance(x, o.EndLesson)]


def timers(outcomes: list[o.Outcome]) -> dict[str, o.StartTimer]:
    return {x.name: x for x in outcomes if isinstance(x, o.StartTimer)}


class Server:
    """Scripted server events for one conversation; ``buffer_events`` False: a server that never sends
    ``output_audio_buffer.*``."""

    def __init__(self, conversation: Conversation, buffer_events: bool = True) -> None:
        self.c = conversation
        self.buffer_events = buffer_events
        self.n = 0

    def feed(self, now: float, etype: str, **fields: Any) -> list[o.Outcome]:
        return self.c.on_event(ev(etype, **fields), now)

    def response(self, now: float, text: str, audio_ms: int | None = None, status: str = "completed",
                 done: bool = True, error: dict[str, Any] | None = None) -> tuple[str, str, list[o.Outcome]]:
        """response.created, the item, its transcript and (``done``) response.done, all at ``now``."""
        self.n += 1
        rid, item = f"resp_{self.n}", f"item_{self.n}"
        out = self.feed(now, "response.created", response={"id": rid, "status": "in_progress"})
        out += self.feed(now, "response.output_item.added", response_id=rid,
                         item={"id": item, "type": "message", "role": "assistant"})
        for word in text.split():
            out += self.feed(now, "response.output_audio_transcript.delta", response_id=rid, item_id=item,
                             delta=word + " ")
        out += self.feed(now, "response.output_audio_transcript.done", response_id=rid, item_id=item,
                         transcript=text)
        if done:
            out += self.done(now, rid, status, audio_ms, error)
        return rid, item, out

    def done(self, now: float, rid: str, status: str = "completed", audio_ms: int | None = None,
             error: dict[str, Any] | None = None) -> list[o.Outcome]:
        usage = {"output_token_details": {"audio_tokens": audio_ms // 50}} if audio_ms else {}
        response: dict[str, Any] = {"id": rid, "status": status, "usage": usage}
        if error is not None:
            response["status_details"] = {"type": status, "error": error}
        return self.feed(now, "response.done", response=response)

    def audio_started(self, now: float, rid: str) -> list[o.Outcome]:
        return self.feed(now, "output_audio_buffer.started", response_id=rid) if self.buffer_events else []

    def audio_stopped(self, now: float, rid: str) -> list[o.Outcome]:
        return self.feed(now, "output_audio_buffer.stopped", response_id=rid) if self.buffer_events else []


def conversation(**kwargs: Any) -> tuple[Conversation, Lesson]:
    lesson = Lesson(kiosk_id="kiosk-1")
    lesson.connected_at = lesson.started_mono
    kwargs.setdefault("greet", False)
    return Conversation(lesson, **kwargs), lesson


@pytest.mark.parametrize("buffer_events", [True, False], ids=["openai-like", "no-buffer-events"])
def test_barge_in_after_a_typed_message_truncates_the_item_being_heard(buffer_events: bool) -> None:
    """A typed message while the greeting plays, then a press: the greeting (audible) is truncated at the
    milliseconds played and marked interrupted; the new answer (not yet audible) is cancelled, never
    truncated. Before: the truncate named the new item with audio_end_ms 0 (the server refused it)."""
    c, lesson = conversation()
    server = Server(c, buffer_events)
    greeting, greeting_item, _ = server.response(0.0, "Hello I am Stella let us practise directions today",
                                                 audio_ms=4000)
    server.audio_started(0.05, greeting)
    c.on_audible(True, 0.1)
    said = c.say("What is a roundabout?")
    assert types(said) == ["conversation.item.create", "response.create"]
    answer, _answer_item, _ = server.response(1.0, "A roundabout is", done=False)
    out = c.press(2.1)
    events = sent(out)
    assert [e["type"] for e in events] == ["response.cancel", "output_audio_buffer.clear",
                                           "conversation.item.truncate"]
    assert events[0]["response_id"] == answer
    truncate = events[2]
    assert truncate["item_id"] == greeting_item and truncate["audio_end_ms"] == 2000
    assert not ends(out)
    heard = [t for t in lesson.transcript.turns if t.role == "tutor"]
    assert heard[0].interrupted and heard[0].text.split()[0] == "Hello" and heard[0].text.endswith("…")
    assert len(heard[0].text.split()) < 10


def test_a_press_in_a_pause_while_the_server_still_generates_interrupts_and_keeps_the_mic_closed() -> None:
    """A server without buffer events, still generating its answer, the speaker quiet between two
    sentences: the tutor has the floor, so a press interrupts (never ends the lesson) and the half-duplex
    microphone stays closed in the pause. Before: the lesson ended ("button") and the gate opened."""
    c, _ = conversation()
    server = Server(c, buffer_events=False)
    rid, _item, _ = server.response(0.0, "First sentence. Second sentence.", done=False)
    c.on_audible(True, 0.2)
    c.on_audible(False, 1.5)  # a pause between sentences
    assert c.tutor_has_floor and not c.mic_open(3.0)
    assert not np.any(c.mic_frames(np.full(960, 1000, dtype=np.int16), 3.0))
    out = c.press(3.0)
    assert not ends(out)
    assert types(out)[:2] == ["response.cancel", "output_audio_buffer.clear"]
    assert sent(out)[0]["response_id"] == rid


def test_a_response_still_thinking_holds_the_floor_a_press_cancels_it() -> None:
    """The model is thinking (response created, nothing said yet): the tutor has the floor, the mic is
    closed, and a press cancels that response instead of ending the lesson; nothing is truncated."""
    c, _ = conversation()
    server = Server(c, buffer_events=False)
    server.feed(0.0, "response.created", response={"id": "resp_thinking"})
    assert c.tutor_has_floor and not c.mic_open(0.5)
    out = c.press(0.5)
    assert not ends(out)
    assert types(out) == ["response.cancel", "output_audio_buffer.clear"]
    assert not c.tutor_has_floor  # the cancelled response no longer holds it
    assert ends(c.press(1.0)) == ["button"]


def test_barge_in_without_buffer_events_truncates_from_the_speakers_own_playhead() -> None:
    """The learner heard 0.7 s of a 9 s answer on a server that sends no output_audio_buffer events:
    the truncate names the audible item at 700 ms and the record keeps only what was heard.
    Before: no truncate at all, and the whole answer in the record."""
    c, lesson = conversation()
    server = Server(c, buffer_events=False)
    words = " ".join(f"word{i}" for i in range(24))
    _rid, item, _ = server.response(0.0, words, audio_ms=9000)
    c.on_audible(True, 0.3)
    out = c.press(1.0)
    truncate = [e for e in sent(out) if e["type"] == "conversation.item.truncate"]
    assert truncate == [{**truncate[0], "item_id": item, "audio_end_ms": 700}]
    turn = next(t for t in lesson.transcript.turns if t.role == "tutor")
    assert turn.interrupted and len(turn.text.replace(" …", "").split()) == 2  # 0.7/9 of 24 words, rounded up


def test_a_failed_response_mid_lesson_is_retried_then_the_learner_hears_the_error_cue() -> None:
    """response.done failed (server_error) mid-lesson: asked again once after a pause; a second failure
    plays the error cue and the next learner turn is answered as usual. Before: silence until the idle
    goodbye, only the greeting was retried."""
    c, lesson = conversation()
    server = Server(c)
    failure = {"type": "server_error", "code": "server_error", "message": "The server had an error."}
    _, _, first = server.response(0.0, "", status="failed", error=failure)
    retry = timers(first)["retry"]
    assert retry.delay_s == RETRY_AFTER_S and not c.tutor_has_floor
    again = c.on_timer("retry", retry.token, RETRY_AFTER_S)
    assert types(again) == ["response.create"]
    _, _, second = server.response(2.0, "", status="failed", error=failure)
    assert any(isinstance(x, o.ErrorCue) for x in second) and "retry" not in timers(second)
    assert [e.code for e in lesson.errors] == ["response_failed", "response_failed"]
    # The learner speaks again: the server answers (VAD) and that answer plays normally.
    server.feed(5.0, "input_audio_buffer.speech_started", item_id="learner_1", audio_start_ms=100)
    _, _, answer = server.response(6.0, "Sorry about that. Where were we?", audio_ms=2000)
    assert not any(isinstance(x, o.ErrorCue) for x in answer) and not ends(answer)


def test_a_request_the_busy_server_refuses_is_asked_again_once_the_answer_is_done() -> None:
    """A typed message while the tutor is still answering: the server refuses the second response.create
    as busy; that is no failure (no cue, no retry timer) and the message is answered after the current one."""
    c, _ = conversation()
    server = Server(c)
    rid, _item, _ = server.response(0.0, "Let me explain roundabouts", done=False)
    said = c.say("And traffic lights?")
    request = next(e for e in sent(said) if e["type"] == "response.create")
    refused = server.feed(0.5, "error", error={"code": "conversation_already_has_active_response",
                                               "message": "busy", "event_id": request["event_id"]})
    assert not any(isinstance(x, o.ErrorCue) for x in refused) and "retry" not in timers(refused)
    done = server.done(1.0, rid, audio_ms=2000)
    assert types(done) == ["response.create"] and o.StopTimer("stall") in done  # the answer's own outcomes kept
    assert c.responses.request is not None and c.responses.request.purpose == "reply"  # asked for what it was


def test_another_error_while_the_tutor_answers_is_a_failure_not_a_deferral() -> None:
    """Only ``conversation_already_has_active_response`` defers a request; any other refusal of it is a failed
    request (a retry timer), even while another answer is still active."""
    c, _ = conversation()
    server = Server(c)
    server.response(0.0, "Let me explain roundabouts", done=False)
    request = next(e for e in sent(c.say("And traffic lights?")) if e["type"] == "response.create")
    refused = server.feed(0.5, "error", error={"code": "server_error", "message": "x",
                                               "event_id": request["event_id"]})
    assert "retry" in timers(refused)


def test_a_failed_greeting_is_asked_again_once() -> None:
    c, _ = conversation(greet=True)
    greeted = c.start(0.0)
    assert types(greeted) == ["response.create"]
    error = c.on_event(ev("error", error={"code": "server_error", "message": "x",
                                          "event_id": sent(greeted)[0]["event_id"]}), 0.1)
    assert types(c.on_timer("retry", timers(error)["retry"].token, 1.2)) == ["response.create"]


@pytest.mark.parametrize(("code", "reason"), [("insufficient_quota", "quota_exceeded"),
                                              ("rate_limit_exceeded", "rate_limited")])
def test_quota_failure_ends_the_lesson_with_its_reason_and_an_error(code: str, reason: str) -> None:
    """Each code after which no response can succeed, and the end reason it gives (the whole path, from the
    server's event to the saved record, runs through a real lesson in tests/test_realtime_client.py)."""
    c, _ = conversation()
    _, _, out = Server(c).response(0.0, "", status="failed", error={"type": "invalid_request_error", "code": code})
    [end] = [x for x in out if isinstance(x, o.EndLesson)]
    assert end.reason == reason and end.error is not None and code in end.error


def test_goodbye_ends_once_heard_or_after_its_bound() -> None:
    c, _ = conversation()
    server = Server(c)
    out = c.goodbye("idle", "say goodbye", 0.0)
    assert types(out) == ["conversation.item.create", "response.create"]
    assert timers(out)["goodbye"].delay_s == GOODBYE_MAX_S
    rid, _item, _ = server.response(0.5, "Goodbye!", audio_ms=1000)
    server.audio_started(0.6, rid)
    c.on_audible(True, 0.7)
    server.audio_stopped(1.6, rid)
    assert ends(c.on_audible(False, 1.8)) == ["idle"]
    c2, _ = conversation()
    c2.goodbye("idle", "say goodbye", 0.0)
    assert ends(c2.on_timer("goodbye", None, GOODBYE_MAX_S)) == ["idle"]


def test_hold_mode_keeps_the_mic_closed_until_the_button_is_held_and_commits_the_turn() -> None:
    c, lesson = conversation(mode="hold", mic_rate=48000)
    assert not c.mic_open(0.0)
    c.press(1.0)
    assert c.listening and c.mic_open(1.0)
    voice = np.full(48000, 3000, dtype=np.int16)
    assert np.array_equal(c.mic_frames(voice, 1.5), voice)
    out = c.release(2.0)
    assert types(out) == ["input_audio_buffer.commit", "response.create"]
    assert lesson.learner_audio_s == pytest.approx(1.0)
    # A silent hold past long_press_s ends the lesson; a spoken one does not.
    c.press(3.0)
    assert ends(c.on_timer("long_press", 3.0, 5.1)) == ["button"]


def test_toggle_press_with_the_floor_free_ends_the_lesson_and_a_long_press_during_barge_in_too() -> None:
    c, _ = conversation()
    assert ends(c.press(0.0)) == ["button"]
    c2, _ = conversation()
    Server(c2).response(0.0, "Hello there", audio_ms=3000)
    c2.on_audible(True, 0.1)
    out = c2.press(1.0)
    assert not ends(out) and timers(out)["long_press"].token == 1.0
    assert ends(c2.on_timer("long_press", 1.0, 3.0)) == ["button"]


def test_session_expired_ends_and_the_record_of_any_end_is_valid() -> None:
    c, lesson = conversation()
    out = c.on_event(ev("error", error={"code": "session_expired", "message": "60 minutes"}), 1.0)
    assert ends(out) == ["session_expired"]
    assert validate_record(lesson.to_record("session_expired"))
    assert c.on_event(ev("response.created", response={"id": "late"}), 2.0) == []


# -- the playhead alone -------------------------------------------------------------------------------

from appliance.core.playhead import MAX_QUEUED, PAUSE_TOLERANCE_MS, Playhead  # noqa: E402
from appliance.core.responses import Response, Responses  # noqa: E402


def test_the_playhead_starts_an_item_when_the_speaker_sounds_and_ends_it_when_it_goes_quiet() -> None:
    """An item named while the speaker is quiet waits; it starts when the speaker sounds and is heard out
    when the speaker goes quiet (its answer complete, its length unknown). The speaker's own backlog is
    not counted as heard."""
    p = Playhead(lambda rid: None)
    p.named("r1", "i1", 0.0, 0.0)
    assert p.audible_item is None and p.waiting_for("r1") and not p.waiting_for("r2") and p.played_ms(0.5) is None
    assert p.speaker(True, 1.0, None) == 0.0
    head = p.audible_item
    assert head is not None and (head.item_id, head.started_at) == ("i1", 1.0) and not p.waiting_for("r1")
    assert p.playing and p.audible_since == 1.0
    assert p.played_ms(1.5) == pytest.approx(500.0)
    assert p.played_ms(1.5, backlog_s=0.2) == pytest.approx(300.0)
    assert p.played_ms(1.5, backlog_s=-3.0) == pytest.approx(500.0)  # no negative backlog
    assert p.played_ms(1.5, backlog_s=2.0) == 0.0
    assert p.speaker(False, 3.0, None) == pytest.approx(2.0)
    assert not p.queue and not p.playing and p.audible_since is None
    assert p.speaker(False, 4.0, None) == 0.0  # quiet again: nothing more heard
    assert p.audible_since is None
    p.speaker(True, 5.0, None)
    p.speaker(True, 5.5, None)  # still sounding: it started at 5.0
    assert p.audible_since == 5.0 and p.speaker(False, 6.0, None) == pytest.approx(1.0)


def test_a_pause_inside_an_answer_of_known_length_does_not_end_it() -> None:
    """With the answer's length known (5 s), the speaker going quiet more than ``PAUSE_TOLERANCE_MS``
    before its end is a pause: the item stays; from then on it is over. An answer still being generated
    is never over."""
    assert PAUSE_TOLERANCE_MS == 500.0
    p = Playhead(lambda rid: 5000.0 if rid == "r1" else None)
    p.named("r1", "i1", 0.0, 0.0)
    p.speaker(True, 1.0, None)
    p.speaker(False, 3.0, None)
    assert p.head is not None and p.head.item_id == "i1"  # 2 s of 5 s: a pause
    p.speaker(True, 3.5, None)
    assert p.played_ms(9.0) == 5000.0  # never more than its length
    p.speaker(False, 5.4999, None)
    assert p.head is not None  # 4.4999 s < 5 s - 0.5 s
    p.speaker(True, 5.5, None)
    p.speaker(False, 5.5, None)  # exactly 4.5 s after its start: over
    assert not p.queue
    p.named("r2", "i2", 6.0, 6.0)
    p.speaker(True, 6.0, "r2")
    p.speaker(False, 20.0, "r2")
    assert p.head is not None and p.head.item_id == "i2"
    p.speaker(False, 20.0, None)
    assert not p.queue


def test_an_item_named_while_the_speaker_already_sounds_started_then_but_not_before_its_answer() -> None:
    p = Playhead(lambda rid: None)
    p.speaker(True, 1.0, None)
    p.named("r1", "i1", 1.5, 2.0)
    assert p.head is not None and p.head.started_at == 1.5  # audible since 1.0, its answer created at 1.5
    p.named("r1", "i1b", 1.5, 2.0)
    assert p.queue[1].started_at is None  # behind the first
    q = Playhead(lambda rid: None)
    q.speaker(True, 1.0, None)
    q.named("r1", "i1", 0.5, 2.0)
    assert q.head is not None and q.head.started_at == 1.0
    r = Playhead(lambda rid: None)
    r.speaker(True, 1.0, None)
    r.interrupt()  # what the speaker still drains was cleared: it starts nothing
    r.named("r2", "i2", 0.5, 2.0)
    assert r.head is not None and r.head.started_at is None and not r.playing
    r.speaker(True, 2.5, None)
    assert r.head.started_at is None
    r.speaker(False, 3.0, None)
    assert not r.ignore_audible and r.head is not None  # never started: still waiting
    r.speaker(True, 3.5, None)
    assert r.head.started_at == 3.5


def test_the_servers_word_on_its_audio_moves_the_playhead() -> None:
    """``output_audio_buffer.started`` for an answer drops the items queued before it and marks its own;
    ``stopped`` ends everything up to that answer; ``cleared`` without a known answer empties the queue."""
    p = Playhead(lambda rid: None)
    p.named("r1", "i1", 0.0, 0.0)
    p.named("r2", "i2", 0.0, 0.0)
    p.named("r3", "i3", 0.0, 0.0)
    p.server_started("r9", 1.0)  # an answer not queued: nothing dropped
    assert [a.item_id for a in p.queue] == ["i1", "i2", "i3"] and p.buffer_playing and p.playing
    p.server_started("r2", 1.0)
    assert [a.item_id for a in p.queue] == ["i2", "i3"]
    head = p.audible_item
    assert head is not None and head.server_started and head.started_at is None and p.played_ms(2.0) == 0.0
    p.speaker(True, 2.0, None)
    assert p.head is not None and p.head.started_at == 2.0
    p.server_stopped("r2", cleared=False)
    assert [a.item_id for a in p.queue] == ["i3"] and not p.buffer_playing
    p.server_stopped("r7", cleared=False)  # unknown answer, not a clear: nothing changes
    assert [a.item_id for a in p.queue] == ["i3"]
    p.server_stopped("r7", cleared=True)
    assert not p.queue
    q = Playhead(lambda rid: None)
    q.speaker(True, 1.0, None)
    q.named("r1", "i1", 0.0, 1.0)
    q.named("r2", "i2", 0.0, 1.0)
    q.server_started("r2", 3.0)
    assert q.head is not None and q.head.started_at == 3.0  # audible already: it starts now
    q.server_stopped(None, cleared=True)
    assert not q.queue
    two = Playhead(lambda rid: None)  # one answer with two audio items, then the next answer
    two.named("r1", "i1", 0.0, 0.0)
    two.named("r1", "i2", 0.0, 0.0)
    two.named("r2", "i3", 0.0, 0.0)
    two.server_stopped("r1", cleared=False)
    assert [a.item_id for a in two.queue] == ["i3"]


def test_every_pause_of_the_server_inside_an_item_is_left_out_of_what_was_played() -> None:
    """A silence of GAP_S or more inside an item is the server pausing (not counted as heard, less the
    speech's own edges); each such pause adds up. Mutations seen failing: ``>`` for ``>=``, ``=`` for ``+=``."""
    p = Playhead(lambda rid: None, quiet_lag_s=0.5)
    p.named("r1", "i1", 0.0, 0.0)
    p.speaker(True, 0.0, "r1")
    p.speaker(False, 0.5, "r1")  # quiet since 0.0 (the speaker notices 0.5 s late)
    p.speaker(True, 0.8, "r1")  # a pause of exactly GAP_S: 0.8 - 0.4 s of it was not speech
    p.speaker(False, 2.5, "r1")
    p.speaker(True, 3.0, "r1")  # quiet since 2.0: a pause of 1.0 s, 0.6 s of it not speech
    assert p.played_ms(4.0) == pytest.approx((4.0 - 0.4 - 0.6) * 1000)


def test_the_playhead_queue_is_bounded_and_an_interrupt_empties_it() -> None:
    p = Playhead(lambda rid: None)
    for n in range(MAX_QUEUED + 5):
        p.named(f"r{n}", f"i{n}", 0.0, 0.0)
    assert len(p.queue) == MAX_QUEUED
    p.speaker(True, 1.0, None)
    playing, rest = p.interrupt()
    assert playing is not None and playing.item_id == "i0" and [a.item_id for a in rest][:2] == ["i1", "i2"]
    assert len(rest) == MAX_QUEUED - 1 and not p.queue and not p.buffer_playing and p.ignore_audible
    assert not p.playing
    q = Playhead(lambda rid: None)
    q.named("r1", "i1", 0.0, 0.0)
    q.buffer_playing = True
    playing, rest = q.interrupt()
    assert playing is None and [a.item_id for a in rest] == ["i1"] and not q.ignore_audible and not q.playing
    k = Playhead(lambda rid: None)
    k.named("r1", "i1", 0.0, 0.0)
    k.named("r2", "i2", 0.0, 0.0)
    k.speaker(True, 1.0, None)
    k.drop_unstarted(lambda a: a.response_id == "r2")
    assert [a.item_id for a in k.queue] == ["i1", "i2"]
    k.drop_unstarted(lambda a: False)
    assert [a.item_id for a in k.queue] == ["i1"]


# -- the answers of a call ----------------------------------------------------------------------------


def test_responses_remember_why_each_was_asked_and_how_long_it_is() -> None:
    r = Responses()
    assert not r.generating and r.active is None and r.cancel_active() is None
    event = r.ask("prompt")
    assert event["type"] == "response.create" and r.request is not None and r.request.purpose == "prompt"
    assert r.request.event_id == event["event_id"]
    made = r.created("a", 5.0)
    assert (made.purpose, made.created_at, r.active, r.progress_at, r.request) == ("prompt", 5.0, "a", 5.0, None)
    assert r.created("b", 6.0).purpose == "reply"  # not asked by the kiosk (server VAD)
    assert r.generating and r.any_with("prompt") and not r.any_with("goodbye")
    assert r.done("a", 40) == (r.get("a"), False)  # not the one being generated
    assert r.active == "b" and r.length_ms("a") == 2000.0
    known, was_active = r.done("b", True)
    assert known is r.get("b") and was_active and r.active is None and r.length_ms("b") is None
    for odd in (0, -4, "12", 2.5):
        r.done("b", odd)
        assert r.length_ms("b") is None
    r.done("b", 1)
    assert r.length_ms("b") == 50.0  # one token: 50 ms
    assert r.done("zzz", 10) == (None, False) and r.done(None, 10) == (None, False)
    assert r.get(7) is None and r.length_ms("zzz") is None and not r.generating


def test_a_cancelled_response_is_cancelled_once_and_no_longer_generates() -> None:
    r = Responses()
    assert r.cancel_active() is None
    r.created("a", 0.0)
    assert r.cancel_active() == "a" and r.get("a").cancelling  # type: ignore[union-attr]
    assert r.cancel_active() is None and not r.generating and r.active == "a"


def test_responses_are_bounded_but_never_forget_the_one_being_generated() -> None:
    from appliance.core.responses import MAX_TRACKED

    r = Responses()
    r.created("first", 0.0)
    for n in range(MAX_TRACKED - 1):
        r.remember(Response(f"old{n}", "reply", 0.0))
    assert len(r) == MAX_TRACKED
    r.remember(Response("new", "reply", 1.0))
    assert r.get("first") is not None and len(r) == MAX_TRACKED + 1  # the active one is kept
    r.done("first", None)
    r.remember(Response("newer", "reply", 2.0))
    assert r.get("first") is None and r.get("newer") is not None and len(r) == MAX_TRACKED + 1
    full = Responses()
    for n in range(MAX_TRACKED):
        full.remember(Response(f"r{n}", "reply", 0.0))
    full.remember(Response("one-more", "reply", 0.0))
    assert len(full) == MAX_TRACKED and full.get("r0") is None and full.get("r1") is not None


# -- failures and stalls ---------------------------------------------------------------------------------


def test_a_rate_limit_ends_the_lesson_with_its_reason() -> None:
    c, _ = conversation()
    _, _, out = Server(c).response(0.0, "", status="failed",
                                   error={"type": "requests", "code": "rate_limit_exceeded", "message": "slow down"})
    [end] = [x for x in out if isinstance(x, o.EndLesson)]
    assert end.reason == "rate_limited" and end.error == "the OpenAI account refused the lesson: rate_limit_exceeded"
    assert [x.name for x in out if isinstance(x, o.StopTimer)] == ["stall", "long_press", "retry", "goodbye",
                                                                  "stall"]


def test_a_failed_goodbye_ends_the_lesson_with_the_goodbyes_reason() -> None:
    """The goodbye request refused by the server (an ``error`` naming it): no retry, the lesson ends for
    the reason the goodbye was for."""
    c, _ = conversation()
    asked = c.goodbye("time_limit", "say goodbye", 0.0)
    event_id = next(e for e in sent(asked) if e["type"] == "response.create")["event_id"]
    out = c.on_event(ev("error", error={"code": "server_error", "message": "x", "event_id": event_id}), 0.5)
    assert ends(out) == ["time_limit"] and "retry" not in timers(out)
    c2, _ = conversation()
    c2.goodbye("time_limit", "say goodbye", 0.0)
    _rid, _item, out2 = Server(c2).response(0.5, "Bye", status="cancelled")
    assert ends(out2) == ["time_limit"]


def test_each_failed_purpose_is_asked_again_as_what_it_was() -> None:
    """The retry timer's token carries the purpose: a failed prompt is asked again as a prompt (and a
    second failure in a row is the error cue); a completed answer in between starts the count afresh."""
    c, _ = conversation()
    c.prompt("one minute left", 0.0)
    error = c.on_event(ev("error", error={"code": "server_error", "event_id": c.responses.request.event_id}),  # type: ignore[union-attr]
                       0.1)
    retry = timers(error)["retry"]
    assert (retry.delay_s, retry.token) == (RETRY_AFTER_S, 2.0)
    assert c.on_timer("retry", None, 1.0) == []
    assert types(c.on_timer("retry", retry.token, 1.1)) == ["response.create"]
    assert c.responses.request is not None and c.responses.request.purpose == "prompt"
    server = Server(c)
    server.response(2.0, "One minute left, well done.", audio_ms=1000)  # completed: the count starts again
    c.say("Again?")
    _, _, failed = server.response(3.0, "", status="failed", error={"code": "server_error"})
    assert "retry" in timers(failed) and not any(isinstance(x, o.ErrorCue) for x in failed)
    assert timers(failed)["retry"].token == 1.0


def test_a_second_failed_greeting_is_the_error_cue_and_nothing_greets_later() -> None:
    c, _ = conversation(greet=True)
    greeted = c.start(0.0)
    first = c.on_event(ev("error", error={"code": "server_error", "event_id": sent(greeted)[0]["event_id"]}), 0.1)
    again = c.on_timer("retry", timers(first)["retry"].token, 1.1)
    second = c.on_event(ev("error", error={"code": "server_error", "event_id": sent(again)[0]["event_id"]}), 1.2)
    assert any(isinstance(x, o.ErrorCue) for x in second) and "retry" not in timers(second)
    assert c.on_timer("greet", None, 3.0) == [] and c.on_event(ev("session.updated"), 3.1) == []


def test_a_response_that_produces_nothing_for_30_s_is_cancelled_and_retried() -> None:
    """The stall timer re-arms for what is left of 30 s after the response last produced something; at
    30 s of nothing the response is cancelled, the stall recorded, and the answer asked for again."""
    c, lesson = conversation()
    server = Server(c)
    out = server.feed(0.0, "response.created", response={"id": "resp_s"})
    assert timers(out)["stall"].delay_s == 30.0
    server.feed(5.0, "response.output_audio_transcript.delta", response_id="resp_s", item_id="it", delta="Hm ")
    again = c.on_timer("stall", None, 10.0)
    assert timers(again)["stall"].delay_s == pytest.approx(25.0) and not sent(again)
    stalled = c.on_timer("stall", None, 35.0)
    assert sent(stalled)[0] == {**sent(stalled)[0], "type": "response.cancel", "response_id": "resp_s"}
    assert timers(stalled)["retry"].token == 1.0 and c.responses.active is None
    assert (lesson.errors[-1].code, lesson.errors[-1].message) == ("response_stalled",
                                                                  "response resp_s produced nothing for 30 s")
    assert c.on_timer("stall", None, 80.0) == []  # nothing active any more


# -- turn taking ------------------------------------------------------------------------------------


def test_half_duplex_opens_the_mic_an_echo_tail_after_the_tutor_and_full_duplex_always() -> None:
    c, _ = conversation(echo_tail_s=0.5)
    server = Server(c, buffer_events=False)
    assert c.mic_open(0.0)
    server.response(1.0, "Hello there", audio_ms=1000)
    c.on_audible(True, 1.1)
    assert not c.mic_open(1.5)
    quiet = c.on_audible(False, 2.2)
    assert any(isinstance(x, o.Touch) for x in quiet) and o.TutorHeard(False) in quiet
    assert not c.mic_open(2.69) and c.mic_open(2.7)
    samples = np.full(480, 2000, dtype=np.int16)
    closed = c.mic_frames(samples, 2.5)
    assert closed.dtype == np.int16 and len(closed) == 480 and not closed.any()
    assert np.array_equal(c.mic_frames(samples, 2.8), samples)
    full, _ = conversation(half_duplex=False)
    Server(full, buffer_events=False).response(1.0, "Hello there", audio_ms=1000)
    full.on_audible(True, 1.1)
    assert full.tutor_has_floor and full.mic_open(1.2)


def test_a_hold_shorter_than_100_ms_is_discarded_and_a_deferred_answer_is_then_asked() -> None:
    """Hold-to-talk: a typed message while the button is held waits for the release; a hold of 80 ms is
    cleared (the server refuses less than 100 ms), exactly 100 ms is committed and answered once."""
    c, lesson = conversation(mode="hold", mic_rate=48000)
    c.press(1.0)
    said = c.say("Hello?")
    assert types(said) == ["conversation.item.create"]  # its answer waits for the release
    c.mic_frames(np.full(3840, 3000, dtype=np.int16), 1.05)  # 80 ms
    out = c.release(1.1)
    assert types(out) == ["input_audio_buffer.clear", "response.create"]
    assert [x for x in out if isinstance(x, o.Listening)] == [o.Listening(False)] and lesson.learner_audio_s == 0
    c.press(2.0)
    c.say("Again?")
    c.mic_frames(np.full(4800, 3000, dtype=np.int16), 2.05)  # 100 ms
    out = c.release(2.2)
    assert types(out) == ["input_audio_buffer.commit", "response.create"]
    assert lesson.learner_audio_s == pytest.approx(0.1)


@pytest.mark.parametrize(("amplitude", "ends_lesson"), [(0, True), (100, True), (400, False)])
def test_only_a_hold_with_speech_in_it_is_a_turn_not_a_long_press(amplitude: int, ends_lesson: bool) -> None:
    """-45 dBFS decides: amplitude 100 is about -50 dBFS (a quiet room), 400 about -38 dBFS (a voice)."""
    c, _ = conversation(mode="hold", long_press_s=2.0)
    out = c.press(1.0)
    assert timers(out)["long_press"] == o.StartTimer("long_press", 2.0, 1.0)
    assert types(out) == ["input_audio_buffer.clear"] and o.Listening(True) in out
    c.mic_frames(np.full(4800, amplitude, dtype=np.int16), 1.5)
    ended = c.on_timer("long_press", 1.0, 3.0)
    assert ends(ended) == (["button"] if ends_lesson else [])
    if ends_lesson:
        assert types(ended) == ["input_audio_buffer.clear"] and o.Listening(False) in ended and not c.listening


def test_a_stale_long_press_timer_does_nothing_and_nothing_happens_after_the_end() -> None:
    c, _ = conversation()
    Server(c).response(0.0, "Hello there", audio_ms=3000)
    c.on_audible(True, 0.1)
    c.press(1.0)
    c.release(1.2)
    assert c.on_timer("long_press", 1.0, 3.0) == []  # released before: that hold is over
    assert c.on_timer("long_press", None, 3.0) == []
    assert ends(c.press(4.0)) == ["button"]
    assert c.press(5.0) == [] and c.release(5.1) == [] and c.say("x") == [] and c.prompt("x", 5.2) == []
    assert c.goodbye("idle", "x", 5.3) == [] and c.on_timer("greet", None, 6.0) == []


def test_a_barge_in_holds_heard_until_the_speaker_goes_quiet_or_the_check() -> None:
    """The server says its audio plays (the speaker has not sounded yet): after a press the tutor still
    counts as heard until the check half a second later, or until the speaker goes quiet."""
    c, _ = conversation()
    server = Server(c)
    rid, _item, _ = server.response(0.0, "Hello there my friend", audio_ms=3000)
    assert o.TutorHeard(True) in server.audio_started(0.1, rid)
    out = c.press(1.0)
    assert timers(out)["heard_check"].delay_s == 0.5 and c.tutor_heard and o.ClearSpeaker() in out
    assert c.on_timer("heard_check", None, 1.5) == [o.TutorHeard(False)] and not c.tutor_heard
    c2, _ = conversation()
    Server(c2, buffer_events=False).response(0.0, "Hello there my friend", audio_ms=3000)
    c2.on_audible(True, 0.1)
    c2.press(1.0)
    assert o.TutorHeard(False) in c2.on_audible(False, 1.2)


def test_a_barge_in_during_the_goodbye_ends_the_lesson_for_the_goodbyes_reason() -> None:
    c, _ = conversation()
    c.goodbye("idle", "say goodbye", 0.0)
    Server(c, buffer_events=False).response(0.5, "Goodbye my friend", audio_ms=2000)
    c.on_audible(True, 0.6)
    assert ends(c.press(1.0)) == ["idle"]


def test_an_interrupted_answer_of_unknown_length_is_cut_by_its_words_at_2_6_per_second() -> None:
    """26 words, no length from the server: about 10 s of speech; 5 s heard keeps 13 words; the answer
    queued behind it and never heard keeps none."""
    c, lesson = conversation()
    server = Server(c, buffer_events=False)
    words = " ".join(f"w{i}" for i in range(26))
    server.response(0.0, words)
    server.response(0.0, "never heard at all")
    c.on_audible(True, 1.0)
    out = c.press(6.0)
    truncate = [e for e in sent(out) if e["type"] == "conversation.item.truncate"]
    assert [(e["item_id"], e["audio_end_ms"]) for e in truncate] == [("item_1", 5000)]
    first, second = [t for t in lesson.transcript.turns if t.role == "tutor"]
    assert first.text == " ".join(words.split()[:13]) + " …" and first.interrupted
    assert second.interrupted and second.text == "…"
    assert [x.turn for x in out if isinstance(x, o.TurnChanged)] == [first, second]


# -- the conversation's own events ----------------------------------------------------------------------


def test_the_greeting_waits_for_the_session_config_or_two_seconds() -> None:
    c, lesson = conversation(greet=True, session={"instructions": "be kind"})
    out = c.start(0.0)
    assert types(out) == ["session.update"] and sent(out)[0]["session"]["instructions"] == "be kind"
    assert timers(out)["greet"].delay_s == 2.0
    greeted = c.on_event(ev("session.updated"), 0.4)
    assert types(greeted) == ["response.create"] and o.StopTimer("greet") in greeted
    assert lesson.timeline.stamps["greeting_sent"] == 0.4
    assert c.on_event(ev("session.updated"), 0.5) == [] and c.on_timer("greet", None, 2.0) == []
    late, _ = conversation(greet=True, session={"instructions": "x"})
    late.start(0.0)
    assert types(late.on_timer("greet", None, 2.0)) == ["response.create"]
    assert types(late.on_event(ev("session.updated"), 2.5)) == []
    hold, _ = conversation(mode="hold", greet=False)
    assert sent(hold.start(0.0))[0]["session"]["audio"]["input"]["turn_detection"] is None
    quiet, _ = conversation(greet=False)
    assert quiet.start(0.0) == []


def test_a_failed_or_incomplete_answer_is_recorded_with_its_words() -> None:
    c, lesson = conversation()
    server = Server(c)
    rid, _item, out = server.response(0.0, "Half an", status="incomplete")
    out += server.done(0.1, rid, status="incomplete")
    assert any(isinstance(x, o.Checkpoint) for x in out)
    assert [t.status for t in lesson.transcript.tutor_turns_of(rid)] == ["incomplete"]
    assert (lesson.errors[0].code, lesson.errors[0].message) == ("response_incomplete", "incomplete")
    server.feed(1.0, "response.done", response={"id": "x2", "status": "incomplete",
                                                "status_details": {"reason": "max_output_tokens"}})
    assert lesson.errors[-1].message == "max_output_tokens"
    for error, message in (({"code": "server_error", "message": "boom"}, "server_error: boom"),
                           ({"type": "server_error", "message": "server_error"}, "server_error"),
                           ({}, "failed")):
        server.feed(2.0, "response.done", response={"id": "x3", "status": "failed",
                                                    "status_details": {"error": error}})
        assert (lesson.errors[-1].code, lesson.errors[-1].message) == ("response_failed", message)
    server.feed(3.0, "response.done", response={"id": "x4", "status": "failed",
                                                "status_details": {"reason": "turn_detected"}})
    assert lesson.errors[-1].message == "turn_detected"
    server.feed(4.0, "response.done", response={"id": "x5", "status": "completed",
                                                "usage": {"input_tokens": 7, "output_tokens": 3}})
    assert lesson.usage.input_tokens == 7 and lesson.usage.output_tokens == 3


def test_audio_that_never_starts_holds_the_floor_three_seconds_at_most() -> None:
    c, _ = conversation()
    server = Server(c, buffer_events=False)
    _rid, _item, out = server.response(0.0, "Hello", audio_ms=1000)
    assert timers(out)["audio_wait"].delay_s == 3.0 and c.tutor_has_floor
    freed = c.on_timer("audio_wait", None, 3.0)
    assert not c.tutor_has_floor and any(isinstance(x, o.Touch) for x in freed)
    c2, _ = conversation()
    server2 = Server(c2, buffer_events=False)
    rid2, _, _ = server2.response(0.0, "Hello", done=False)
    server2.response(0.0, "Other answer", done=False)  # the one now generating
    out2 = server2.done(0.5, rid2, status="cancelled")
    assert "audio_wait" not in timers(out2)
    assert [a.response_id for a in c2.playhead.queue] == ["resp_2"]  # the cancelled one's audio dropped
    c2.on_timer("audio_wait", None, 3.5)
    assert [a.response_id for a in c2.playhead.queue] == ["resp_2"]  # still generating: kept


def test_the_learners_speech_and_the_tutors_audio_are_timed() -> None:
    c, lesson = conversation()
    server = Server(c)
    touch = server.feed(0.0, "input_audio_buffer.speech_started", item_id="l1", audio_start_ms=1000)
    assert o.Touch() in touch
    server.feed(0.0, "input_audio_buffer.speech_stopped", item_id="l1", audio_end_ms=3500)
    server.feed(0.0, "input_audio_buffer.speech_started", item_id="l2", audio_start_ms=4000)
    server.feed(0.0, "input_audio_buffer.speech_stopped", item_id="l2", audio_end_ms=4000)  # nothing heard
    server.feed(0.0, "input_audio_buffer.speech_stopped", item_id="l9", audio_end_ms=9000)  # never started
    assert lesson.learner_audio_s == pytest.approx(2.5)
    server.feed(0.0, "conversation.item.input_audio_transcription.failed", item_id="l1",
                error={"message": "garbled"})
    assert (lesson.errors[-1].code, lesson.errors[-1].message) == ("transcription_failed", "garbled")
    server.response(1.0, "Hi", audio_ms=500)
    c.on_audible(True, 2.0)
    c.on_audible(False, 2.5)
    c.on_audible(True, 3.0)
    c.on_audible(False, 3.25)
    assert lesson.first_audio_at == 2.0 and lesson.tutor_audio_s == pytest.approx(0.75)


def test_items_are_learnt_from_any_event_that_names_them_once() -> None:
    c, _ = conversation()
    server = Server(c, buffer_events=False)
    server.feed(0.0, "response.output_item.added", response_id="r1", item={"id": "u1", "role": "user"})
    assert not c.playhead.queue
    server.feed(0.0, "response.content_part.added", response_id="r1", item_id="a1")
    server.feed(0.0, "response.output_text.delta", response_id="r1", item_id="a1", delta="x")
    server.feed(0.0, "response.output_audio.delta", response_id="r1", item_id="a2")
    server.feed(0.0, "conversation.item.created", response_id="r1", item_id="a3")
    assert [a.item_id for a in c.playhead.queue] == ["a1", "a2"] and c.responses.get("r1") is not None
    assert c.responses.get("r1").items == ["a1", "a2"]  # type: ignore[union-attr]
    server.feed(0.0, "response.created", response={"id": "r2"})
    c.press(0.1)  # cancels r2
    server.feed(0.2, "response.output_audio.delta", response_id="r2", item_id="b1")
    assert "b1" not in [a.item_id for a in c.playhead.queue]


def test_the_servers_audio_events_and_the_stop_phrase() -> None:
    c, lesson = conversation()
    server = Server(c)
    rid, _item, _ = server.response(0.0, "Hello", audio_ms=1000)
    out = server.audio_started(0.1, rid)
    assert o.TutorHeard(True) in out and lesson.timeline.stamps["server_audio_started"] == 0.1
    assert o.TutorHeard(False) in server.feed(1.2, "output_audio_buffer.cleared")
    server.feed(1.3, "output_audio_buffer.started")
    assert c.playhead.buffer_playing
    server.feed(1.4, "output_audio_buffer.stopped", response_id=rid)
    assert not c.playhead.buffer_playing
    server.feed(2.0, "response.created", response={"id": "r_c"})
    c.press(2.1)
    server.feed(2.2, "output_audio_buffer.started", response_id="r_c")  # late news of cancelled audio
    assert not c.playhead.buffer_playing
    voice, _ = conversation()
    vs = Server(voice)
    vs.feed(0.0, "input_audio_buffer.speech_started", item_id="l1", audio_start_ms=0)
    out = vs.feed(0.5, "conversation.item.input_audio_transcription.completed", item_id="l1", transcript="Stop.")
    assert ends(out) == ["voice_stop"] and any(isinstance(x, o.TurnChanged) for x in out)
    typed, _ = conversation()
    assert not ends(typed.say("stop"))


def test_a_server_error_is_recorded_and_only_ends_the_lesson_when_the_session_expired() -> None:
    c, lesson = conversation()
    assert c.on_event(ev("error", error={"type": "invalid_request_error", "message": "bad"}), 0.0) == []
    assert (lesson.errors[-1].code, lesson.errors[-1].message) == ("invalid_request_error", "bad")
    assert c.on_event(ev("error", error={}), 0.1) == [] and lesson.errors[-1].code == "error"
    out = c.on_event(ev("error", error={"code": "session_expired"}), 0.2)
    assert out == [o.StopTimer("long_press"), o.StopTimer("retry"), o.StopTimer("goodbye"), o.StopTimer("stall"),
                   o.EndLesson("session_expired", None)]
    assert c.ended == "session_expired"


def test_the_goodbye_is_asked_once() -> None:
    c, _ = conversation()
    first = c.goodbye("idle", "say goodbye", 0.0)
    assert sent(first)[0]["item"]["role"] == "system" and c.responses.request.purpose == "goodbye"  # type: ignore[union-attr]
    assert c.goodbye("time_limit", "again", 1.0) == []
    assert ends(c.on_timer("goodbye", None, 20.0)) == ["idle"]
    p, _ = conversation()
    prompt = p.prompt("one minute left", 0.0)
    assert types(prompt) == ["conversation.item.create", "response.create"]
    assert sent(prompt)[0]["item"]["content"][0]["text"] == "one minute left"


def test_the_defaults_are_the_kiosks_toggle_half_duplex_call() -> None:
    """Without options: greets at once, toggle mode, half duplex with a 0.3 s echo tail, a 2 s long press,
    48 kHz microphone frames (4800 samples are the 100 ms a held turn needs)."""
    lesson = Lesson(kiosk_id="kiosk-1")
    c = Conversation(lesson)
    assert types(c.start(0.0)) == ["response.create"]
    server = Server(c, buffer_events=False)
    server.response(0.1, "Hello there", audio_ms=500)
    c.on_audible(True, 0.2)
    assert not c.mic_open(0.5)
    c.on_audible(False, 1.0)
    assert not c.mic_open(1.29) and c.mic_open(1.3)
    press = c.press(2.0)
    assert timers(press)["long_press"].delay_s == 2.0 and ends(press) == ["button"]
    hold = Conversation(Lesson(kiosk_id="kiosk-1"), mode="hold", greet=False)
    hold.press(0.0)
    hold.mic_frames(np.full(4800, 3000, dtype=np.int16), 0.05)
    assert types(hold.release(0.2)) == ["input_audio_buffer.commit", "response.create"]


def test_a_stalled_prompt_is_asked_again_as_a_prompt_counting_from_its_last_progress() -> None:
    """Times far from zero: the stall counts from the response's last progress, not from zero."""
    c, _ = conversation()
    server = Server(c)
    c.prompt("one minute left", 100.0)
    server.feed(100.0, "response.created", response={"id": "resp_p"})
    server.feed(105.0, "response.output_audio_transcript.delta", response_id="resp_p", item_id="it", delta="One ")
    again = c.on_timer("stall", None, 110.0)
    assert timers(again)["stall"].delay_s == pytest.approx(25.0) and not sent(again)
    stalled = c.on_timer("stall", None, 135.0)
    assert types(stalled) == ["response.cancel"] and timers(stalled)["retry"].token == 2.0
    assert types(c.on_timer("retry", 2.0, 136.0)) == ["response.create"]
    assert c.responses.request is not None and c.responses.request.purpose == "prompt"


def test_after_the_error_cue_the_next_failure_is_retried_again() -> None:
    c, _ = conversation()
    server = Server(c)
    for attempt in range(2):
        _, _, out = server.response(float(attempt), "", status="failed", error={"code": "server_error"})
    assert any(isinstance(x, o.ErrorCue) for x in out)
    _, _, later = server.response(5.0, "", status="failed", error={"code": "server_error"})
    assert "retry" in timers(later) and not any(isinstance(x, o.ErrorCue) for x in later)


def test_answers_failing_before_the_session_is_confirmed_do_not_cancel_the_greeting() -> None:
    c, _ = conversation(greet=True, session={"instructions": "x"})
    c.start(0.0)
    for at in (0.1, 0.2):
        asked = c.say("hello?")
        event_id = next(e for e in sent(asked) if e["type"] == "response.create")["event_id"]
        c.on_event(ev("error", error={"code": "server_error", "event_id": event_id}), at)
    assert types(c.on_event(ev("session.updated"), 0.5)) == ["response.create"]
    assert c.responses.request is not None and c.responses.request.purpose == "greeting"


def test_held_turns_add_up_and_each_release_ends_its_hold() -> None:
    """Two held turns of 100 ms (each from two 50 ms frames): both committed, both counted; the release
    stops the long-press timer and closes the held turn; the answer asked is a reply, and a prompt asked
    while the button was held is asked as a prompt after a hold too short to commit."""
    c, lesson = conversation(mode="hold", mic_rate=48000)
    for start in (1.0, 3.0):
        c.press(start)
        c.mic_frames(np.full(2400, 3000, dtype=np.int16), start + 0.05)
        c.mic_frames(np.full(2400, 3000, dtype=np.int16), start + 0.1)
        out = c.release(start + 0.2)
        assert out[:2] == [o.StopTimer("long_press"), o.Listening(False)]
        assert types(out) == ["input_audio_buffer.commit", "response.create"]
        assert c.responses.request is not None and c.responses.request.purpose == "reply"
        c.responses.request = None  # answered
    assert lesson.learner_audio_s == pytest.approx(0.2)
    c.press(5.0)
    c.prompt("one minute left", 5.1)
    out = c.release(5.2)
    assert types(out) == ["input_audio_buffer.clear", "response.create"]
    assert c.responses.request is not None and c.responses.request.purpose == "prompt"


def test_the_truncate_leaves_out_what_the_speaker_still_holds_and_a_known_length_wins_over_words() -> None:
    """A barge-in 5 s into a 10 s answer of four slow words, with 0.5 s still in the speaker's buffer:
    4.5 s heard, so two of the four words are kept (by the words alone it would have been all four)."""
    c, lesson = conversation()
    server = Server(c, buffer_events=False)
    _rid, item, _ = server.response(0.0, "Slowly spoken four words", audio_ms=10000)
    c.on_audible(True, 1.0)
    out = c.press(6.0, backlog_s=0.5)
    assert [(e["item_id"], e["audio_end_ms"]) for e in sent(out) if e["type"] == "conversation.item.truncate"] \
        == [(item, 4500)]
    [turn] = [t for t in lesson.transcript.turns if t.role == "tutor"]
    assert turn.text == "Slowly spoken …"


def test_a_barge_in_on_audio_without_words_changes_no_turn_and_a_goodbye_still_stops_the_audio() -> None:
    c, _ = conversation()
    server = Server(c, buffer_events=False)
    server.feed(0.0, "response.created", response={"id": "r_audio"})
    server.feed(0.0, "response.output_item.added", response_id="r_audio", item={"id": "i_audio", "role": "assistant"})
    c.on_audible(True, 0.5)
    out = c.press(1.0)
    assert not [x for x in out if isinstance(x, o.TurnChanged)]
    g, _ = conversation()
    g.goodbye("time_limit", "say goodbye", 0.0)
    Server(g, buffer_events=False).response(0.5, "Goodbye my friend", done=False)
    g.on_audible(True, 0.6)
    out = g.press(1.0)
    assert types(out)[:2] == ["response.cancel", "output_audio_buffer.clear"] and ends(out) == ["time_limit"]


def test_the_conversation_passes_on_what_the_server_says_of_each_answer() -> None:
    """Each answer's length comes from its usage; a stall timer stops only for the answer generating; the
    wait for audio starts only for audio not yet started; only failed or incomplete answers mark their
    words and ask for a checkpoint."""
    c, lesson = conversation()
    server = Server(c, buffer_events=False)
    rid, _item, out = server.response(0.0, "Hello there", audio_ms=1000)
    assert c.responses.length_ms(rid) == 1000.0 and o.StopTimer("stall") in out
    assert "audio_wait" in timers(out) and not any(isinstance(x, o.Checkpoint) for x in out)
    assert [t.status for t in lesson.transcript.tutor_turns_of(rid)] == [None]  # only failures are marked
    c.on_audible(True, 0.05)
    again = server.done(0.1, rid)  # a late repeat: nothing is generating, its audio plays
    assert o.StopTimer("stall") not in again and "audio_wait" not in timers(again)
    p, _ = conversation()
    ps = Server(p, buffer_events=False)
    prid, _pi, _ = ps.response(0.0, "Playing already", done=False)
    p.on_audible(True, 0.2)
    done = ps.done(0.6, prid, audio_ms=500)
    assert "audio_wait" not in timers(done) and o.StopTimer("stall") in done  # its audio has started
    rid3, _i3, failed = server.response(1.0, "Broken answer", status="failed",
                                        error={"code": "server_error"})
    assert any(isinstance(x, o.Checkpoint) for x in failed)
    assert [t.status for t in lesson.transcript.tutor_turns_of(rid3)] == ["failed"]
    server.feed(2.0, "response.done", response={"id": "x", "status": "failed",
                                                "status_details": {"reason": "overloaded",
                                                                   "error": {"code": "server_error"}}})
    assert lesson.errors[-1].message == "server_error: overloaded"


def test_a_failed_prompt_answer_is_asked_again_as_a_prompt_and_server_errors_can_end_on_quota() -> None:
    c, _ = conversation()
    server = Server(c)
    c.prompt("one minute left", 0.0)
    _, _, out = server.response(0.5, "", status="failed", error={"code": "server_error"})
    assert timers(out)["retry"].token == 2.0
    q, lesson = conversation()
    asked = q.say("hello")
    event_id = next(e for e in sent(asked) if e["type"] == "response.create")["event_id"]
    out = q.on_event(ev("error", error={"code": "insufficient_quota", "event_id": event_id}), 1.0)
    assert ends(out) == ["quota_exceeded"] and lesson.errors[-1].message == ""


def test_the_servers_audio_buffer_events_move_the_conversations_playhead() -> None:
    c, _ = conversation()
    server = Server(c)
    rid1, item1, _ = server.response(0.0, "First answer", audio_ms=4000)
    c.on_audible(True, 1.0)
    rid2, item2, _ = server.response(2.0, "Second answer", audio_ms=4000)
    server.audio_started(3.0, rid2)  # the first answer is over: the second plays from now
    assert c.audible_item == (rid2, item2) and c.played_ms(4.0) == pytest.approx(1000.0)
    assert c.played_ms(4.0, backlog_s=0.25) == pytest.approx(750.0)
    rid3, item3, _ = server.response(5.0, "Third answer", audio_ms=4000)
    server.feed(6.0, "output_audio_buffer.stopped", response_id=rid2)
    assert [a.item_id for a in c.playhead.queue] == [item3]
    server.feed(6.5, "output_audio_buffer.stopped")  # no answer named, not a clear: nothing changes
    assert [a.item_id for a in c.playhead.queue] == [item3]
    server.feed(7.0, "output_audio_buffer.cleared")
    assert not c.playhead.queue
    assert (rid1, item1) != (rid3, item3)


def test_the_goodbye_waits_for_an_answer_still_asked_for_and_ends_at_once_when_cancelled() -> None:
    c, _ = conversation()
    server = Server(c, buffer_events=False)
    c.goodbye("time_limit", "Say goodbye now.", 0.0)
    server.response(0.5, "Goodbye!", audio_ms=1000)
    c.on_audible(True, 0.6)
    c.say("Wait, one more thing!")  # asked before the goodbye is heard out
    assert ends(c.on_audible(False, 1.8)) == []
    g, _ = conversation()
    gs = Server(g, buffer_events=False)
    gs.response(0.0, "Still talking", audio_ms=5000)
    g.on_audible(True, 0.1)
    g.goodbye("time_limit", "Say goodbye now.", 0.2)
    _rid, _item, out = gs.response(0.3, "Good", status="cancelled")
    assert ends(out) == ["time_limit"] and o.StopTimer("stall") in out
    t, _ = conversation()
    t.goodbye("time_limit", "Say goodbye now.", 0.0)
    assert ends(t.on_timer("goodbye", None, 20.0)) == ["time_limit"]
    cut, _ = conversation()
    cut.goodbye("idle", "Say goodbye now.", 0.0)
    _rid, _item, out = Server(cut).response(0.5, "Goodbye and", status="incomplete")
    assert any(isinstance(x, o.Checkpoint) for x in out) and ends(out) == ["idle"]  # its words kept, then the end


def test_session_confirmation_greets_only_when_a_greeting_waits_for_it() -> None:
    c, _lesson = conversation(greet=False, session={"instructions": "x"})
    c.start(0.0)
    assert c.on_event(ev("session.updated"), 0.2) == []
    early, _ = conversation(greet=True, session={"instructions": "x"})
    assert early.on_event(ev("session.updated"), 0.0) == []  # before the call started: nothing to greet yet
    now, nl = conversation(greet=True)
    assert types(now.start(5.0)) == ["response.create"] and nl.timeline.stamps["greeting_sent"] == 5.0
    late, ll = conversation(greet=True, session={"instructions": "x"})
    late.start(0.0)
    late.on_timer("greet", None, 2.0)
    assert ll.timeline.stamps["greeting_sent"] == 2.0
    assert c.on_timer("no-such-timer", None, 1.0) == []


def test_the_learners_speech_is_timed_within_bounds_and_odd_fields_are_ignored() -> None:
    c, lesson = conversation()
    server = Server(c)
    for n, (start, end) in enumerate(((1000, 2000), (3000, 3500))):
        server.feed(0.0, "input_audio_buffer.speech_started", item_id=f"s{n}", audio_start_ms=start)
        server.feed(0.0, "input_audio_buffer.speech_stopped", item_id=f"s{n}", audio_end_ms=end)
    assert lesson.learner_audio_s == pytest.approx(1.5)
    server.feed(0.0, "input_audio_buffer.speech_started", item_id="odd", audio_start_ms="100")
    server.feed(0.0, "input_audio_buffer.speech_stopped", item_id="odd", audio_end_ms=900)
    assert lesson.learner_audio_s == pytest.approx(1.5)
    for n in range(64):  # never stopped: the memory of started speech is bounded
        server.feed(0.0, "input_audio_buffer.speech_started", item_id=f"open{n}", audio_start_ms=0)
    server.feed(0.0, "input_audio_buffer.speech_stopped", item_id=["not", "hashable"], audio_end_ms=900)
    server.feed(0.0, "input_audio_buffer.speech_started", item_id="over", audio_start_ms=0)
    server.feed(0.0, "input_audio_buffer.speech_stopped", item_id="over", audio_end_ms=1000)
    assert lesson.learner_audio_s == pytest.approx(1.5)
    for error, message in (({"code": "bad_audio"}, "bad_audio"), ({}, "transcription failed")):
        server.feed(0.0, "conversation.item.input_audio_transcription.failed", item_id="x", error=error)
        assert lesson.errors[-1].message == message


def test_a_pause_while_the_answer_is_generated_keeps_its_audio_queued() -> None:
    """The speaker goes quiet between two sentences while the server still generates: when the answer
    is then complete, its audio still holds the floor until the speaker is heard out."""
    c, _ = conversation()
    server = Server(c, buffer_events=False)
    rid, _item, _ = server.response(0.0, "Two sentences.", done=False)
    c.on_audible(True, 0.2)
    c.on_audible(False, 1.0)  # a pause
    server.done(1.5, rid)
    assert c.tutor_has_floor and c.playhead.queue
    c.on_audible(True, 2.0)
    c.on_audible(False, 3.0)
    assert not c.tutor_has_floor


def test_a_typed_message_is_sent_and_kept_as_the_learners_turn() -> None:
    c, lesson = conversation()
    out = c.say("What is a roundabout?")
    [turn] = lesson.transcript.turns
    assert out[0] == o.Send(out[0].event) and sent(out)[0]["item"]["content"][0]["text"] == "What is a roundabout?"  # type: ignore[union-attr]
    assert o.TurnChanged(turn) in out and (turn.role, turn.text) == ("learner", "What is a roundabout?")
    g, _ = conversation()
    assert sent(g.goodbye("idle", "Say goodbye now.", 0.0))[0]["item"]["content"][0]["text"] == "Say goodbye now."


def test_items_are_named_by_whichever_event_a_server_sends_first() -> None:
    """Servers differ: an item may be named only by ``output_item.added`` (without a role when it is not a
    message), only by a content part, or only by text deltas; an answer first seen by its item is a reply
    created then (the speaker already sounding starts it at once)."""
    c, _ = conversation()
    server = Server(c, buffer_events=False)
    server.feed(0.0, "response.output_item.added", response_id="r1", item={"id": "i1", "role": "assistant"})
    server.feed(0.0, "response.output_item.added", response_id="r2", item={"id": "i2", "type": "function_call"})
    server.feed(0.0, "response.content_part.added", response_id="r3", item_id="i3")
    server.feed(0.0, "response.output_text.delta", response_id="r4", item_id="i4", delta="x")
    assert [a.item_id for a in c.playhead.queue] == ["i1", "i2", "i3", "i4"]
    late, _ = conversation()
    ls = Server(late, buffer_events=False)
    late.on_audible(True, 1.0)
    ls.feed(2.0, "response.output_audio_transcript.delta", response_id="r_new", item_id="i_new", delta="Hi ")
    assert late.playhead.head is not None and late.playhead.head.started_at == 2.0
    _ = ls.feed(2.5, "response.done", response={"id": "r_new", "status": "failed",
                                                "status_details": {"error": {"code": "server_error"}}})
    assert timers(_)["retry"].token == 1.0  # asked again as a reply


def test_only_the_answer_being_generated_counts_as_progress() -> None:
    c, _ = conversation()
    server = Server(c)
    server.feed(0.0, "response.created", response={"id": "r_active"})
    server.feed(20.0, "response.output_audio_transcript.delta", response_id="r_other", item_id="x", delta="late ")
    stalled = c.on_timer("stall", None, 31.0)
    assert types(stalled) == ["response.cancel"]


def test_a_learners_spoken_turn_is_reported_and_ends_the_lesson_only_when_it_is_a_stop_phrase() -> None:
    c, lesson = conversation()
    server = Server(c)
    out = server.feed(0.5, "conversation.item.input_audio_transcription.completed", item_id="l1",
                      transcript="I like apples.")
    [turn] = lesson.transcript.turns
    assert o.TurnChanged(turn) in out and o.Touch() in out and not ends(out)
    assert not any(isinstance(x, o.TutorHeard) for x in out)  # the tutor was never heard: nothing to report


def test_a_short_hold_with_nothing_waiting_asks_for_no_answer() -> None:
    c, _ = conversation(mode="hold")
    c.press(1.0)
    out = c.release(1.05)
    assert types(out) == ["input_audio_buffer.clear"] and c.responses.request is None


def test_a_goodbye_heard_out_ends_the_lesson_and_still_tells_the_tutor_is_quiet() -> None:
    c, _ = conversation()
    server = Server(c, buffer_events=False)
    c.goodbye("idle", "Say goodbye now.", 0.0)
    server.response(0.5, "Goodbye!", audio_ms=1000)
    c.on_audible(True, 0.6)
    out = c.on_audible(False, 1.8)
    assert ends(out) == ["idle"] and o.TutorHeard(False) in out and o.Touch() in out


def test_a_barge_in_cuts_the_item_being_played_not_the_answers_last_one() -> None:
    """One answer in two items (two sentences, each its own item): the first is audible when the learner
    presses, so the first is cut to what was heard and the second, never heard, keeps nothing."""
    c, lesson = conversation()
    server = Server(c, buffer_events=False)
    server.feed(0.0, "response.created", response={"id": "r2i"})
    for item, text in (("first", "one two three four five six seven eight"), ("second", "nine ten eleven")):
        server.feed(0.0, "response.output_item.added", response_id="r2i", item={"id": item, "role": "assistant"})
        server.feed(0.0, "response.output_audio_transcript.done", response_id="r2i", item_id=item, transcript=text)
    server.feed(0.0, "response.done", response={"id": "r2i", "status": "completed",
                                                "usage": {"output_token_details": {"audio_tokens": 80}}})
    c.on_audible(True, 1.0)
    c.press(3.0)  # 2 s of a 4 s answer
    first, second = [t for t in lesson.transcript.turns if t.role == "tutor"]
    assert first.text == "one two three four …" and second.text == "…"


# -- random sequences -------------------------------------------------------------------------------

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule  # noqa: E402

from appliance.core.responses import MAX_TRACKED  # noqa: E402

STATUSES = st.sampled_from(["completed", "failed", "cancelled", "incomplete"])
CODES = st.sampled_from(["server_error", "invalid_value", "session_expired", "insufficient_quota",
                         "conversation_already_has_active_response", "rate_limit_exceeded"])


class ConversationMachine(RuleBasedStateMachine):
    """Random server events, speaker changes, presses, releases and timers against one conversation.

    Invariants: in half duplex the mic is never open while the tutor has the floor (in hold-to-talk,
    the learner never holds the floor together with the tutor); a truncate names only the item being
    played, at no more than was played; a cancel names only a response being generated; the lesson
    ends at most once and every end leaves a record the companion accepts; per-call memory is bounded."""

    @initialize(mode=st.sampled_from(["toggle", "hold"]), buffer_events=st.booleans(), greet=st.booleans())
    def start(self, mode: str, buffer_events: bool, greet: bool) -> None:
        self.c, self.lesson = conversation(mode=mode, greet=greet, session={"instructions": "x"})
        self.buffer_events = buffer_events
        self.now = self.lesson.started_mono + 1.0
        self.pending: dict[str, float | None] = {}
        self.active: set[str] = set()
        self.created: list[str] = []
        self.items: dict[str, str] = {}
        self.ended: list[str] = []
        self.audible_started: dict[str, float] = {}
        self.n = 0
        self.apply(self.c.start(self.now))

    def apply(self, outcomes: list[o.Outcome], playing: tuple[str, str] | None = None,
              played_ms: float | None = None) -> None:
        if self.ended:
            assert outcomes == [], f"outcomes after the end: {outcomes}"
        for x in outcomes:
            if isinstance(x, o.StartTimer):
                self.pending[x.name] = x.token
            elif isinstance(x, o.StopTimer):
                self.pending.pop(x.name, None)
            elif isinstance(x, o.EndLesson):
                self.ended.append(x.reason)
            elif isinstance(x, o.Send) and x.event["type"] == "conversation.item.truncate":
                assert playing is not None and x.event["item_id"] == playing[1], "truncate of an item not playing"
                assert played_ms is not None and x.event["audio_end_ms"] <= round(played_ms) + 1
            elif isinstance(x, o.Send) and x.event["type"] == "response.cancel":
                assert x.event.get("response_id") in self.active, "cancel of a response not being generated"
        assert len(self.ended) <= 1

    def event(self, etype: str, **fields: Any) -> None:
        self.apply(self.c.on_event(ev(etype, **fields), self.now))

    @rule(dt=st.floats(0.0, 3.0))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule()
    def response_created(self) -> None:
        self.n += 1
        rid = f"resp_{self.n}"
        self.created.append(rid)
        self.active.add(rid)
        self.event("response.created", response={"id": rid})

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def item_and_words(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(self.created))
        item = self.items.setdefault(rid, f"item_{rid}")
        self.event("response.output_item.added", response_id=rid, item={"id": item, "role": "assistant"})
        self.event("response.output_audio_transcript.delta", response_id=rid, item_id=item,
                   delta=data.draw(st.sampled_from(["hello ", "there ", "stop "])))
        if data.draw(st.booleans()):
            self.event("response.output_audio_transcript.done", response_id=rid, item_id=item,
                       transcript=data.draw(st.sampled_from(["Hello there.", "Well done!"])))

    @precondition(lambda self: self.created)
    @rule(data=st.data(), status=STATUSES, audio_ms=st.one_of(st.none(), st.integers(0, 20000)))
    def response_done(self, data: st.DataObject, status: str, audio_ms: int | None) -> None:
        rid = data.draw(st.sampled_from(self.created))
        self.active.discard(rid)
        usage = {"output_token_details": {"audio_tokens": audio_ms // 50}} if audio_ms is not None else {}
        details = {"error": {"code": data.draw(CODES)}} if status == "failed" else {}
        self.event("response.done", response={"id": rid, "status": status, "usage": usage,
                                              "status_details": details})

    @precondition(lambda self: self.created)
    @rule(data=st.data(), started=st.booleans())
    def audio_buffer(self, data: st.DataObject, started: bool) -> None:
        if self.buffer_events:
            rid = data.draw(st.sampled_from(self.created))
            self.event("output_audio_buffer.started" if started else "output_audio_buffer.stopped", response_id=rid)

    @rule(audible=st.booleans())
    def speaker(self, audible: bool) -> None:
        self.apply(self.c.on_audible(audible, self.now))

    @rule()
    def press(self) -> None:
        playing = self.c.audible_item
        played = self.c.played_ms(self.now)
        self.apply(self.c.press(self.now), playing, played)

    @rule()
    def release(self) -> None:
        self.apply(self.c.release(self.now))

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def a_timer_fires(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.pending)))
        token = self.pending.pop(name)
        self.apply(self.c.on_timer(name, token, self.now))

    @rule(text=st.sampled_from(["Hello.", "Stop.", "stop please", "I like apples."]))
    def learner_speaks(self, text: str) -> None:
        self.n += 1
        item = f"learner_{self.n}"
        self.event("input_audio_buffer.speech_started", item_id=item, audio_start_ms=self.n * 100)
        self.event("input_audio_buffer.speech_stopped", item_id=item, audio_end_ms=self.n * 100 + 50)
        self.event("conversation.item.input_audio_transcription.completed", item_id=item, transcript=text)

    @rule(code=CODES, names_request=st.booleans())
    def server_error(self, code: str, names_request: bool) -> None:
        request = self.c.responses.request
        event_id = request.event_id if names_request and request is not None else "evt_other"
        self.event("error", error={"code": code, "message": "m", "event_id": event_id})

    @rule(text=st.text(max_size=20))
    def typed(self, text: str) -> None:
        self.apply(self.c.say(text))

    @rule(junk=st.dictionaries(st.sampled_from(["response_id", "item_id", "response", "item", "delta"]),
                               st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers())),
                               max_size=4),
          etype=st.sampled_from(["response.done", "response.created", "output_audio_buffer.started",
                                 "response.output_item.added", "response.output_audio_transcript.delta",
                                 "error", "session.updated", "something.new"]))
    def hostile_event(self, junk: dict[str, Any], etype: str) -> None:
        self.event(etype, **junk)

    @invariant()
    def the_learner_and_the_tutor_never_share_the_floor(self) -> None:
        c = self.c
        if c.mode == "hold":
            assert not (c.listening and c.tutor_has_floor)
        elif c.half_duplex:
            assert not (c.mic_open(self.now) and c.tutor_has_floor)

    @invariant()
    def memory_is_bounded(self) -> None:
        assert len(self.c.responses) <= MAX_TRACKED + 1 and len(self.c.playhead.queue) <= MAX_TRACKED

    @invariant()
    def the_record_so_far_is_valid(self) -> None:
        validate_record(self.lesson.to_record("interrupted"))

    def teardown(self) -> None:
        if not hasattr(self, "lesson"):
            return
        reason = self.ended[0] if self.ended else "shutdown"
        self.lesson.transcript.flush()
        validate_record(self.lesson.final_record(reason))


TestConversationMachine = ConversationMachine.TestCase
TestConversationMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None,
                                            suppress_health_check=[HealthCheck.too_slow])


def test_a_server_pausing_its_answer_is_not_counted_as_heard_but_the_speechs_own_silence_is() -> None:
    """Sentence one heard for 1.2 s, then a 1.6 s silence while the server pauses its still-active answer,
    then 0.5 s of sentence two: of the silence, only the speech's own edges count (0.4 s); a short
    silence inside a sentence counts whole; the silence going on at a press never counts."""
    from appliance.core.playhead import GAP_S, QUIET_LAG_S, SPEECH_EDGE_S

    c, _ = conversation()
    Server(c, buffer_events=False).response(0.0, "One. Two.", done=False)
    c.on_audible(True, 1.0)
    c.on_audible(False, 2.2 + QUIET_LAG_S)  # sound stopped at 2.2, reported a hangover later
    assert c.played_ms(2.6) == pytest.approx(1200)  # quiet now: the silence so far is not counted
    c.on_audible(True, 3.8)
    assert GAP_S <= 3.8 - 2.2
    assert c.played_ms(4.3) == pytest.approx((1.2 + SPEECH_EDGE_S + 0.5) * 1000)
    c.on_audible(False, 4.5 + QUIET_LAG_S)
    c.on_audible(True, 4.8)  # a 0.3 s pause inside the sentence: speech, counted
    assert c.played_ms(5.0) == pytest.approx((1.2 + SPEECH_EDGE_S + 0.5 + 0.2 + 0.3 + 0.2) * 1000)


def test_an_open_turn_cut_by_a_press_keeps_only_the_share_heard() -> None:
    """Words still arriving (no transcript done yet): the share heard is counted over the words so far."""
    c, lesson = conversation()
    server = Server(c, buffer_events=False)
    server.feed(0.0, "response.created", response={"id": "r1"})
    for word in ["one", "two", "three", "four", "five", "six"]:
        server.feed(0.0, "response.output_audio_transcript.delta", response_id="r1", item_id="i1", delta=word + " ")
    c.on_audible(True, 0.1)
    c.press(0.1 + 6 / 2.6 / 3)  # a third of the guessed length of six words
    turn = next(t for t in lesson.transcript.turns if t.role == "tutor")
    assert turn.interrupted and turn.text == "one two …"
