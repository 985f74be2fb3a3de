"""The tutor's voice: chosen per kiosk (config) or per level (companion), checked against the GA voice
list wherever a name enters (kiosk config, companion config, lesson record), sent in the session config,
kept with each lesson, and a voice the model refuses falls back to the default with a warning."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.call.events import ServerEvent
from appliance.config import ConfigError, config_from_dict
from appliance.contract.record import InvalidRecord, validate_record
from appliance.contract.voices import DEFAULT_VOICE, VOICES
from appliance.core.conversation import Conversation
from appliance.core.lesson import Lesson
from appliance.core.outcomes import Send
from appliance.daemon.opener import CompanionCallOpener
from appliance.uplink.client import RealtimeToken

not_a_voice = st.text(max_size=30).filter(lambda s: s not in VOICES and s != "")


# -- the kiosk config ------------------------------------------------------------------------------


def test_kiosk_config_takes_a_voice_and_defaults_to_the_companions_choice() -> None:
    assert config_from_dict({}).lesson.voice == ""
    assert config_from_dict({"lesson": {"voice": "coral"}}).lesson.voice == "coral"


@given(bad=not_a_voice)
@settings(max_examples=80, deadline=None)
def test_kiosk_config_refuses_a_voice_not_in_the_ga_list_naming_the_key(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"lesson": {"voice": bad}}, source="kiosk.toml")
    assert info.value.key == "lesson.voice"
    assert "alloy ash ballad coral echo sage shimmer verse marin cedar" in info.value.message


def test_kiosk_config_refuses_a_voice_that_is_not_a_string() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"lesson": {"voice": 3}})
    assert info.value.key == "lesson.voice"


# -- the lesson record -------------------------------------------------------------------------------


def record(**extra: Any) -> dict[str, Any]:
    return {"schema": 1, "session_id": str(uuid.uuid4()), "kiosk_id": "k1", "started_at": "2026-12-01T10:00:00Z",
            "ended_at": "2026-12-01T10:05:00Z", "end_reason": "button", "turns": [], **extra}


@given(voice=st.sampled_from(VOICES))
def test_a_record_carries_a_ga_voice(voice: str) -> None:
    assert validate_record(record(voice=voice))["voice"] == voice  # type: ignore[typeddict-item]


def test_a_record_without_a_voice_is_still_accepted() -> None:
    validate_record(record())
    validate_record(record(voice=None))


@given(bad=st.one_of(not_a_voice, st.integers(), st.lists(st.text(max_size=3), max_size=2)))
def test_a_record_with_an_unknown_voice_is_refused_naming_the_field(bad: Any) -> None:
    with pytest.raises(InvalidRecord, match=r"^voice "):
        validate_record(record(voice=bad))


def test_the_lesson_record_keeps_the_voice_used() -> None:
    lesson = Lesson(kiosk_id="k1")
    lesson.voice = "cedar"
    built = lesson.to_record("button")
    assert built["voice"] == "cedar"  # type: ignore[typeddict-item]
    validate_record(built)


# -- the session config: who wins ------------------------------------------------------------------


def token(voice: str) -> RealtimeToken:
    return RealtimeToken("ek_test", 0.0, "gpt-realtime-2.1-mini", voice, "Be a tutor.")


@pytest.mark.parametrize(("kiosk_voice", "companion_voice", "sent"), [
    ("coral", "marin", "coral"),   # the kiosk's own setting wins
    ("", "sage", "sage"),          # else the companion's (its per-level voice or its default)
    ("", "", DEFAULT_VOICE),       # an older companion that names none: the default
])
def test_the_session_config_carries_the_voice_by_precedence(kiosk_voice: str, companion_voice: str,
                                                            sent: str) -> None:
    config = config_from_dict({"lesson": {"voice": kiosk_voice}} if kiosk_voice else {})
    opener = CompanionCallOpener(config, companion=None)  # type: ignore[arg-type]
    lesson = Lesson(kiosk_id="k1")
    session = opener._session_config(token(companion_voice), "Be a tutor.", lesson)
    assert session["audio"]["output"] == {"voice": sent}
    assert lesson.voice == sent


# -- a refused voice -------------------------------------------------------------------------------


def event(type_: str, **data: Any) -> ServerEvent:
    return ServerEvent(type_, {"type": type_, **data})


def refused(event_id: str, voice: str) -> ServerEvent:
    return event("error", error={"type": "invalid_request_error", "code": "invalid_value",
                                 "message": f"Invalid value: '{voice}'. Supported values are: ...",
                                 "param": "session.audio.output.voice", "event_id": event_id})


def sent_events(outcomes: list[Any]) -> list[dict[str, Any]]:
    return [o.event for o in outcomes if isinstance(o, Send)]


def test_a_refused_voice_is_sent_again_as_the_default_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    lesson = Lesson(kiosk_id="k1")
    lesson.voice = "ballad"
    conversation = Conversation(lesson, session={"instructions": "x", "audio": {"output": {"voice": "ballad"}}})
    (update,) = sent_events(conversation.start(0.0))
    out = conversation.on_event(refused(update["event_id"], "ballad"), 0.1)
    (again,) = sent_events(out)
    assert again["type"] == "session.update"
    assert again["session"]["audio"]["output"]["voice"] == DEFAULT_VOICE
    assert again["session"]["instructions"] == "x"  # the rest of the config is sent again too
    assert lesson.voice == DEFAULT_VOICE
    assert [e.code for e in lesson.errors] == ["invalid_value", "voice_refused"]
    assert "ballad" in lesson.errors[-1].message and DEFAULT_VOICE in lesson.errors[-1].message
    assert any(r.levelname == "WARNING" and "ballad" in r.getMessage() for r in caplog.records)
    # The greeting still follows the confirmation of the second config.
    greet = sent_events(conversation.on_event(event("session.updated", session={}), 0.2))
    assert [e["type"] for e in greet] == ["response.create"]


def test_a_refused_default_voice_is_sent_again_without_a_voice() -> None:
    lesson = Lesson(kiosk_id="k1")
    conversation = Conversation(lesson, session={"instructions": "x", "audio": {"output": {"voice": DEFAULT_VOICE}}})
    (update,) = sent_events(conversation.start(0.0))
    (again,) = sent_events(conversation.on_event(refused(update["event_id"], DEFAULT_VOICE), 0.1))
    assert "output" not in again["session"].get("audio", {})
    # Refused again: no loop of retries.
    assert sent_events(conversation.on_event(refused(again["event_id"], DEFAULT_VOICE), 0.2)) == []


def test_an_error_about_something_else_does_not_change_the_voice() -> None:
    lesson = Lesson(kiosk_id="k1")
    lesson.voice = "ash"
    conversation = Conversation(lesson, session={"instructions": "x", "audio": {"output": {"voice": "ash"}}})
    sent_events(conversation.start(0.0))
    other = event("error", error={"type": "invalid_request_error", "code": "invalid_value",
                                  "message": "Invalid value", "param": "session.instructions", "event_id": "evt_other"})
    assert sent_events(conversation.on_event(other, 0.1)) == []
    assert lesson.voice == "ash"
