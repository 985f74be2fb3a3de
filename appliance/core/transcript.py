"""Assemble Realtime server events into lesson turns, exactly one turn per learner item or tutor item.

Why keyed by item: the server reports the same tutor words several times (transcript deltas, the
transcript's ``done``, the item's ``done``, ``response.done``); appending a turn on each of them
duplicates turns. Here a turn is opened by its first delta and closed once, by its ``done`` event
(or by ``response.done`` when a response was cancelled before its transcript finished).

Turns keep monotonic instants and become wall times only in :meth:`Transcript.to_records`, so a turn
spoken before network time set the clock still gets its true date (see :mod:`appliance.common.clock`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from appliance.call.events import ServerEvent
from appliance.common.clock import Anchor, Clock, EpochTimeline, iso_utc, system_clock
from appliance.contract.names import TURN_STATUSES
from appliance.contract.record import TurnRecord

__all__ = ["Transcript", "Turn", "iso_utc"]

Role = Literal["learner", "tutor"]
NOT_UNDERSTOOD = "(not understood)"
"""The text of a learner turn whose audio the server could not transcribe."""
AUDIO_ONLY = "(spoken, not transcribed)"
"""The text of a learner turn in a call without input transcription: the learner spoke (the tutor heard
and answered) but no words were written down."""
Source = Literal["voice", "text"]


@dataclass
class Turn:
    """One turn of the lesson as it goes into the session record."""

    role: Role
    text: str
    at: float
    """When the turn began: an instant of the transcript's clock (monotonic; see ``Clock.monotonic``)."""
    source: Source
    key: str = ""
    """Item or response id the turn was assembled from (internal)."""
    status: str | None = None
    """None for a normal turn; ``incomplete``/``failed`` for a tutor response that did not finish,
    ``failed`` for learner speech the server could not transcribe."""
    interrupted: bool = False
    """The learner cut the tutor off: ``text`` is what was heard, not what the model wrote."""

    def to_record(self, anchor: Anchor) -> TurnRecord:
        record: TurnRecord = {"role": self.role, "text": self.text, "at": iso_utc(anchor.wall_at(self.at)),
                              "source": self.source}
        if self.status in TURN_STATUSES:
            record["status"] = self.status
        if self.interrupted:
            record["interrupted"] = True
        return record


@dataclass
class _Open:
    turn: Turn
    parts: list[str] = field(default_factory=list)


class Transcript:
    """The turns of one lesson, fed with server events and the kiosk's own typed messages."""

    def __init__(self, clock: Clock | Callable[[], float] | None = None) -> None:
        """``clock``: the lesson's :class:`Clock` (default: the system clock), or a plain function giving
        epoch seconds, whose readings are then used as wall times unchanged."""
        if clock is None:
            clock = system_clock()
        self.clock = clock if isinstance(clock, Clock) else EpochTimeline(clock)
        self._clock = self.clock.monotonic
        self.turns: list[Turn] = []
        self._open_tutor: dict[str, _Open] = {}
        self._learner_started: dict[str, float] = {}
        self._closed_keys: set[str] = set()
        self.transcribed = True
        """False when the call has no input transcription (the companion found no transcription model):
        each committed learner utterance then becomes an :data:`AUDIO_ONLY` turn, as the server will never
        send its words."""

    def add_typed(self, text: str) -> Turn:
        """A message typed to the tutor (kiosk CLI or teacher): a learner turn from text."""
        turn = Turn("learner", text, self._clock(), "text")
        self.turns.append(turn)
        return turn

    def handle(self, event: ServerEvent) -> Turn | None:
        """Feed one server event; returns the turn it completed, if any."""
        etype = event.type
        if etype == "input_audio_buffer.speech_started":
            item_id = event.get("item_id")
            if isinstance(item_id, str):
                self._learner_started.setdefault(item_id, self._clock())
            return None
        if etype == "input_audio_buffer.committed" and not self.transcribed:
            return self._learner_audio_only(event)
        if etype == "conversation.item.input_audio_transcription.completed":
            return self._learner_completed(event)
        if etype == "conversation.item.input_audio_transcription.failed":
            return self._learner_failed(event)
        if etype in ("response.output_audio_transcript.delta", "response.output_text.delta"):
            delta = event.get("delta")
            if isinstance(delta, str):
                self._tutor_open(event).parts.append(delta)
            return None
        if etype in ("response.output_audio_transcript.done", "response.output_text.done"):
            final = event.get("transcript") if etype.endswith("transcript.done") else event.get("text")
            return self._tutor_close(self._key(event), final if isinstance(final, str) else None)
        if etype == "response.done":
            response = event.get("response") or {}
            response_id = response.get("id") if isinstance(response, dict) else None
            closed = None
            for key in [k for k, o in self._open_tutor.items() if o.turn.key.startswith(f"{response_id}/")]:
                closed = self._tutor_close(key, None) or closed
            return closed
        return None

    def flush(self) -> list[Turn]:
        """Close every turn still open (the lesson ends mid-sentence); returns the turns closed."""
        closed = [t for key in list(self._open_tutor) if (t := self._tutor_close(key, None))]
        return closed

    def tutor_turns_of(self, response_id: str) -> list[Turn]:
        """The tutor turns (closed or still open) of one response."""
        prefix = f"{response_id}/"
        closed = [t for t in self.turns if t.role == "tutor" and t.key.startswith(prefix)]
        return closed + [o.turn for o in self._open_tutor.values() if o.turn.key.startswith(prefix)]

    def words_of(self, response_id: str) -> int:
        """How many words the tutor's turns of one response hold so far (open turns counted from their parts)."""
        prefix = f"{response_id}/"
        closed = sum(len(t.text.split()) for t in self.turns if t.role == "tutor" and t.key.startswith(prefix))
        return closed + sum(len("".join(o.parts).split()) for o in self._open_tutor.values()
                            if o.turn.key.startswith(prefix))

    def cut_to_heard(self, response_id: str, item_id: str | None, share: float) -> Turn | None:
        """Keep only the share of a tutor turn's words the learner heard before cutting it off.

        Why: an interrupted turn saved in full says the learner heard words that were never played.
        An open turn is closed here with what arrived so far, cut the same way."""
        key = f"{response_id}/{item_id}"
        if key in self._open_tutor:
            self._tutor_close(key, None)
        turn = next((t for t in reversed(self.turns) if t.key == key), None)
        if turn is None and item_id is None:
            candidates = self.tutor_turns_of(response_id)
            turn = candidates[-1] if candidates else None
        if turn is None or turn.interrupted:
            return turn
        words = turn.text.split()
        keep = max(0, min(len(words), math.ceil(len(words) * max(0.0, min(1.0, share)))))
        turn.text = " ".join(words[:keep]) + (" …" if keep < len(words) else "")
        turn.text = turn.text.strip()
        turn.interrupted = True
        return turn

    def to_records(self, anchor: Anchor | None = None) -> list[TurnRecord]:
        """The turns in spoken order, stamped through ``anchor`` (default: the clock's best anchor now)."""
        anchor = self.clock.anchor() if anchor is None else anchor
        return [t.to_record(anchor) for t in sorted(self.turns, key=lambda t: t.at)]

    # -- internals ---------------------------------------------------------------------------

    def _learner_audio_only(self, event: ServerEvent) -> Turn | None:
        """An utterance committed in a call without transcription: kept, so the record shows the learner
        spoke (and when), not a tutor talking to no one."""
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            return None
        key = f"learner/{item_id}"
        if key in self._closed_keys:
            return None
        self._closed_keys.add(key)
        started = self._learner_started.pop(item_id, None)
        turn = Turn("learner", AUDIO_ONLY, self._clock() if started is None else started, "voice", key)
        self.turns.append(turn)
        return turn

    def _learner_completed(self, event: ServerEvent) -> Turn | None:
        item_id = event.get("item_id")
        text = event.get("transcript")
        if not isinstance(item_id, str) or not isinstance(text, str):
            return None
        key = f"learner/{item_id}"
        if key in self._closed_keys:
            # A server that transcribes after all: its words replace the audio-only placeholder.
            placeholder = next((t for t in self.turns if t.key == key and t.text == AUDIO_ONLY), None)
            if placeholder is not None and text.strip():
                placeholder.text = text.strip()
                return placeholder
            return None
        self._closed_keys.add(key)
        text = text.strip()
        if not text:
            return None
        started = self._learner_started.pop(item_id, None)
        at = self._clock() if started is None else started
        turn = Turn("learner", text, at, "voice", key)
        self.turns.append(turn)
        return turn

    def _learner_failed(self, event: ServerEvent) -> Turn | None:
        """Speech the server heard but could not transcribe: kept as a turn, so it is not lost."""
        item_id = event.get("item_id")
        if not isinstance(item_id, str):
            return None
        key = f"learner/{item_id}"
        if key in self._closed_keys:
            return None
        self._closed_keys.add(key)
        started = self._learner_started.pop(item_id, None)
        turn = Turn("learner", NOT_UNDERSTOOD, self._clock() if started is None else started, "voice", key,
                    status="failed")
        self.turns.append(turn)
        return turn

    @staticmethod
    def _key(event: ServerEvent) -> str:
        return f"{event.get('response_id')}/{event.get('item_id')}"

    def _tutor_open(self, event: ServerEvent) -> _Open:
        key = self._key(event)
        opened = self._open_tutor.get(key)
        if opened is None:
            opened = _Open(Turn("tutor", "", self._clock(), "voice", key))
            self._open_tutor[key] = opened
        return opened

    def _tutor_close(self, key: str, final: str | None) -> Turn | None:
        if key in self._closed_keys:
            return None
        opened = self._open_tutor.pop(key, None)
        text = final if final is not None else "".join(opened.parts) if opened else ""
        text = text.strip()
        self._closed_keys.add(key)
        if not text:
            return None
        turn = opened.turn if opened else Turn("tutor", "", self._clock(), "voice", key)
        turn.text = text
        self.turns.append(turn)
        return turn
