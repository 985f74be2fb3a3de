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
    assert types(done) == ["response.create"]


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
