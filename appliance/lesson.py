"""One lesson's data while it runs, and the session record it becomes (schema 1).

Kept apart from the orchestrator so the record format lives in one readable place.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from appliance.realtime.transcript import Transcript, iso_utc

END_REASONS = ("button", "voice_stop", "time_limit", "idle", "error", "shutdown", "interrupted", "call_dropped")

# USD per 1M tokens: (audio in, audio out, text in, text out). Estimates only; the bill is the truth.
PRICES_PER_M = {
    "mini": (10.0, 20.0, 0.6, 2.4),
    "full": (32.0, 64.0, 4.0, 16.0),
}


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

    def add(self, usage: Any) -> None:
        """Add one response's ``usage`` object; tolerant of missing or odd fields."""
        if not isinstance(usage, dict):
            return
        self.responses += 1
        self.input_tokens += _int(usage.get("input_tokens"))
        self.output_tokens += _int(usage.get("output_tokens"))
        details_in = usage.get("input_token_details") or {}
        details_out = usage.get("output_token_details") or {}
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


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass
class Lesson:
    """State of the lesson in progress (owned by the kiosk task)."""

    kiosk_id: str
    model: str = ""
    plan_id: str | None = None
    targets: list[dict[str, Any]] = field(default_factory=list)
    session_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    pressed_at: float = field(default_factory=time.monotonic)
    started_at: float = field(default_factory=time.time)
    connected_at: float | None = None
    first_audio_at: float | None = None
    transcript: Transcript = field(default_factory=Transcript)
    usage: Usage = field(default_factory=Usage)
    errors: list[dict[str, Any]] = field(default_factory=list)
    resumes: int = 0
    """How many times the lesson moved to a new call after its call dropped."""

    @property
    def connect_ms(self) -> float | None:
        return None if self.connected_at is None else (self.connected_at - self.pressed_at) * 1000

    @property
    def first_audio_ms(self) -> float | None:
        return None if self.first_audio_at is None else (self.first_audio_at - self.pressed_at) * 1000

    def add_error(self, code: str, message: str) -> None:
        self.errors.append({"code": code, "message": message, "at": iso_utc(time.time())})

    def to_record(self, end_reason: str, ended_at: float | None = None) -> dict[str, Any]:
        """The session record sent to the companion (PROTOCOL §2)."""
        assert end_reason in END_REASONS, end_reason
        ended_at = time.time() if ended_at is None else ended_at
        turns = self.transcript.to_records()
        learner = [t for t in turns if t["role"] == "learner"]
        tutor = [t for t in turns if t["role"] == "tutor"]
        return {
            "schema": 1,
            "session_id": self.session_id,
            "kiosk_id": self.kiosk_id,
            "started_at": iso_utc(self.started_at),
            "ended_at": iso_utc(ended_at),
            "end_reason": end_reason,
            "plan_id": self.plan_id,
            "targets": self.targets,
            "turns": turns,
            "metrics": {
                "duration_s": round(max(0.0, ended_at - self.started_at), 3),
                "learner_turns": len(learner),
                "tutor_turns": len(tutor),
                "learner_words": sum(_words(t["text"]) for t in learner),
                "tutor_words": sum(_words(t["text"]) for t in tutor),
                "targets_used": _targets_used(self.targets, learner),
                "connect_ms": None if self.connect_ms is None else round(self.connect_ms, 1),
                "first_audio_ms": None if self.first_audio_ms is None else round(self.first_audio_ms, 1),
                "usage": self.usage.to_record(),
                "est_cost_usd": self.usage.cost_usd(self.model),
            },
            "errors": list(self.errors),
        }


def _words(text: str) -> int:
    return len(re.findall(r"[\w']+", text))


def _targets_used(targets: list[dict[str, Any]], learner_turns: list[dict[str, str]]) -> int:
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
