"""Turn-taking with the button: a press interrupts the tutor, opens a held turn, or ends the lesson.

A mixin of :class:`~appliance.core.conversation.Conversation` (its own module so each stays readable):
the same state, the same rules — the floor decides whether a press interrupts, and a barge-in cancels
only a response being generated and truncates only the item being played, at the milliseconds played.
"""

from __future__ import annotations

import numpy as np

from appliance.call import events
from appliance.call.events import ServerEvent
from appliance.common.level import rms_dbfs
from appliance.core.lesson import Lesson
from appliance.core.outcomes import ClearSpeaker, Listening, Outcome, Send, StartTimer, StopTimer, Touch, TurnChanged
from appliance.core.playhead import Audio, Playhead
from appliance.core.responses import MAX_TRACKED, Purpose, Responses

MIN_HELD_MS = 100.0
"""A hold shorter than this captured too little audio to commit (the server refuses < 100 ms)."""
TUTOR_WORDS_PER_S = 2.6
"""Speaking rate used to guess how long a tutor turn lasts when the server did not say."""
SPEECH_DBFS = -45.0
"""Held-button audio louder than this counts as speech (a silent hold is a long press, not a turn)."""
HEARD_CHECK_S = 0.5
"""After a barge-in, the tutor counts as heard until the speaker goes quiet, or this long at most."""


class TurnTaking:
    lesson: Lesson
    mode: str
    long_press_s: float
    mic_rate: int
    responses: Responses
    playhead: Playhead
    ended: str | None
    _floor: bool
    _heard_held: bool
    _held_since: float | None
    _listening: bool
    _held_samples: int
    _spoke_while_held: bool
    _deferred: Purpose | None
    _goodbye: str | None
    _speech_started_ms: dict[str, int]

    half_duplex: bool
    _mic_opens_at: float

    def _ask(self, purpose: Purpose) -> list[Outcome]:
        raise NotImplementedError

    def _end(self, reason: str, error: str | None = None) -> list[Outcome]:
        raise NotImplementedError

    def _update_floor(self, now: float) -> list[Outcome]:
        raise NotImplementedError

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
            self._listening, self._held_samples, self._spoke_while_held = True, 0, False
            out += [Send(events.input_audio_buffer_clear()), Listening(True)]
        elif not interrupted:
            out += self._end("button")
        return out + self._update_floor(now)

    def release(self, now: float) -> list[Outcome]:
        self._held_since = None
        if self.ended is not None:
            return []
        out: list[Outcome] = [StopTimer("long_press")]
        if self._listening:
            out += self._stop_listening()
        return out + self._update_floor(now)

    def _stop_listening(self) -> list[Outcome]:
        self._listening = False
        held_ms = 1000 * self._held_samples / self.mic_rate
        out: list[Outcome] = [Listening(False)]
        if held_ms < MIN_HELD_MS:
            out.append(Send(events.input_audio_buffer_clear()))
        else:
            self.lesson.learner_audio_s += held_ms / 1000
            out += [Send(events.input_audio_buffer_commit()), *self._ask("reply")]
        if self._deferred is not None:
            deferred, self._deferred = self._deferred, None
            if self.responses.request is None:
                out += self._ask(deferred)
        return out

    def _barge_in(self, now: float, backlog_s: float) -> list[Outcome]:
        """Interrupt the tutor: cancel only a response that is active, truncate only the audible item."""
        out: list[Outcome] = []
        cancelled = self.responses.cancel_active()
        if cancelled is not None:
            out.append(Send(events.response_cancel(cancelled)))
        out += [Send(events.output_audio_buffer_clear()), ClearSpeaker()]
        played = self.playhead.played_ms(now, backlog_s)
        playing, unheard = self.playhead.interrupt()
        if playing is not None and played is not None:
            out.append(Send(events.item_truncate(playing.item_id, round(played))))
            out += self._cut(playing, played)
        for audio in unheard:
            out += self._cut(audio, 0.0)
        self._heard_held = True  # "heard" ends when the speaker goes quiet, not when the server is told
        out.append(StartTimer("heard_check", HEARD_CHECK_S))
        self.responses.request = None
        if self._goodbye is not None:
            out += self._end(self._goodbye)
        return out

    def _cut(self, audio: Audio, played_ms: float) -> list[Outcome]:
        """Keep in the transcript only the share of the tutor's words that was heard."""
        transcript = self.lesson.transcript
        total = self.responses.length_ms(audio.response_id)
        if total is None:  # guess the turn's length from its words
            words = transcript.words_of(audio.response_id) or 1
            total = max(1000 * words / TUTOR_WORDS_PER_S, played_ms, 1.0)
        turn = transcript.cut_to_heard(audio.response_id, audio.item_id, played_ms / total if total else 1.0)
        return [] if turn is None else [TurnChanged(turn)]

    def _on_long_press(self, token: float | None, now: float) -> list[Outcome]:
        """Held past long_press_s: ends the lesson (in hold-to-talk only a hold with no speech in it)."""
        if token is None or self._held_since != token or (self.mode == "hold" and self._spoke_while_held):
            return []
        out: list[Outcome] = []
        if self._listening:
            self._listening = False
            out += [Listening(False), Send(events.input_audio_buffer_clear())]
        return out + self._end("button")

    def _on_heard_check(self, token: float | None, now: float) -> list[Outcome]:
        self._heard_held = False
        return []

    # -- the learner's speech (server VAD) ---------------------------------------------------------

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
        error = event.get("error") if isinstance(event.get("error"), dict) else {}
        self.lesson.add_error("transcription_failed",
                              str(error.get("message") or error.get("code") or "transcription failed"))
        return []
