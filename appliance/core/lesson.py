"""One lesson's data while it runs, and the session record it becomes (schema 1).

Kept apart from the orchestrator so the record format lives in one readable place.

Every instant a lesson keeps (press, start, turns, errors) is a reading of its :class:`Clock`'s
monotonic timeline; the record's wall times are computed from them in one go when it is built, so the
duration is the time that really passed and the dates are right even when network time stepped the
system clock during the lesson (see :mod:`appliance.common.clock`).
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from appliance.common.clock import Clock, iso_utc, system_clock
from appliance.common.redate import anchor_hint
from appliance.common.timeline import PRESSED, CallTimeline
from appliance.contract.names import END_REASONS, SCHEMA_VERSION
from appliance.contract.record import Metrics, SessionRecord, TurnRecord
from appliance.contract.targets import TargetRecord
from appliance.core.transcript import AUDIO_ONLY, Transcript

log = logging.getLogger(__name__)

# USD per 1M tokens: (audio in, audio out, text in, text out). Estimates only; the bill is the truth.
PRICES_PER_M = {
    "mini": (10.0, 20.0, 0.6, 2.4),
    "full": (32.0, 64.0, 4.0, 16.0),
}
LEARNER_AUDIO_TOKENS_PER_MIN = 600
"""User audio is billed at about one token per 100 ms."""
TUTOR_AUDIO_TOKENS_PER_MIN = 1200
"""Tutor audio is billed at about one token per 50 ms."""


def price_tier(model: str) -> str:
    return "mini" if "mini" in model else "full"


@dataclass
class Usage:
    """Token counts summed over every ``response.done`` of the lesson."""

    input_tokens: int = 0
    output_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    input_text_tokens: int = 0
    output_text_tokens: int = 0
    responses: int = 0
    detailed: int = 0
    """Responses whose usage carried per-token-type details (some compatible servers send none)."""

    def add(self, usage: Any) -> None:
        """Add one response's ``usage`` object; tolerant of missing or odd fields."""
        if not isinstance(usage, dict):
            return
        self.responses += 1
        self.input_tokens += _int(usage.get("input_tokens"))
        self.output_tokens += _int(usage.get("output_tokens"))
        details_in = usage.get("input_token_details") or {}
        details_out = usage.get("output_token_details") or {}
        if (isinstance(details_in, dict) and details_in) or (isinstance(details_out, dict) and details_out):
            self.detailed += 1
        if isinstance(details_in, dict):
            self.input_audio_tokens += _int(details_in.get("audio_tokens"))
            self.input_text_tokens += _int(details_in.get("text_tokens"))
        if isinstance(details_out, dict):
            self.output_audio_tokens += _int(details_out.get("audio_tokens"))
            self.output_text_tokens += _int(details_out.get("text_tokens"))

    def cost_usd(self, model: str) -> float:
        a_in, a_out, t_in, t_out = PRICES_PER_M[price_tier(model)]
        return round((self.input_audio_tokens * a_in + self.output_audio_tokens * a_out
                      + self.input_text_tokens * t_in + self.output_text_tokens * t_out) / 1e6, 6)

    def to_record(self) -> dict[str, int]:
        return dict(self.__dict__)


def cost_from_duration(model: str, learner_audio_s: float, tutor_audio_s: float) -> float:
    """The audio cost at the model tier's per-minute equivalents, for servers whose usage has no details."""
    a_in, a_out, _, _ = PRICES_PER_M[price_tier(model)]
    per_min_in = LEARNER_AUDIO_TOKENS_PER_MIN * a_in / 1e6
    per_min_out = TUTOR_AUDIO_TOKENS_PER_MIN * a_out / 1e6
    return round(learner_audio_s / 60 * per_min_in + tutor_audio_s / 60 * per_min_out, 6)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class LessonError:
    """Something that went wrong during the lesson; ``at`` is a monotonic instant (a date only in the record)."""

    code: str
    message: str
    at: float


MAX_ERRORS = 200
"""Errors kept per lesson (a server that fails every event must not grow a record without bound)."""


@dataclass
class Lesson:
    """State of the lesson in progress (owned by the kiosk task).

    ``pressed_at``, ``connected_at`` and ``first_audio_at`` are instants of ``clock.monotonic()``: pass
    readings of that clock (the system clock's is ``time.monotonic``)."""

    kiosk_id: str
    model: str = ""
    voice: str = ""
    """The tutor's voice sent in the session config (the default after a refusal); "" when none was named."""
    plan_id: str | None = None
    targets: list[TargetRecord] = field(default_factory=list)
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    pressed_at: float | None = None
    """When the button was pressed (default: when the lesson was made)."""
    connected_at: float | None = None
    first_audio_at: float | None = None
    usage: Usage = field(default_factory=Usage)
    errors: list[LessonError] = field(default_factory=list)
    """``{"code", "message", "at"}`` with ``at`` a monotonic instant (a wall time only in the record)."""
    learner_audio_s: float = 0.0
    """Learner speech sent to the server (VAD segments or held-button captures): the billed input audio."""
    tutor_audio_s: float = 0.0
    """Tutor audio that reached the speaker."""
    resumes: int = 0
    """How many times the lesson moved to a new call after its call dropped."""
    clock: Clock = field(default_factory=system_clock, repr=False)
    timeline: CallTimeline = field(default_factory=CallTimeline, repr=False)
    """Stage stamps of the lesson's first call (press → … → first audible), on the monotonic clock."""
    transcript: Transcript = field(init=False)
    started_mono: float = field(init=False)
    """When the lesson began, on the monotonic timeline: the origin of ``duration_s``."""

    def __post_init__(self) -> None:
        self.started_mono = self.clock.monotonic()
        if self.pressed_at is None:
            self.pressed_at = self.started_mono
        self.timeline.mark(PRESSED, at=self.pressed_at)
        self.transcript = Transcript(self.clock)

    @property
    def started_at(self) -> float:
        """When the lesson began, as a wall time (epoch seconds) from the clock's best anchor now."""
        return self.clock.wall_at(self.started_mono)

    @property
    def elapsed_s(self) -> float:
        """Seconds since the lesson began (monotonic: immune to clock steps)."""
        return max(0.0, self.clock.monotonic() - self.started_mono)

    @property
    def connect_ms(self) -> float | None:
        return None if self.connected_at is None else max(0.0, self.connected_at - self._pressed()) * 1000

    @property
    def first_audio_ms(self) -> float | None:
        return None if self.first_audio_at is None else max(0.0, self.first_audio_at - self._pressed()) * 1000

    def _pressed(self) -> float:
        return self.started_mono if self.pressed_at is None else self.pressed_at

    def add_error(self, code: str, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(LessonError(code, message, self.clock.monotonic()))

    def to_record(self, end_reason: str, ended_at: float | None = None) -> SessionRecord:
        """The session record sent to the companion (PROTOCOL §2).

        ``ended_at``: a wall time (epoch seconds) to end the lesson at instead of now; it is placed on
        the monotonic timeline through the same anchor as every other stamp of the record."""
        if end_reason not in END_REASONS:
            raise ValueError(f"end reason {end_reason!r} is not one of {', '.join(END_REASONS)}")
        anchor = self.clock.anchor()
        ended_mono = self.clock.monotonic() if ended_at is None else anchor.mono_at(ended_at)
        ended_mono = max(ended_mono, self.started_mono)
        turns = self.transcript.to_records(anchor)
        learner = [t for t in turns if t["role"] == "learner" and t.get("status") != "failed"]
        tutor = [t for t in turns if t["role"] == "tutor"]
        metrics: Metrics = {
                "duration_s": round(ended_mono - self.started_mono, 3),
                "clock_synced": anchor.synced,
                "learner_turns": len(learner),
                "tutor_turns": len(tutor),
                "learner_words": sum(_words(t["text"]) for t in learner if t["text"] != AUDIO_ONLY),
                "tutor_words": sum(_words(t["text"]) for t in tutor),
                "targets_used": _targets_used(self.targets, learner),
                "connect_ms": None if self.connect_ms is None else round(self.connect_ms, 1),
                "first_audio_ms": None if self.first_audio_ms is None else round(self.first_audio_ms, 1),
                "stages_ms": self.timeline.ms_since(),
                "usage": self.usage.to_record(),
                "est_cost_usd": self.usage.cost_usd(self.model),
        }
        if not self.usage.detailed and (self.learner_audio_s or self.tutor_audio_s):
            metrics["est_cost_usd"] = cost_from_duration(self.model, self.learner_audio_s, self.tutor_audio_s)
            metrics["cost_estimated_from"] = "duration"
            metrics["learner_audio_s"] = round(self.learner_audio_s, 2)
            metrics["tutor_audio_s"] = round(self.tutor_audio_s, 2)
        record: SessionRecord = {
            "schema": SCHEMA_VERSION,
            "session_id": self.session_id,
            "kiosk_id": self.kiosk_id,
            "started_at": iso_utc(anchor.wall_at(self.started_mono)),
            "ended_at": iso_utc(anchor.wall_at(ended_mono)),
            "end_reason": end_reason,
            "plan_id": self.plan_id,
            "voice": self.voice or None,
            "targets": self.targets,
            "turns": turns,
            "metrics": metrics,
            "errors": [{"code": e.code, "message": e.message, "at": iso_utc(anchor.wall_at(e.at))}
                       for e in self.errors],
        }
        if not anchor.synced:
            record["clock_anchor"] = anchor_hint(anchor)
        return record


    def final_record(self, end_reason: str) -> SessionRecord:
        """The lesson's record; if building it fails (a bug), a minimal one that still keeps the turns."""
        try:
            return self.to_record(end_reason)
        except Exception:
            log.exception("could not build the record of lesson %s; keeping a minimal one", self.session_id)
            record = Lesson(kiosk_id=self.kiosk_id, session_id=self.session_id, clock=self.clock).to_record(
                end_reason if end_reason in END_REASONS else "error")
            with contextlib.suppress(Exception):
                record["turns"] = self.transcript.to_records()
            record["errors"] = [{"code": "internal", "message": "record rebuilt after an internal error",
                                 "at": record["ended_at"]}]
            return record


def _words(text: str) -> int:
    return len(re.findall(r"[\w']+", text))


def _targets_used(targets: list[TargetRecord], learner_turns: list[TurnRecord]) -> int:
    """How many lesson targets the learner said at least once (case-insensitive)."""
    said = " ".join(t["text"].lower() for t in learner_turns)
    used = 0
    for target in targets:
        text = str(target.get("text", "")).lower().strip()
        if text and re.search(rf"\b{re.escape(text)}\b", said):
            used += 1
    return used


def matches_stop_phrase(text: str, phrases: list[str]) -> bool:
    """True when a learner utterance is a stop command.

    The phrase must appear as whole words and make up most of the utterance ("stop", "stop please",
    "okay stop now"), so a sentence that merely contains the word ("don't stop the music, I like
    it") does not end the lesson.
    """
    words = re.findall(r"[a-z']+", text.lower())
    for phrase in phrases:
        phrase_words = re.findall(r"[a-z']+", phrase.lower())
        if not phrase_words:
            continue
        n = len(phrase_words)
        found = any(words[i:i + n] == phrase_words for i in range(len(words) - n + 1))
        if found and len(words) <= n + 2:
            return True
    return False
