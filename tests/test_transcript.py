"""Turns are assembled once per item, whatever number of done events the server sends."""

from __future__ import annotations

import itertools

import pytest

from appliance.call.events import ServerEvent
from appliance.core.lesson import Lesson, Usage, matches_stop_phrase
from appliance.core.transcript import Transcript

# OpenAI's published Realtime prices, USD per 1M tokens (https://openai.com/api/pricing/, "Realtime API";
# written here by hand, not imported, so a wrong table in the code fails the test).
MINI = {"audio_in": 10.00, "audio_out": 20.00, "text_in": 0.60, "text_out": 2.40}  # gpt-realtime-mini
FULL = {"audio_in": 32.00, "audio_out": 64.00, "text_in": 4.00, "text_out": 16.00}  # gpt-realtime


def ev(type_: str, **data: object) -> ServerEvent:
    return ServerEvent(type_, {"type": type_, **data})


def clock() -> object:
    counter = itertools.count(1_700_000_000)
    return lambda: float(next(counter))


def test_tutor_turn_once_despite_several_done_events() -> None:
    t = Transcript(clock=clock())
    for d in ("Hello", " there", "!"):
        assert t.handle(ev("response.output_audio_transcript.delta", response_id="r1", item_id="i1", delta=d)) is None
    turn = t.handle(ev("response.output_audio_transcript.done", response_id="r1", item_id="i1",
                       transcript="Hello there!"))
    assert turn is not None and turn.text == "Hello there!" and turn.role == "tutor"
    assert t.handle(ev("response.output_audio_transcript.done", response_id="r1", item_id="i1",
                       transcript="Hello there!")) is None
    assert t.handle(ev("response.done", response={"id": "r1", "status": "completed"})) is None
    assert [x["text"] for x in t.to_records()] == ["Hello there!"]


def test_cancelled_response_keeps_partial_text() -> None:
    t = Transcript(clock=clock())
    t.handle(ev("response.output_audio_transcript.delta", response_id="r2", item_id="i2", delta="Well, "))
    turn = t.handle(ev("response.done", response={"id": "r2", "status": "cancelled"}))
    assert turn is not None and turn.text == "Well,"


def test_learner_turn_ordered_by_speech_start() -> None:
    t = Transcript(clock=clock())
    t.handle(ev("input_audio_buffer.speech_started", item_id="u1", audio_start_ms=10))
    t.handle(ev("response.output_text.delta", response_id="r3", item_id="i3", delta="Hi"))
    t.handle(ev("response.output_text.done", response_id="r3", item_id="i3", text="Hi"))
    t.handle(ev("conversation.item.input_audio_transcription.completed", item_id="u1", transcript=" I like apples "))
    t.handle(ev("conversation.item.input_audio_transcription.completed", item_id="u1", transcript="again"))
    records = t.to_records()
    assert [(r["role"], r["text"], r["source"]) for r in records] == [
        ("learner", "I like apples", "voice"), ("tutor", "Hi", "voice")]
    assert records[0]["at"].endswith("Z")


def test_flush_closes_open_turns() -> None:
    t = Transcript(clock=clock())
    t.handle(ev("response.output_audio_transcript.delta", response_id="r", item_id="i", delta="Goodb"))
    assert [x.text for x in t.flush()] == ["Goodb"]
    assert t.flush() == []


def test_stop_phrase_matching() -> None:
    phrases = ["stop", "that's all"]
    assert matches_stop_phrase("Stop.", phrases)
    assert matches_stop_phrase("okay stop please", phrases)
    assert matches_stop_phrase("That's all!", phrases)
    assert not matches_stop_phrase("don't stop the music, I like it a lot", phrases)
    assert not matches_stop_phrase("stopwatch", phrases)


def test_record_metrics_and_cost() -> None:
    lesson = Lesson(kiosk_id="k1", model="gpt-realtime-mini", plan_id="p1",
                    targets=[{"id": "t1", "kind": "vocab", "text": "apple", "example": "I eat an apple."}])
    lesson.connected_at = lesson.pressed_at + 0.25
    lesson.transcript.add_typed("I like an apple")
    usage = Usage()
    usage.add({"input_tokens": 100, "output_tokens": 200,
               "input_token_details": {"audio_tokens": 60, "text_tokens": 40},
               "output_token_details": {"audio_tokens": 150, "text_tokens": 50}})
    usage.add("nonsense")
    lesson.usage = usage
    record = lesson.to_record("button", ended_at=lesson.started_at + 30)
    m = record["metrics"]
    assert record["schema"] == 1 and record["end_reason"] == "button"
    assert m["learner_turns"] == 1 and m["learner_words"] == 4 and m["targets_used"] == 1
    assert m["connect_ms"] == 250.0 and m["duration_s"] == 30.0
    assert m["usage"]["responses"] == 1
    # 60 audio + 40 text tokens in, 150 audio + 50 text tokens out, at the mini prices.
    by_hand = (60 * MINI["audio_in"] + 40 * MINI["text_in"] + 150 * MINI["audio_out"] + 50 * MINI["text_out"]) / 1e6
    assert by_hand == pytest.approx(0.003744)
    assert m["est_cost_usd"] == pytest.approx(by_hand, abs=1e-6)


def test_full_model_is_priced_at_the_full_rates() -> None:
    """Guards against every model being billed at the mini tier (mutation: price_tier always "mini")."""
    usage = Usage()
    usage.add({"input_token_details": {"audio_tokens": 1000, "text_tokens": 500},
               "output_token_details": {"audio_tokens": 2000, "text_tokens": 250}})
    by_hand = (1000 * FULL["audio_in"] + 500 * FULL["text_in"] + 2000 * FULL["audio_out"]
               + 250 * FULL["text_out"]) / 1e6
    assert by_hand == pytest.approx(0.166)
    assert usage.cost_usd("gpt-realtime") == pytest.approx(by_hand, abs=1e-6)
    mini = (1000 * MINI["audio_in"] + 500 * MINI["text_in"] + 2000 * MINI["audio_out"] + 250 * MINI["text_out"]) / 1e6
    assert usage.cost_usd("gpt-realtime-mini-2025-12-15") == pytest.approx(mini, abs=1e-6)
