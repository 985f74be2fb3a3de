"""Client events are GA-shaped (validated by the official SDK's models); server events parse safely."""

from __future__ import annotations

import pytest
from openai.types.realtime import RealtimeClientEvent
from pydantic import TypeAdapter

from appliance.call import events

CLIENT = TypeAdapter(RealtimeClientEvent)

ALL_CLIENT_EVENTS = [
    events.session_update(instructions="be brief"),
    events.manual_turns_update(),
    events.user_text("How are you?"),
    events.system_text("One minute left."),
    events.response_create(),
    events.response_create("Say goodbye."),
    events.response_cancel(),
    events.response_cancel("resp_123"),
    events.output_audio_buffer_clear(),
    events.input_audio_buffer_commit(),
    events.input_audio_buffer_clear(),
    events.session_update(**events.session_config("be brief", "marin", transcription_model="gpt-4o-mini-transcribe",
                                                   turn_detection={"type": "server_vad", "silence_duration_ms": 500},
                                                   noise_reduction="far_field")),
    events.session_update(**events.session_config("be brief", "cedar", turn_detection=None)),
    events.item_truncate("item_123", 1530),
]


@pytest.mark.parametrize("event", ALL_CLIENT_EVENTS, ids=lambda e: e["type"])
def test_client_events_validate_against_sdk(event: dict) -> None:
    CLIENT.validate_python(event)
    assert "modalities" not in str(event)
    assert event["event_id"].startswith("evt_")


def test_event_ids_are_unique() -> None:
    ids = {events.response_create()["event_id"] for _ in range(100)}
    assert len(ids) == 100


def test_beta_names_map_to_ga() -> None:
    parsed = events.parse_server_event('{"type": "response.audio_transcript.delta", "delta": "hi"}')
    assert parsed is not None and parsed.type == "response.output_audio_transcript.delta"


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '{"no": "type"}', b"\xff\xfe", '{"type": 5}'])
def test_malformed_messages_are_dropped(raw: str | bytes, caplog: pytest.LogCaptureFixture) -> None:
    assert events.parse_server_event(raw) is None
    assert "dropped" in caplog.text
