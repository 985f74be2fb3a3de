"""Every GA Realtime server event type, and what the kiosk does with it.

Why a table in code: the kiosk logs an event type it has never heard of once (new types appear over
time), so it needs to know which ones it ignores on purpose. docs/REALTIME_EVENTS.md shows the same
table for people; a test keeps both equal to the openai SDK's ``RealtimeServerEvent`` union.
"""

from __future__ import annotations

HANDLED: dict[str, str] = {
    "session.created": "first event of a call; nothing to do (the kiosk sends its own session.update)",
    "session.updated": "the kiosk's session config is applied: the greeting may start",
    "error": "logged and kept in the lesson's errors; session_expired ends the lesson; an error naming "
             "the greeting's event_id retries the greeting once; one refusing the session.update's voice "
             "sends it again with marin (warning voice_refused)",
    "input_audio_buffer.speech_started": "learner activity (idle countdown); start of the learner turn",
    "input_audio_buffer.speech_stopped": "end of a learner speech segment (its length feeds the cost "
                                          "estimate when usage has no details)",
    "input_audio_buffer.committed": "in a call without input transcription, an audio-only learner turn; "
                                    "otherwise the transcription events follow",
    "conversation.item.input_audio_transcription.completed": "the learner's words: a learner turn",
    "conversation.item.input_audio_transcription.failed": "a learner turn kept as not understood, error kept",
    "response.created": "a response is active (response.cancel only while one is)",
    "response.output_item.added": "the tutor item being spoken (conversation.item.truncate names it)",
    "response.output_audio_transcript.delta": "the tutor's words so far",
    "response.output_audio_transcript.done": "the tutor's turn is complete",
    "response.output_text.delta": "the tutor's words so far (text-only sessions)",
    "response.output_text.done": "the tutor's turn is complete (text-only sessions)",
    "response.done": "usage and status: failed/incomplete responses are recorded and marked; quota and "
                     "rate limit errors end the lesson",
    "output_audio_buffer.started": "the tutor is audible (WebRTC); start of the played item",
    "output_audio_buffer.stopped": "the tutor's audio finished (WebRTC)",
    "output_audio_buffer.cleared": "the tutor's audio was dropped after a barge-in (WebRTC)",
}

IGNORED: dict[str, str] = {
    "conversation.created": "beta-era event; no conversation state is needed on the kiosk",
    "conversation.item.added": "items are tracked by the response and transcription events",
    "conversation.item.created": "beta name of conversation.item.added",
    "conversation.item.done": "the same words arrive in the transcript events",
    "conversation.item.deleted": "the kiosk never deletes items",
    "conversation.item.retrieved": "the kiosk never retrieves items",
    "conversation.item.truncated": "confirms the kiosk's own truncate; the heard text is already saved",
    "conversation.item.input_audio_transcription.delta": "partial learner words; the completed event "
                                                         "carries them all",
    "conversation.item.input_audio_transcription.segment": "diarization segments; not used",
    "input_audio_buffer.cleared": "confirms the kiosk's own clear",
    "input_audio_buffer.timeout_triggered": "idle timeouts are the kiosk's own (lesson.idle_limit_s)",
    "input_audio_buffer.dtmf_event_received": "SIP telephony only",
    "rate_limits.updated": "informational; quota problems arrive as failed responses",
    "response.content_part.added": "the transcript events carry the words",
    "response.content_part.done": "the transcript events carry the words",
    "response.output_item.done": "the transcript's done event closes the turn",
    "response.output_audio.delta": "not sent on WebRTC (audio travels as RTP)",
    "response.output_audio.done": "not sent on WebRTC (audio travels as RTP)",
    "response.function_call_arguments.delta": "the tutor has no tools",
    "response.function_call_arguments.done": "the tutor has no tools",
    "mcp_list_tools.in_progress": "the tutor has no MCP tools",
    "mcp_list_tools.completed": "the tutor has no MCP tools",
    "mcp_list_tools.failed": "the tutor has no MCP tools",
    "response.mcp_call_arguments.delta": "the tutor has no MCP tools",
    "response.mcp_call_arguments.done": "the tutor has no MCP tools",
    "response.mcp_call.in_progress": "the tutor has no MCP tools",
    "response.mcp_call.completed": "the tutor has no MCP tools",
    "response.mcp_call.failed": "the tutor has no MCP tools",
}

KNOWN = frozenset(HANDLED) | frozenset(IGNORED)
