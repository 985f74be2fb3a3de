"""Hostile values for property-based tests: any JSON, things shaped like Realtime server events, and
nesting deep enough to exhaust a recursive parser. Shared by tests/test_hostile_input.py (each edge alone)
and tests/test_unattended.py (the same values through a live call)."""

from __future__ import annotations

from hypothesis import strategies as st

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
EVENT_TYPES = ["response.output_audio_transcript.delta", "response.output_audio_transcript.done",
               "conversation.item.input_audio_transcription.completed", "response.done", "error",
               "output_audio_buffer.started", "input_audio_buffer.speech_started", "session.created"]
event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(EVENT_TYPES) | st.text(max_size=12)},
    optional={k: json_values for k in ("delta", "transcript", "text", "item_id", "response_id",
                                        "response", "error", "usage")},
)


def deep(depth: int) -> str:
    """A JSON array nested ``depth`` deep (5,000 exhausted the parser's recursion once)."""
    return "[" * depth + "]" * depth
