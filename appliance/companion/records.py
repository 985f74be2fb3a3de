"""Validation of session records (kiosk → companion), schema 1.

Strict on purpose: a record the companion cannot understand must be refused with a reason the
kiosk can log and park, rather than stored half-understood.
"""

from __future__ import annotations

import re
from typing import Any

END_REASONS = frozenset({"button", "voice_stop", "time_limit", "idle", "error", "shutdown", "interrupted",
                         "call_dropped", "session_expired", "stop_command", "quota_exceeded", "rate_limited"})
ROLES = frozenset({"learner", "tutor"})
SOURCES = frozenset({"voice", "text"})
TURN_STATUSES = frozenset({None, "incomplete", "failed"})
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
UUID = re.compile(r"^[0-9a-fA-F-]{8,64}$")
MAX_TURNS = 2000


class InvalidRecord(ValueError):
    """The reason a record was refused (names the field)."""


def validate_record(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise InvalidRecord("a session record must be a JSON object")
    if record.get("schema") != 1:
        raise InvalidRecord(f"schema must be 1, got {record.get('schema')!r}")
    for key in ("session_id", "kiosk_id", "started_at", "ended_at", "end_reason"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise InvalidRecord(f"{key} is missing or not a string")
    if not UUID.match(record["session_id"]):
        raise InvalidRecord("session_id is not an id")
    for key in ("started_at", "ended_at"):
        if not ISO.match(record[key]):
            raise InvalidRecord(f"{key} is not an ISO 8601 time")
    if record["end_reason"] not in END_REASONS:
        raise InvalidRecord(f"end_reason {record['end_reason']!r} is not one of {', '.join(sorted(END_REASONS))}")
    if record.get("plan_id") is not None and not isinstance(record["plan_id"], str):
        raise InvalidRecord("plan_id must be a string or null")
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
        if turn.get("status") not in TURN_STATUSES:
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
    synced = (record.get("metrics") or {}).get("clock_synced")
    if synced is not None and not isinstance(synced, bool):
        raise InvalidRecord("metrics.clock_synced must be true, false or absent")
    return record
