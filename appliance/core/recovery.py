"""What a conversation does when the server fails it: the learner hears the tutor again, or the error cue.

A mixin of :class:`~appliance.core.conversation.Conversation`: a failed response is asked for again once
after a pause; a second failure plays the error cue and the next turn starts afresh; a quota the account
has used up ends the lesson (no answer can succeed); a response that produces nothing for too long is
cancelled and treated as failed, so the tutor never holds the floor for ever.
"""

from __future__ import annotations

from appliance.call import events
from appliance.core.lesson import Lesson
from appliance.core.outcomes import ErrorCue, Outcome, Send, StartTimer
from appliance.core.responses import PURPOSES, Purpose, Responses

RETRY_AFTER_S = 1.0
"""A failed response is asked for again once, after this pause (a server error is often momentary)."""
RESPONSE_STALL_S = 30.0
"""A response that produces nothing for this long is treated as failed (the floor is never held for ever)."""
QUOTA_END_REASONS = {"insufficient_quota": "quota_exceeded", "rate_limit_exceeded": "rate_limited"}
"""Failed-response error codes after which no further response can succeed: the lesson ends."""


class Recovery:
    lesson: Lesson
    responses: Responses
    _retried: bool
    _greet_pending: bool
    _goodbye: str | None

    def _ask(self, purpose: Purpose) -> list[Outcome]:
        raise NotImplementedError

    def _end(self, reason: str, error: str | None = None) -> list[Outcome]:
        raise NotImplementedError

    def _response_failed(self, purpose: Purpose, code: str) -> list[Outcome]:
        """Retry a failed response once after a pause; a second failure is heard as the error cue."""
        reason = QUOTA_END_REASONS.get(code)
        if reason is not None:
            return self._end(reason, error=f"the OpenAI account refused the lesson: {code}")
        if purpose == "goodbye":
            return self._end(self._goodbye or "idle")
        if not self._retried:
            self._retried = True
            return [StartTimer("retry", RETRY_AFTER_S, float(PURPOSES.index(purpose)))]
        self._retried = False  # the next turn starts afresh (the learner hears the tutor again then)
        if purpose == "greeting":
            self._greet_pending = False
        return [ErrorCue()]

    def _on_retry_timer(self, token: float | None, now: float) -> list[Outcome]:
        return [] if token is None else self._ask(PURPOSES[int(token)])

    def _on_stall(self, token: float | None, now: float) -> list[Outcome]:
        responses = self.responses
        rid = responses.active
        if rid is None:
            return []
        if now - responses.progress_at < RESPONSE_STALL_S:
            return [StartTimer("stall", responses.progress_at + RESPONSE_STALL_S - now)]
        responses.active = None
        self.lesson.add_error("response_stalled", f"response {rid} produced nothing for {RESPONSE_STALL_S:.0f} s")
        stalled = responses.get(rid)
        return [Send(events.response_cancel(rid)),
                *self._response_failed(stalled.purpose if stalled else "reply", "stalled")]
