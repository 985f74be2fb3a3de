"""The lesson record (kiosk → companion, schema 1): its type, and the validation both sides share.

The kiosk builds it (appliance.core.lesson), keeps it (appliance.store) and sends it; the companion checks
it with :func:`validate_record` before storing it. Strict on purpose: a record the companion cannot
understand must be refused with a reason the kiosk can log and park, rather than stored half-understood.
The kiosk's own tests run every record it builds through the same function.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any, NotRequired, TypedDict, cast

from appliance.contract.names import (
    END_REASONS,
    LEVELS,
    ROLES,
    SOURCES,
    TURN_STATUSES,
    EndReason,
    Role,
    Source,
    TurnStatus,
)
from appliance.contract.targets import TargetRecord
from appliance.contract.voices import voice_problem


class TurnRecord(TypedDict):
    role: Role
    text: str
    at: str
    """ISO 8601 UTC."""
    source: NotRequired[Source]
    """Always written by this kiosk; a turn without it is a voice turn."""
    status: NotRequired[TurnStatus | None]
    interrupted: NotRequired[bool]
    """The learner cut the tutor off: ``text`` is what was heard."""


class ErrorRecord(TypedDict):
    code: str
    message: str
    at: NotRequired[str]


class Metrics(TypedDict, total=False):
    duration_s: float
    clock_synced: bool
    clock_corrected_s: float
    learner_turns: int
    tutor_turns: int
    learner_words: int
    tutor_words: int
    targets_used: int
    connect_ms: float | None
    first_audio_ms: float | None
    stages_ms: dict[str, float]
    usage: dict[str, int]
    est_cost_usd: float
    cost_estimated_from: str
    learner_audio_s: float
    tutor_audio_s: float


class ClockAnchorHint(TypedDict):
    boot_id: str | None
    offset_s: float


class SessionRecord(TypedDict):
    """A lesson as :func:`validate_record` accepts it. This kiosk writes every field but ``clock_anchor``
    (only before the clock is synchronized); the other NotRequired ones are accepted when absent."""

    schema: int
    session_id: str
    kiosk_id: str
    started_at: str
    ended_at: str
    end_reason: EndReason
    plan_id: NotRequired[str | None]
    voice: NotRequired[str | None]
    """The tutor's voice the lesson was spoken in (after any fallback); absent from older kiosks."""
    targets: NotRequired[list[TargetRecord]]
    turns: list[TurnRecord]
    metrics: NotRequired[Metrics]
    errors: NotRequired[list[ErrorRecord]]
    clock_anchor: NotRequired[ClockAnchorHint]


UncheckedRecord = dict[str, Any]
"""A lesson record read back as JSON (a journal, an export, the network, the companion's database): it was a
:class:`SessionRecord` when written, but damage, hand edits, older versions and retention mean nothing is
known about it until :func:`validate_record` passes it again."""
OutgoingRecord = SessionRecord | UncheckedRecord
"""What a kiosk keeps and sends: a lesson it has just built, or one read back from its store."""


ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
MAX_TURNS = 2000
DAY_S = 24 * 3600
MAX_COST_USD = 1000.0
"""More than a whole day of Realtime audio costs at list prices: no single lesson comes near it."""
MAX_COUNT = 1_000_000
MAX_TOKENS = 1_000_000_000
#: Metrics that budgets, costs and the console add up, with the largest value each may take: sums of them
#: must stay finite (two lessons of 1e308 dollars made every usage page fail, and 1.7e308 seconds overflowed
#: PostgreSQL's day counter), so each is a number >= 0 and at most what one lesson can be.
COUNTED_METRICS = {"duration_s": DAY_S, "est_cost_usd": MAX_COST_USD, "learner_turns": MAX_COUNT,
                   "tutor_turns": MAX_COUNT, "learner_words": MAX_COUNT, "tutor_words": MAX_COUNT,
                   "targets_used": MAX_COUNT, "learner_audio_s": DAY_S, "tutor_audio_s": DAY_S}
#: Timings a kiosk may not have measured (null), otherwise numbers >= 0 up to a day.
OPTIONAL_METRICS = {"connect_ms": DAY_S * 1000, "first_audio_ms": DAY_S * 1000}
MAX_CLOCK_SHIFT_S = 200 * 365 * DAY_S
"""A kiosk without a battery clock may start in 1970: its corrections reach decades, never centuries."""


class InvalidRecord(ValueError):
    """The reason a record was refused (names the field)."""


def validate_record(record: Any) -> SessionRecord:
    """The record itself when it is a valid schema-1 record; :class:`InvalidRecord` names the first fault.

    What the companion relies on is checked: ids, times, end reason, turns, and every counted metric.
    Lenient where older kiosks differ (a turn without ``source`` is a voice turn) and for the entries
    of ``targets`` and ``errors``, which are only shown, never computed with."""
    if not isinstance(record, dict):
        raise InvalidRecord("a session record must be a JSON object")
    schema = record.get("schema")
    if isinstance(schema, bool) or not isinstance(schema, int) or schema != 1:  # true == 1 == 1.0 in Python
        raise InvalidRecord(f"schema must be 1, got {record.get('schema')!r}")
    for key in ("session_id", "kiosk_id", "started_at", "ended_at", "end_reason"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise InvalidRecord(f"{key} is missing or not a string")
    if not is_uuid(record["session_id"]):
        raise InvalidRecord("session_id must be a UUID in canonical form (e.g. 0b8f6c1e-3d4a-4f43-9a61-2b7f0f1a9c11)")
    for key in ("started_at", "ended_at"):
        if not ISO.match(record[key]):
            raise InvalidRecord(f"{key} is not an ISO 8601 time")
    if record["end_reason"] not in END_REASONS:
        raise InvalidRecord(f"end_reason {record['end_reason']!r} is not one of {', '.join(sorted(END_REASONS))}")
    if record.get("plan_id") is not None and not isinstance(record["plan_id"], str):
        raise InvalidRecord("plan_id must be a string or null")
    # Not written by kiosks; a companion fills it in from the lesson's plan. Teachers filter and count by it.
    if record.get("level") is not None and record["level"] not in LEVELS:
        raise InvalidRecord(f"level must be one of {', '.join(LEVELS)}, null or absent, got {record['level']!r:.40}")
    if record.get("voice") is not None and (problem := voice_problem(record["voice"])):
        raise InvalidRecord(f"voice {problem}, null or absent")
    turns = record.get("turns")
    if not isinstance(turns, list) or len(turns) > MAX_TURNS:
        raise InvalidRecord(f"turns must be a list of at most {MAX_TURNS}")
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise InvalidRecord(f"turns[{i}] is not an object")
        if turn.get("role") not in ROLES:
            raise InvalidRecord(f"turns[{i}].role must be learner or tutor")
        if not isinstance(turn.get("text"), str):
            raise InvalidRecord(f"turns[{i}].text must be a string")
        if turn.get("source", "voice") not in SOURCES:
            raise InvalidRecord(f"turns[{i}].source must be voice or text")
        if not isinstance(turn.get("at"), str) or not ISO.match(turn["at"]):
            raise InvalidRecord(f"turns[{i}].at is not an ISO 8601 time")
        # Optional: a tutor response that did not finish, speech that could not be transcribed, a tutor
        # turn cut off by the learner (its text is then what was heard).
        if "status" in turn and turn["status"] is not None and turn["status"] not in TURN_STATUSES:
            raise InvalidRecord(f"turns[{i}].status must be one of incomplete, failed or absent")
        if not isinstance(turn.get("interrupted", False), bool):
            raise InvalidRecord(f"turns[{i}].interrupted must be true, false or absent")
    for key, kind in (("targets", list), ("metrics", dict), ("errors", list)):
        if key in record and not isinstance(record[key], kind):
            raise InvalidRecord(f"{key} must be a {'list' if kind is list else 'object'}")
    # Optional, from kiosks that know their clock: false means the dates were read before network time
    # set the clock (durations are right either way); clock_anchor lets the kiosk re-date it later.
    if "clock_anchor" in record and not isinstance(record["clock_anchor"], dict):
        raise InvalidRecord("clock_anchor must be an object")
    _check_metrics(record.get("metrics") or {})
    return cast(SessionRecord, record)


def is_uuid(text: str) -> bool:
    """A UUID written the way the kiosk writes one (lower-case, hyphenated): ids are compared as text, so
    two spellings of one UUID would be two lessons."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _is_number(value: Any) -> bool:
    """int or float but not bool (True == 1 would otherwise pass as a number)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _counted(value: Any, limit: float) -> bool:
    return _is_number(value) and math.isfinite(value) and 0 <= value <= limit


def _check_metrics(metrics: dict[str, Any]) -> None:
    """Budgets and costs are sums of these numbers: one string, negative or absurd value would break or
    bypass them."""
    for key, limit in COUNTED_METRICS.items():
        if key in metrics and not _counted(metrics[key], limit):
            raise InvalidRecord(f"metrics.{key} must be a number from 0 to {limit:g}, got {metrics[key]!r}")
    for key, limit in OPTIONAL_METRICS.items():
        if metrics.get(key) is not None and not _counted(metrics[key], limit):
            raise InvalidRecord(f"metrics.{key} must be a number from 0 to {limit:g} or null, got {metrics[key]!r}")
    shift = metrics.get("clock_corrected_s")
    if shift is not None and not (_is_number(shift) and math.isfinite(shift) and abs(shift) <= MAX_CLOCK_SHIFT_S):
        raise InvalidRecord(f"metrics.clock_corrected_s must be a number of seconds within ±{MAX_CLOCK_SHIFT_S:g} "
                            "or absent")
    usage = metrics.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise InvalidRecord("metrics.usage must be an object of token counts")
        for key, value in usage.items():
            if not _counted(value, MAX_TOKENS):
                raise InvalidRecord(f"metrics.usage.{key} must be a number from 0 to {MAX_TOKENS:g}, got {value!r}")
    synced = metrics.get("clock_synced")
    if synced is not None and not isinstance(synced, bool):
        raise InvalidRecord("metrics.clock_synced must be true, false or absent")
