"""The answers of one call: which the kiosk asked for and why, which is being generated, how long each is.

Why keep the purpose: a failed greeting, a failed answer and a failed goodbye are handled differently
(ask again, say nothing more, end the lesson), and the server's events carry only ids. Bounded: a call
remembers its most recent answers only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from appliance.call import events

Purpose = Literal["greeting", "reply", "prompt", "goodbye"]
"""Why a response was asked for: the opening greeting, an answer to the learner, a prompt the kiosk
added (wrap-up), or the goodbye that ends the lesson."""
PURPOSES: tuple[Purpose, ...] = ("greeting", "reply", "prompt", "goodbye")

MAX_TRACKED = 64
"""Responses remembered per call."""
AUDIO_MS_PER_TOKEN = 50.0
"""Tutor audio is billed at one token per 50 ms: ``response.done`` usage gives each answer's length."""


@dataclass
class Response:
    id: str
    purpose: Purpose
    created_at: float
    items: list[str] = field(default_factory=list)
    audio_ms: float | None = None
    """The answer's audio length, once ``response.done`` said (usage audio tokens)."""
    cancelling: bool = False


@dataclass
class Request:
    """A ``response.create`` sent and not yet answered by ``response.created``."""

    event_id: str
    purpose: Purpose


class Responses:
    def __init__(self) -> None:
        self._known: dict[str, Response] = {}
        self.active: str | None = None
        """The response being generated (``response.created`` seen, ``response.done`` not yet)."""
        self.progress_at = 0.0
        """When the active response last produced anything."""
        self.request: Request | None = None

    def __len__(self) -> int:
        return len(self._known)

    def get(self, response_id: object) -> Response | None:
        return self._known.get(response_id) if isinstance(response_id, str) else None

    def length_ms(self, response_id: str) -> float | None:
        known = self._known.get(response_id)
        return None if known is None else known.audio_ms

    @property
    def generating(self) -> bool:
        """An answer is being generated and the learner has not cancelled it."""
        active = self._known.get(self.active) if self.active is not None else None
        return self.active is not None and not (active is not None and active.cancelling)

    def ask(self, purpose: Purpose) -> dict[str, object]:
        """The ``response.create`` to send; remembered until the server creates the response."""
        event = events.response_create()
        self.request = Request(event["event_id"], purpose)
        return event

    def created(self, response_id: str, now: float) -> Response:
        """``response.created``: the request it answers (if any) gives its purpose."""
        request, self.request = self.request, None
        response = self.remember(Response(response_id, request.purpose if request else "reply", now))
        self.active = response_id
        self.progress_at = now
        return response

    def remember(self, response: Response) -> Response:
        if len(self._known) >= MAX_TRACKED:
            oldest = next(iter(self._known))
            if oldest != self.active:
                del self._known[oldest]
        self._known[response.id] = response
        return response

    def done(self, response_id: object, audio_tokens: object) -> tuple[Response | None, bool]:
        """``response.done``: the response (if known) and whether it was the one being generated."""
        known = self.get(response_id)
        was_active = response_id is not None and response_id == self.active
        if was_active:
            self.active = None
        if known is not None and isinstance(audio_tokens, int) and not isinstance(audio_tokens, bool) \
                and audio_tokens > 0:
            known.audio_ms = audio_tokens * AUDIO_MS_PER_TOKEN
        return known, was_active

    def cancel_active(self) -> str | None:
        """Mark the response being generated as cancelled; its id, or None when there is nothing to cancel
        (cancelling nothing only earns an error event)."""
        active = self._known.get(self.active) if self.active is not None else None
        if active is None or active.cancelling:
            return None
        active.cancelling = True
        return active.id

    def any_with(self, purpose: Purpose) -> bool:
        return any(r.purpose == purpose for r in self._known.values())
