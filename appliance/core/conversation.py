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

The floor: the tutor has it while a response is being generated (the server is still producing the
answer, even in a pause), while the speaker is audibly playing, or while the server says its audio
buffer is playing (``output_audio_buffer.*``, a hint some servers never send). In half duplex the
microphone is open only when the tutor does not have the floor (plus an echo tail); in hold-to-talk
mode only while the button is held. A press while the tutor has the floor interrupts it: the active
response is cancelled, the item actually audible is truncated at the milliseconds actually played
(from the speaker's own playhead when the server sends no audio-buffer events), and the transcript
keeps what was heard.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from appliance.audio.dsp import rms_dbfs
from appliance.call import events
from appliance.call.events import ServerEvent
from appliance.common import timeline as stages
from appliance.core.lesson import Lesson, matches_stop_phrase
from appliance.core.outcomes import (
    Checkpoint,
    ClearSpeaker,
    EndLesson,
    ErrorCue,
    Listening,
    Outcome,
    Send,
    StartTimer,
    StopTimer,
    Touch,
    TurnChanged,
    TutorHeard,
)

Mode = Literal["toggle", "hold"]
Purpose = Literal["greeting", "reply", "prompt", "goodbye"]
"""Why a response was asked for: the opening greeting, an answer to the learner, a prompt the kiosk
added (wrap-up), or the goodbye that ends the lesson."""

SESSION_UPDATE_WAIT_S = 2.0
"""How long the greeting waits for ``session.updated`` before it goes ahead anyway."""
RETRY_AFTER_S = 1.0
"""A failed response is asked for again once, after this pause (a server error is often momentary)."""
GOODBYE_MAX_S = 20.0
"""A goodbye that has not been heard by then ends the lesson anyway."""
RESPONSE_STALL_S = 30.0
"""A response that produces nothing for this long is treated as failed (the floor is never held for ever)."""
MIN_HELD_MS = 100.0
"""A hold shorter than this captured too little audio to commit (the server refuses < 100 ms)."""
SPEECH_DBFS = -45.0
"""Held-button audio louder than this counts as speech (a silent hold is a long press, not a turn)."""
TUTOR_WORDS_PER_S = 2.6
"""Speaking rate used to guess how long a tutor turn lasts when the server did not say."""
HEARD_CHECK_S = 1.0
"""After a barge-in, the tutor counts as heard until the speaker goes quiet, or this long at most."""
AUDIO_START_WAIT_S = 3.0
"""Audio of a finished response that has not started playing by then never will (a server that sent none)."""
PAUSE_TOLERANCE_MS = 500.0
"""A quiet speaker this long before an item's known end is a pause inside it, not its end."""
AUDIO_MS_PER_TOKEN = 50.0
"""Tutor audio is billed at one token per 50 ms: ``response.done`` usage gives each answer's length."""
QUOTA_END_REASONS = {"insufficient_quota": "quota_exceeded", "rate_limit_exceeded": "rate_limited"}
"""Failed-response error codes after which no further response can succeed: the lesson ends."""
MAX_TRACKED = 64
"""Responses and items remembered per call (a bound: a call never needs more than the recent few)."""


@dataclass
class _Response:
    id: str
    purpose: Purpose
    created_at: float
    items: list[str] = field(default_factory=list)
    audio_ms: float | None = None
    """The answer's audio length, once ``response.done`` said (usage audio tokens)."""
    cancelling: bool = False


@dataclass
class _Audio:
    """One tutor item's audio, in the order the speaker plays it."""

    response_id: str
    item_id: str
    started_at: float | None = None
    """When it became audible at the speaker (None: still queued behind another item, or silent)."""
    server_started: bool = False
    """The server said its audio started playing (``output_audio_buffer.started``), heard here or not yet."""


@dataclass
class _Request:
    """A ``response.create`` sent and not yet answered by ``response.created``."""

    event_id: str
    purpose: Purpose
    retry: bool


class Conversation:
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
        self._session = session
        self._greet_pending = greet
        self._awaiting_session = False
        self._responses: dict[str, _Response] = {}
        self._active: str | None = None
        self._progress_at = 0.0
        """When the active response last produced anything (its stall timer counts from here)."""
        self._request: _Request | None = None
        self._deferred: Purpose | None = None
        self._retried = False
        self._audio: deque[_Audio] = deque()
        self._audible = False
        self._audible_since: float | None = None
        self._ignore_audible = False
        self._buffer_playing = False
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
    def saying_goodbye(self) -> bool:
        return self._goodbye is not None

    @property
    def active_response(self) -> str | None:
        return self._active

    @property
    def audible_item(self) -> tuple[str, str] | None:
        """(response id, item id) of the item being played (at the speaker, or by the server's word), if any."""
        head = self._audio[0] if self._audio else None
        if head is None or (head.started_at is None and not head.server_started):
            return None
        return head.response_id, head.item_id

    def mic_open(self, now: float) -> bool:
        """Whether the learner's audio goes to the server now (else the call sends silence)."""
        if self.mode == "hold":
            return self._listening
        if not self.half_duplex:
            return True
        return not self._floor and now >= self._mic_opens_at

    def mic_frames(self, samples: np.ndarray, now: float) -> np.ndarray:
        """What the call's microphone track sends: the samples, or silence while the mic is closed.

        Runs on the loop, in the track's ``recv``: a few comparisons and, while a hold captures, one RMS."""
        if not self.mic_open(now):
            return np.zeros(len(samples), dtype=np.int16)
        if self._listening:
            self._held_samples += len(samples)
            if not self._spoke_while_held and rms_dbfs(samples) > SPEECH_DBFS:
                self._spoke_while_held = True
        return samples

    # -- opening ------------------------------------------------------------------------------

    def start(self, now: float) -> list[Outcome]:
        """The call is open: send the session config, then greet once ``session.updated`` confirms it
        (or after a short wait: a server that never confirms must not keep the learner waiting)."""
        out: list[Outcome] = []
        if self._session is not None:
            out.append(Send(events.session_update(**self._session)))
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
        etype = event.type
        handler = _HANDLERS.get(etype)
        if handler is not None:
            out += handler(self, event, now)
        self._note_item(event, now)
        if self._active is not None and event.get("response_id") == self._active:
            self._progress_at = now
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
        response = _dict(event.get("response"))
        rid = response.get("id")
        if not isinstance(rid, str):
            return []
        request, self._request = self._request, None
        purpose: Purpose = request.purpose if request is not None else "reply"
        self._remember(_Response(rid, purpose, now))
        self._active = rid
        self._progress_at = now
        return [StartTimer("stall", RESPONSE_STALL_S)]

    def _on_response_done(self, event: ServerEvent, now: float) -> list[Outcome]:
        response = _dict(event.get("response"))
        self.lesson.usage.add(response.get("usage"))
        rid = response.get("id")
        status = response.get("status")
        known = self._responses.get(rid) if isinstance(rid, str) else None
        out: list[Outcome] = []
        if rid is not None and rid == self._active:
            self._active = None
            out.append(StopTimer("stall"))
        audio_tokens = _dict(_dict(response.get("usage")).get("output_token_details")).get("audio_tokens")
        if known is not None and isinstance(audio_tokens, int) and not isinstance(audio_tokens, bool) \
                and audio_tokens > 0:
            known.audio_ms = audio_tokens * AUDIO_MS_PER_TOKEN
        if status in ("failed", "cancelled"):  # no audio is coming for what was not yet played
            self._audio = deque(a for a in self._audio if a.response_id != rid or a.started_at is not None)
        elif any(a.response_id == rid and a.started_at is None for a in self._audio):
            out.append(StartTimer("audio_wait", AUDIO_START_WAIT_S))
        if status in ("failed", "incomplete") and isinstance(rid, str):
            for turn in self.lesson.transcript.tutor_turns_of(rid):
                turn.status = str(status)
            out.append(Checkpoint())
        if status == "failed":
            details = _dict(response.get("status_details"))
            error = _dict(details.get("error"))
            code = str(error.get("code") or error.get("type") or details.get("reason") or status)
            message = str(error.get("message") or details.get("reason") or "")
            self.lesson.add_error("response_failed", f"{code}: {message}" if message and message != code else code)
            out += self._response_failed(known.purpose if known else "reply", code, now)
        elif status == "incomplete":
            details = _dict(response.get("status_details"))
            self.lesson.add_error("response_incomplete", str(details.get("reason") or "incomplete"))
        elif status == "completed":
            self._retried = False
        if known is not None and known.purpose == "goodbye" and status != "completed" and self.ended is None:
            out += self._end(self._goodbye or "idle")
        return out

    def _on_error(self, event: ServerEvent, now: float) -> list[Outcome]:
        error = _dict(event.get("error"))
        code = str(error.get("code") or error.get("type") or "error")
        message = str(error.get("message") or "")
        self.lesson.add_error(code, message)
        if code == "session_expired":
            return self._end("session_expired")
        request = self._request
        if request is not None and error.get("event_id") == request.event_id:
            self._request = None
            return self._response_failed(request.purpose, code, now)
        return []

    def _on_audio_started(self, event: ServerEvent, now: float) -> list[Outcome]:
        self.lesson.timeline.mark(stages.SERVER_AUDIO_STARTED, at=now)
        rid = event.get("response_id")
        response = self._responses.get(rid) if isinstance(rid, str) else None
        if response is not None and response.cancelling:
            return []  # late news of audio the learner already interrupted
        self._buffer_playing = True
        if isinstance(rid, str):
            # The server says this response's audio is what plays now: items queued before it are over.
            while self._audio and self._audio[0].response_id != rid and any(
                    a.response_id == rid for a in self._audio):
                self._audio.popleft()
            head = self._audio[0] if self._audio else None
            if head is not None and head.response_id == rid:
                head.server_started = True
                if head.started_at is None and self._audible:
                    head.started_at = now
        return []

    def _on_audio_stopped(self, event: ServerEvent, now: float) -> list[Outcome]:
        self._buffer_playing = False
        rid = event.get("response_id")
        if isinstance(rid, str) and any(a.response_id == rid for a in self._audio):
            while self._audio:  # everything up to this response has been played out
                if self._audio.popleft().response_id == rid:
                    break
        elif event.type == "output_audio_buffer.cleared":
            self._audio.clear()
        return []

    def _on_speech_started(self, event: ServerEvent, now: float) -> list[Outcome]:
        start, item_id = event.get("audio_start_ms"), event.get("item_id")
        if isinstance(start, int) and isinstance(item_id, str) and len(self._speech_started_ms) < MAX_TRACKED:
            self._speech_started_ms[item_id] = start
        return [Touch()]

    def _on_speech_stopped(self, event: ServerEvent, now: float) -> list[Outcome]:
        end, item_id = event.get("audio_end_ms"), event.get("item_id")
        start = self._speech_started_ms.pop(item_id, None) if isinstance(item_id, str) else None
        if isinstance(end, int) and start is not None and end > start:
            self.lesson.learner_audio_s += (end - start) / 1000
        return []

    def _on_transcription_failed(self, event: ServerEvent, now: float) -> list[Outcome]:
        error = _dict(event.get("error"))
        self.lesson.add_error("transcription_failed",
                              str(error.get("message") or error.get("code") or "transcription failed"))
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
        response = self._responses.get(rid)
        if response is None:  # a server that sends no response.created
            response = self._remember(_Response(rid, "reply", now))
        if item_id in response.items or response.cancelling:
            return
        response.items.append(item_id)
        if len(self._audio) < MAX_TRACKED:
            self._audio.append(_Audio(rid, item_id))
            if len(self._audio) == 1 and self._audible and not self._ignore_audible:
                # Audio often arrives before the words that name its item: it started when the speaker
                # became audible, but not before this response existed.
                since = self._audible_since if self._audible_since is not None else now
                self._audio[0].started_at = max(since, response.created_at)

    # -- the speaker -----------------------------------------------------------------------------

    def on_audible(self, audible: bool, now: float) -> list[Outcome]:
        """The speaker started or stopped emitting sound (measured on what it plays)."""
        lesson = self.lesson
        if audible and not self._audible:
            self._audible_since = now
            if lesson.first_audio_at is None:
                lesson.first_audio_at = now
        elif not audible and self._audible and self._audible_since is not None:
            lesson.tutor_audio_s += max(0.0, now - self._audible_since)
            self._audible_since = None
        self._audible = audible
        self._heard_held = False
        if not audible:
            self._ignore_audible = False
            self._finish_played(now)
        else:
            self._start_head(now)
        return [] if self.ended is not None else self._update_floor(now)

    def _start_head(self, now: float) -> None:
        head = self._audio[0] if self._audio else None
        if head is not None and head.started_at is None and self._audible and not self._ignore_audible:
            head.started_at = now

    def _finish_played(self, now: float) -> None:
        """The speaker went quiet: items whose response is no longer generating have been heard out,
        unless their known length says this is only a pause between sentences."""
        while self._audio:
            head = self._audio[0]
            if head.started_at is None or head.response_id == self._active:
                return
            response = self._responses.get(head.response_id)
            length_ms = response.audio_ms if response is not None else None
            if length_ms is not None and (now - head.started_at) * 1000 < length_ms - PAUSE_TOLERANCE_MS:
                return
            self._audio.popleft()

    def played_ms(self, now: float, backlog_s: float = 0.0) -> float | None:
        """Milliseconds of the audible item heard so far (the speaker's backlog not yet played excluded)."""
        head = self._audio[0] if self._audio else None
        if head is None or (head.started_at is None and not head.server_started):
            return None
        if head.started_at is None:
            return 0.0  # playing on the server's side, not yet out of this speaker
        played = max(0.0, (now - head.started_at - max(0.0, backlog_s)) * 1000)
        total = self._responses[head.response_id].audio_ms if head.response_id in self._responses else None
        return played if total is None else min(played, total)

    # -- the button -----------------------------------------------------------------------------

    def press(self, now: float, backlog_s: float = 0.0) -> list[Outcome]:
        """A press during the call: interrupt the tutor, start a held turn, or end the lesson."""
        if self.ended is not None:
            return []
        self._held_since = now
        out: list[Outcome] = [StartTimer("long_press", self.long_press_s, now), Touch()]
        interrupted = self._floor
        if interrupted:
            out += self._barge_in(now, backlog_s)
        if self.mode == "hold":
            out += self._start_listening()
        elif not interrupted:
            out += self._end("button")
        return out + self._update_floor(now)

    def release(self, now: float) -> list[Outcome]:
        self._held_since = None
        if self.ended is not None:
            return []
        out: list[Outcome] = [StopTimer("long_press")]
        if self._listening:
            out += self._stop_listening(now)
        return out + self._update_floor(now)

    def _start_listening(self) -> list[Outcome]:
        self._listening = True
        self._held_samples = 0
        self._spoke_while_held = False
        return [Send(events.input_audio_buffer_clear()), Listening(True)]

    def _stop_listening(self, now: float) -> list[Outcome]:
        self._listening = False
        held_ms = 1000 * self._held_samples / self.mic_rate
        out: list[Outcome] = [Listening(False)]
        if held_ms < MIN_HELD_MS or self.ended is not None:
            out.append(Send(events.input_audio_buffer_clear()))
        else:
            self.lesson.learner_audio_s += held_ms / 1000
            out += [Send(events.input_audio_buffer_commit()), *self._ask("reply")]
        if self._deferred is not None and self.ended is None:
            deferred, self._deferred = self._deferred, None
            if self._request is None:
                out += self._ask(deferred)
        return out

    def _barge_in(self, now: float, backlog_s: float) -> list[Outcome]:
        """Interrupt the tutor: cancel only a response that is active, truncate only the audible item."""
        out: list[Outcome] = []
        active = self._responses.get(self._active) if self._active else None
        if active is not None and not active.cancelling:
            active.cancelling = True
            out.append(Send(events.response_cancel(active.id)))
        out += [Send(events.output_audio_buffer_clear()), ClearSpeaker()]
        played = self.played_ms(now, backlog_s)
        head = self._audio[0] if self._audio else None
        if head is not None and played is not None:
            out.append(Send(events.item_truncate(head.item_id, round(played))))
            out += self._cut(head, played)
            self._audio.popleft()
        for queued in self._audio:  # never heard at all
            out += self._cut(queued, 0.0)
        self._audio.clear()
        self._buffer_playing = False
        self._ignore_audible = self._audible  # what the pump still drains was cleared from the speaker
        self._heard_held = True  # "heard" ends when the speaker goes quiet, not when the server is told
        out.append(StartTimer("heard_check", HEARD_CHECK_S))
        self._request = None
        if self._goodbye is not None:
            out += self._end(self._goodbye)
        return out

    def _cut(self, audio: _Audio, played_ms: float) -> list[Outcome]:
        """Keep in the transcript only the share of the tutor's words that was heard."""
        transcript = self.lesson.transcript
        response = self._responses.get(audio.response_id)
        total = response.audio_ms if response is not None else None
        if total is None:  # guess the turn's length from its words
            words = sum(len(t.text.split()) for t in transcript.tutor_turns_of(audio.response_id)) or 1
            total = max(1000 * words / TUTOR_WORDS_PER_S, played_ms, 1.0)
        turn = transcript.cut_to_heard(audio.response_id, audio.item_id, played_ms / total if total else 1.0)
        return [] if turn is None else [TurnChanged(turn)]

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
        out: list[Outcome] = []
        if name == "greet" and self._greet_pending:
            out += self._greet(now)
        elif name == "retry" and token is not None:
            out += self._ask(_PURPOSES[int(token)], retry=True)
        elif name == "long_press" and token is not None and self._held_since == token:
            if self.mode == "toggle" or not self._spoke_while_held:
                if self._listening:
                    self._listening = False
                    out += [Listening(False), Send(events.input_audio_buffer_clear())]
                out += self._end("button")
        elif name == "heard_check":
            self._heard_held = False
        elif name == "audio_wait":  # audio the server named but never played: the floor is not held for it
            self._audio = deque(a for a in self._audio if a.started_at is not None or a.response_id == self._active)
        elif name == "goodbye":
            out += self._end(self._goodbye or "idle")
        elif name == "stall" and self._active is not None and now - self._progress_at < RESPONSE_STALL_S:
            out.append(StartTimer("stall", self._progress_at + RESPONSE_STALL_S - now))
        elif name == "stall" and self._active is not None:
            rid, self._active = self._active, None
            self.lesson.add_error("response_stalled", f"response {rid} produced nothing for {RESPONSE_STALL_S:.0f} s")
            out.append(Send(events.response_cancel(rid)))
            response = self._responses.get(rid)
            out += self._response_failed(response.purpose if response else "reply", "stalled", now)
        return out + self._update_floor(now)

    # -- internals ---------------------------------------------------------------------------------

    def _ask(self, purpose: Purpose, retry: bool = False) -> list[Outcome]:
        """Send ``response.create`` (deferred while the learner holds the button in hold-to-talk)."""
        if self._listening:
            self._deferred = purpose
            return []
        event = events.response_create()
        self._request = _Request(event["event_id"], purpose, retry)
        return [Send(event)]

    def _response_failed(self, purpose: Purpose, code: str, now: float) -> list[Outcome]:
        """Retry a failed response once after a pause; a second failure is heard as the error cue."""
        reason = QUOTA_END_REASONS.get(code)
        if reason is not None:
            return self._end(reason, error=f"the OpenAI account refused the lesson: {code}")
        if purpose == "goodbye":
            return self._end(self._goodbye or "idle")
        if not self._retried:
            self._retried = True
            return [StartTimer("retry", RETRY_AFTER_S, float(_PURPOSES.index(purpose)))]
        self._retried = False  # the next turn starts afresh (the learner hears the tutor again then)
        if purpose == "greeting":
            self._greet_pending = False
        return [ErrorCue()]

    def _update_floor(self, now: float) -> list[Outcome]:
        """Recompute who has the floor and whether the tutor is heard; report the changes."""
        out: list[Outcome] = []
        heard = self._audible or self._buffer_playing or (self._heard and self._heard_held)
        if heard != self._heard:
            self._heard = heard
            out.append(TutorHeard(heard))
        active = self._responses.get(self._active) if self._active is not None else None
        generating = self._active is not None and not (active is not None and active.cancelling)
        # Holding the button (hold-to-talk) gives the learner the floor: the press cleared the tutor's audio.
        # Audio named by the server but not yet heard out keeps the floor between "done" and the speaker.
        playing = (self._audible and not self._ignore_audible) or self._buffer_playing
        floor = not self._listening and (playing or generating or bool(self._audio))
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
        goodbye = [r for r in self._responses.values() if r.purpose == "goodbye"]
        return bool(goodbye) and self._active is None and self._request is None

    def _end(self, reason: str, error: str | None = None) -> list[Outcome]:
        if self.ended is not None:
            return []
        self.ended = reason
        return [StopTimer("long_press"), StopTimer("retry"), StopTimer("goodbye"), StopTimer("stall"),
                EndLesson(reason, error)]

    def _remember(self, response: _Response) -> _Response:
        if len(self._responses) >= MAX_TRACKED:
            oldest = next(iter(self._responses))
            if oldest != self._active:
                del self._responses[oldest]
        self._responses[response.id] = response
        return response


_PURPOSES: tuple[Purpose, ...] = ("greeting", "reply", "prompt", "goodbye")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


_HANDLERS = {
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

