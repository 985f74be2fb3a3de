"""One call's conversation: its responses, the tutor's audio items, who has the floor, and the button.

Why an object per call: everything here is true of one call only (which response is being generated,
which item the speaker is playing, whether the session config was confirmed, whether the learner is
holding the button). It is created with the call and dropped with it, so nothing is ever reset by hand
and a resumed lesson starts from a clean conversation.

No I/O and no reference to the kiosk: it is fed server events, the speaker's audibility, button
presses and its own timers, each with the instant it happened (``now``, monotonic seconds), and it
returns :mod:`outcomes <appliance.core.outcomes>` the kiosk applies (client events to send, the speaker
to clear, the floor changing hands, the lesson to end, timers to start). It writes only into the
:class:`~appliance.core.lesson.Lesson` it was given (turns, usage, errors, audio seconds), which is data.

The floor: the tutor has it while a response is being generated (even in a pause), while its audio
plays or waits to be heard (:mod:`appliance.core.playhead`). Button presses and the microphone gate
follow it (:mod:`appliance.core.turn_taking`); failures are recovered from in
:mod:`appliance.core.recovery`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from appliance.call import events
from appliance.call.events import ServerEvent
from appliance.common import timeline as stages
from appliance.core.lesson import Lesson, matches_stop_phrase
from appliance.core.outcomes import (
    Checkpoint,
    EndLesson,
    Outcome,
    Send,
    StartTimer,
    StopTimer,
    Touch,
    TurnChanged,
    TutorHeard,
)
from appliance.core.playhead import Playhead
from appliance.core.recovery import RESPONSE_STALL_S, Recovery
from appliance.core.responses import Purpose, Response, Responses
from appliance.core.turn_taking import TurnTaking
from appliance.core.voice_fallback import SessionConfig

Mode = Literal["toggle", "hold"]

BUSY = "conversation_already_has_active_response"
"""The server's answer to a ``response.create`` sent while it is still answering (a typed message, a
wrap-up): the request waits for the current answer to finish, it is not a failure."""
SESSION_UPDATE_WAIT_S = 2.0
"""How long the greeting waits for ``session.updated`` before it goes ahead anyway."""
GOODBYE_MAX_S = 20.0
"""A goodbye that has not been heard by then ends the lesson anyway."""
AUDIO_START_WAIT_S = 3.0
"""Audio of a finished response that has not started playing by then never will (a server that sent none)."""



class Conversation(TurnTaking, Recovery):
    """The conversation of one call (see the module docstring)."""

    def __init__(self, lesson: Lesson, *, mode: Mode = "toggle", half_duplex: bool = True,
                 echo_tail_s: float = 0.3, long_press_s: float = 2.0, mic_rate: int = 48000,
                 stop_phrases: tuple[str, ...] = ("stop",), greet: bool = True,
                 session: dict[str, Any] | None = None) -> None:
        self.lesson = lesson
        self.mode = mode
        self.half_duplex = half_duplex
        self.echo_tail_s = echo_tail_s
        self.long_press_s = long_press_s
        self.mic_rate = mic_rate
        self.stop_phrases = list(stop_phrases)
        self._session = SessionConfig(session) if session is not None else None
        self._greet_pending = greet
        self._awaiting_session = False
        self.responses = Responses()
        self.playhead = Playhead(self.responses.length_ms)
        self._deferred: Purpose | None = None
        self._retried = False
        self._floor = False
        self._heard = False
        self._heard_held = False
        self._mic_opens_at = 0.0
        self._held_since: float | None = None
        self._listening = False
        self._held_samples = 0
        self._spoke_while_held = False
        self._speech_started_ms: dict[str, int] = {}
        self._goodbye: str | None = None
        self.ended: str | None = None
        """The end reason once this conversation asked for the lesson to end (nothing more is asked after)."""

    # -- what the kiosk asks -----------------------------------------------------------------

    @property
    def tutor_has_floor(self) -> bool:
        return self._floor

    @property
    def tutor_heard(self) -> bool:
        """The speaker plays the tutor (or the server says its audio is playing)."""
        return self._heard

    @property
    def listening(self) -> bool:
        """Hold-to-talk: the learner's turn is being captured."""
        return self._listening

    @property
    def audible_item(self) -> tuple[str, str] | None:
        """(response id, item id) of the item being played (at the speaker, or by the server's word), if any."""
        audio = self.playhead.audible_item
        return None if audio is None else (audio.response_id, audio.item_id)

    def played_ms(self, now: float, backlog_s: float = 0.0) -> float | None:
        return self.playhead.played_ms(now, backlog_s)

    # -- opening ------------------------------------------------------------------------------

    def start(self, now: float) -> list[Outcome]:
        """The call is open: send the session config, then greet once ``session.updated`` confirms it
        (or after a short wait: a server that never confirms must not keep the learner waiting)."""
        out: list[Outcome] = []
        if self._session is not None:
            out.append(Send(self._session.update()))
            self._awaiting_session = True
        elif self.mode == "hold":
            out.append(Send(events.manual_turns_update()))
        if not self._greet_pending:
            return out
        if self._awaiting_session:
            return [*out, StartTimer("greet", SESSION_UPDATE_WAIT_S)]
        return out + self._greet(now)

    def _greet(self, now: float) -> list[Outcome]:
        self._greet_pending = False
        self._awaiting_session = False
        self.lesson.timeline.mark(stages.GREETING_SENT, at=now)
        return [StopTimer("greet"), *self._ask("greeting")]

    # -- server events -------------------------------------------------------------------------

    def on_event(self, event: ServerEvent, now: float) -> list[Outcome]:
        """Feed one server event; returns what the kiosk must do about it."""
        if self.ended is not None:
            return []
        out: list[Outcome] = []
        handler = _HANDLERS.get(event.type)
        if handler is not None:
            out += handler(self, event, now)
        self._note_item(event, now)
        responses = self.responses
        if responses.active is not None and event.get("response_id") == responses.active:
            responses.progress_at = now
        turn = self.lesson.transcript.handle(event)
        if turn is not None and self.ended is None:
            out.append(TurnChanged(turn))
            if turn.role == "learner":
                out.append(Touch())
                if turn.source == "voice" and matches_stop_phrase(turn.text, self.stop_phrases):
                    out += self._end("voice_stop")
        return out + self._update_floor(now)

    def _on_session_updated(self, event: ServerEvent, now: float) -> list[Outcome]:
        if self._awaiting_session and self._greet_pending:
            return self._greet(now)
        self._awaiting_session = False
        return []

    def _on_response_created(self, event: ServerEvent, now: float) -> list[Outcome]:
        rid = _dict(event.get("response")).get("id")
        if not isinstance(rid, str):
            return []
        self.responses.created(rid, now)
        return [StartTimer("stall", RESPONSE_STALL_S)]

    def _on_response_done(self, event: ServerEvent, now: float) -> list[Outcome]:
        response = _dict(event.get("response"))
        self.lesson.usage.add(response.get("usage"))
        rid, status = response.get("id"), response.get("status")
        audio_tokens = _dict(_dict(response.get("usage")).get("output_token_details")).get("audio_tokens")
        known, was_active = self.responses.done(rid, audio_tokens)
        out: list[Outcome] = [StopTimer("stall")] if was_active else []
        if status in ("failed", "cancelled"):  # no audio is coming for what was not yet played
            self.playhead.drop_unstarted(lambda a: a.response_id != rid)
        elif isinstance(rid, str) and self.playhead.waiting_for(rid):
            out.append(StartTimer("audio_wait", AUDIO_START_WAIT_S))
        if status in ("failed", "incomplete") and isinstance(rid, str):
            for turn in self.lesson.transcript.tutor_turns_of(rid):
                turn.status = str(status)
            out.append(Checkpoint())
        details = _dict(response.get("status_details"))
        if status == "failed":
            error = _dict(details.get("error"))
            code = str(error.get("code") or error.get("type") or details.get("reason") or status)
            message = str(error.get("message") or details.get("reason") or "")
            self.lesson.add_error("response_failed", f"{code}: {message}" if message and message != code else code)
            out += self._response_failed(known.purpose if known else "reply", code)
        elif status == "incomplete":
            self.lesson.add_error("response_incomplete", str(details.get("reason") or "incomplete"))
        elif status == "completed":
            self._retried = False
        if known is not None and known.purpose == "goodbye" and status != "completed":
            out += self._end(self._goodbye or "idle")
        if was_active and self._deferred is not None and not self._listening and self.ended is None:
            deferred, self._deferred = self._deferred, None
            out += self._ask(deferred)
        return out

    def _on_error(self, event: ServerEvent, now: float) -> list[Outcome]:
        error = _dict(event.get("error"))
        code = str(error.get("code") or error.get("type") or "error")
        self.lesson.add_error(code, str(error.get("message") or ""))
        if code == "session_expired":
            return self._end("session_expired")
        resent = self._session.on_error(error, self.lesson) if self._session is not None else None
        if resent is not None:  # a refused voice: the default instead, the greeting waits for it
            self._awaiting_session = True
            return [Send(resent), *([StartTimer("greet", SESSION_UPDATE_WAIT_S)] if self._greet_pending else [])]
        request = self.responses.request
        if request is None or error.get("event_id") != request.event_id:
            return []
        self.responses.request = None
        if code == BUSY and self.responses.active is not None:
            self._deferred = request.purpose  # not a failure: asked again once the current answer is done
            return []
        return self._response_failed(request.purpose, code)

    def _on_audio_started(self, event: ServerEvent, now: float) -> list[Outcome]:
        self.lesson.timeline.mark(stages.SERVER_AUDIO_STARTED, at=now)
        rid = event.get("response_id")
        response = self.responses.get(rid)
        if response is not None and response.cancelling:
            return []  # late news of audio the learner already interrupted
        if isinstance(rid, str):
            self.playhead.server_started(rid, now)
        else:
            self.playhead.buffer_playing = True
        return []

    def _on_audio_stopped(self, event: ServerEvent, now: float) -> list[Outcome]:
        rid = event.get("response_id")
        self.playhead.server_stopped(rid if isinstance(rid, str) else None,
                                     cleared=event.type == "output_audio_buffer.cleared")
        return []

    def _note_item(self, event: ServerEvent, now: float) -> None:
        """Learn a tutor item from any event that names it (servers differ in which they send)."""
        rid = event.get("response_id")
        if event.type == "response.output_item.added":
            item = _dict(event.get("item"))
            item_id = item.get("id")
            if item.get("role", "assistant") != "assistant":
                return
        elif event.type.startswith(("response.output_audio", "response.content_part", "response.output_text")):
            item_id = event.get("item_id")
        else:
            return
        if not isinstance(rid, str) or not isinstance(item_id, str):
            return
        response = self.responses.get(rid) or self.responses.remember(Response(rid, "reply", now))
        if item_id in response.items or response.cancelling:
            return
        response.items.append(item_id)
        self.playhead.named(rid, item_id, response.created_at, now)

    # -- the speaker -----------------------------------------------------------------------------

    def on_audible(self, audible: bool, now: float) -> list[Outcome]:
        """The speaker started or stopped emitting sound (measured on what it plays)."""
        if audible and self.lesson.first_audio_at is None:
            self.lesson.first_audio_at = now
        self.lesson.tutor_audio_s += self.playhead.speaker(audible, now, self.responses.active)
        self._heard_held = False
        return [] if self.ended is not None else self._update_floor(now)

    # -- what the kiosk adds -------------------------------------------------------------------

    def say(self, text: str) -> list[Outcome]:
        """A typed message (teacher or CLI): a learner turn, answered by the tutor."""
        if self.ended is not None:
            return []
        turn = self.lesson.transcript.add_typed(text)
        return [Send(events.user_text(text)), TurnChanged(turn), Touch(), *self._ask("reply")]

    def prompt(self, instructions: str, now: float) -> list[Outcome]:
        """A system note to the tutor followed by a response (e.g. "one minute left")."""
        if self.ended is not None:
            return []
        return [Send(events.system_text(instructions)), *self._ask("prompt")]

    def goodbye(self, reason: str, instructions: str, now: float) -> list[Outcome]:
        """Ask for a last sentence; the lesson ends with ``reason`` once it has been heard (or after a bound)."""
        if self.ended is not None or self._goodbye is not None:
            return []
        self._goodbye = reason
        return [Send(events.system_text(instructions)), *self._ask("goodbye"),
                StartTimer("goodbye", GOODBYE_MAX_S)]

    # -- timers ---------------------------------------------------------------------------------

    def on_timer(self, name: str, token: float | None, now: float) -> list[Outcome]:
        """A timer this conversation started has fired."""
        if self.ended is not None:
            return []
        handler = _TIMERS.get(name)
        out = handler(self, token, now) if handler is not None else []
        return out + self._update_floor(now)

    def _on_greet_timer(self, token: float | None, now: float) -> list[Outcome]:
        return self._greet(now) if self._greet_pending else []

    def _on_audio_wait(self, token: float | None, now: float) -> list[Outcome]:
        """Audio the server named but never played holds the floor no longer."""
        active = self.responses.active
        self.playhead.drop_unstarted(lambda a: a.response_id == active)
        return []

    def _on_goodbye_timer(self, token: float | None, now: float) -> list[Outcome]:
        return self._end(self._goodbye or "idle")

    # -- internals ---------------------------------------------------------------------------------

    def _ask(self, purpose: Purpose) -> list[Outcome]:
        """Send ``response.create`` (deferred while the learner holds the button in hold-to-talk)."""
        if self._listening:
            self._deferred = purpose
            return []
        return [Send(self.responses.ask(purpose))]

    def _update_floor(self, now: float) -> list[Outcome]:
        """Recompute who has the floor and whether the tutor is heard; report the changes."""
        out: list[Outcome] = []
        playhead = self.playhead
        heard = playhead.audible or playhead.buffer_playing or (self._heard and self._heard_held)
        if heard != self._heard:
            self._heard = heard
            out.append(TutorHeard(heard))
        # Holding the button (hold-to-talk) gives the learner the floor: the press cleared the tutor's audio.
        # Audio named by the server but not yet heard out keeps the floor between "done" and the speaker.
        floor = not self._listening and (playhead.playing or self.responses.generating or bool(playhead.queue))
        if floor == self._floor:
            return out
        self._floor = floor
        if not floor:
            self._mic_opens_at = now + self.echo_tail_s
            out.append(Touch())  # the learner's idle time counts from the end of the tutor's words
            if self._goodbye is not None and self._goodbye_heard():
                out += self._end(self._goodbye)
        return out

    def _goodbye_heard(self) -> bool:
        """The goodbye response was created and is neither generating nor queued for the speaker."""
        responses = self.responses
        return responses.any_with("goodbye") and responses.active is None and responses.request is None

    def _end(self, reason: str, error: str | None = None) -> list[Outcome]:
        if self.ended is not None:
            return []
        self.ended = reason
        return [StopTimer("long_press"), StopTimer("retry"), StopTimer("goodbye"), StopTimer("stall"),
                EndLesson(reason, error)]


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


EventHandler = Callable[[Conversation, ServerEvent, float], list[Outcome]]
_HANDLERS: dict[str, EventHandler] = {
    "session.updated": Conversation._on_session_updated,
    "response.created": Conversation._on_response_created,
    "response.done": Conversation._on_response_done,
    "error": Conversation._on_error,
    "output_audio_buffer.started": Conversation._on_audio_started,
    "output_audio_buffer.stopped": Conversation._on_audio_stopped,
    "output_audio_buffer.cleared": Conversation._on_audio_stopped,
    "input_audio_buffer.speech_started": Conversation._on_speech_started,
    "input_audio_buffer.speech_stopped": Conversation._on_speech_stopped,
    "conversation.item.input_audio_transcription.failed": Conversation._on_transcription_failed,
}
"""Server event type → what it changes; every other event only feeds the transcript (and names items)."""

TimerHandler = Callable[[Conversation, float | None, float], list[Outcome]]
_TIMERS: dict[str, TimerHandler] = {
    "greet": Conversation._on_greet_timer, "retry": Conversation._on_retry_timer,
    "long_press": Conversation._on_long_press, "heard_check": Conversation._on_heard_check,
    "audio_wait": Conversation._on_audio_wait, "goodbye": Conversation._on_goodbye_timer,
    "stall": Conversation._on_stall,
}
"""Timer name → what its firing means."""
