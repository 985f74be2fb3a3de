"""What the console reads and changes, straight on the companion's tables through the Database API.

Its own queries on purpose: the console works on any database at schema version 3 or later, whether or
not the lesson columns (``duration_s``, ``cost_usd``, ``level``) were filled when a record arrived. Where a
column is NULL the number comes from the record's own metrics instead.

A lesson's *day* is the UTC date it started (``started_at``), the day a teacher means; budgets count by
the companion's receiving day, which differs only for lessons synced after midnight.
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from appliance.companion.console.groups import Scope
from appliance.companion.db import Database
from appliance.companion.storage import hash_key, stored_json
from appliance.contract.names import LEVELS
from appliance.contract.record import DAY_S, MAX_COST_USD, UncheckedRecord

KIOSK_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

DAY = re.compile(r"^\d{4}-\d\d-\d\d$")
LIST_LIMIT = 500
EXPORT_LIMIT = 20_000
MAX_DAILY_MINUTES = 24 * 60


class FilterError(ValueError):
    """A filter value that cannot be used; the message names the field and what is allowed."""


@dataclass(frozen=True)
class LessonFilter:
    kiosk: str | None = None
    day_from: str | None = None
    day_to: str | None = None
    level: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> LessonFilter:
        """From GET parameters (``kiosk``, ``from``, ``to``, ``level``); blank means no filter."""
        kiosk = (query.get("kiosk") or "").strip() or None
        day_from = (query.get("from") or "").strip() or None
        day_to = (query.get("to") or "").strip() or None
        level = (query.get("level") or "").strip().upper() or None
        if kiosk is not None and not KIOSK_ID.match(kiosk):
            raise FilterError("kiosk: a kiosk name is 1-64 letters, digits, '-' or '_'")
        for name, value in (("from", day_from), ("to", day_to)):
            if value is not None:
                try:
                    if not DAY.match(value):
                        raise ValueError
                    date.fromisoformat(value)
                except ValueError:
                    raise FilterError(f"{name}: a day is written YYYY-MM-DD, e.g. 2026-11-24") from None
        if level is not None and level not in LEVELS:
            raise FilterError(f"level: one of {', '.join(LEVELS)}")
        return cls(kiosk, day_from, day_to, level)

    def params(self) -> dict[str, str]:
        """The filter as GET parameters again (for links to the CSV export and the chart)."""
        pairs = {"kiosk": self.kiosk, "from": self.day_from, "to": self.day_to, "level": self.level}
        return {k: v for k, v in pairs.items() if v}

    def where(self) -> tuple[str, list[Any]]:
        sql, args = " WHERE 1=1", []
        if self.kiosk:
            sql += " AND kiosk_id = ?"
            args.append(self.kiosk)
        if self.day_from:
            sql += " AND started_at >= ?"
            args.append(self.day_from)
        if self.day_to and self.day_to < date.max.isoformat():  # the last day of the calendar: no bound
            # ISO strings sort as times: everything before the next day.
            sql += " AND started_at < ?"
            args.append((date.fromisoformat(self.day_to) + timedelta(days=1)).isoformat())
        if self.level:
            sql += " AND level = ?"
            args.append(self.level)
        return sql, args


@dataclass(frozen=True)
class Lesson:
    session_id: str
    kiosk_id: str
    started_at: str
    ended_at: str
    end_reason: str
    duration_s: float
    cost_usd: float
    level: str | None
    voice: str | None
    """The tutor's voice (NULL for lessons from kiosks that did not send one)."""
    record: UncheckedRecord | None = field(default=None, compare=False)
    """As stored: reduced to its metrics past retention, and possibly from an older companion."""

    @property
    def day(self) -> str:
        return self.started_at[:10]

    @property
    def minutes(self) -> float:
        return self.duration_s / 60


def _number(value: Any, limit: float) -> float:
    """A stored number fit to add up: at most ``limit`` (one lesson's most), so that sums stay finite even
    over values an older companion let in (1e308 dollars, twice, was an infinite total and a failed page)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        return 0.0
    return min(float(value), limit)


def _lesson(row: tuple[Any, ...], keep_record: bool) -> Lesson:
    session_id, kiosk_id, started_at, ended_at, end_reason, duration_s, cost_usd, level, voice, text = row
    record: UncheckedRecord | None = None
    if text is not None:
        try:
            loaded = stored_json(text)
            record = loaded if isinstance(loaded, dict) else None
        except ValueError:
            record = None
    metrics = (record or {}).get("metrics")
    metrics = metrics if isinstance(metrics, dict) else {}
    duration = _number(duration_s if duration_s is not None else metrics.get("duration_s"), DAY_S)
    cost = _number(cost_usd if cost_usd is not None else metrics.get("est_cost_usd"), MAX_COST_USD)
    return Lesson(session_id, kiosk_id, started_at, ended_at, end_reason, duration, cost, level, voice,
                  record if keep_record else None)


_COLUMNS = "session_id, kiosk_id, started_at, ended_at, end_reason, duration_s, cost_usd, level, voice"
#: The record is fetched only where a number column is missing: a list of 500 lessons is not 500 transcripts.
_RECORD_IF_NEEDED = "CASE WHEN duration_s IS NULL OR cost_usd IS NULL THEN record END"


def _scoped(flt: LessonFilter, scope: Scope) -> tuple[str, list[Any]]:
    where, args = flt.where()
    narrow, more = scope.clause()
    return where + narrow, [*args, *more]


async def lessons(db: Database, flt: LessonFilter, scope: Scope, limit: int = LIST_LIMIT) -> list[Lesson]:
    """The newest lessons matching the filter within the viewer's scope (at most ``limit``)."""
    where, args = _scoped(flt, scope)
    rows = await db.fetchall(f"SELECT {_COLUMNS}, {_RECORD_IF_NEEDED} FROM sessions{where} "
                             "ORDER BY started_at DESC, seq DESC LIMIT ?", [*args, limit])
    return [_lesson(row, keep_record=False) for row in rows]


async def lessons_with_records(db: Database, flt: LessonFilter, scope: Scope,
                               limit: int = EXPORT_LIMIT) -> list[Lesson]:
    """Like :func:`lessons` with each full record (for the CSV export)."""
    where, args = _scoped(flt, scope)
    rows = await db.fetchall(f"SELECT {_COLUMNS}, record FROM sessions{where} ORDER BY started_at, seq LIMIT ?",
                             [*args, limit])
    return [_lesson(row, keep_record=True) for row in rows]


async def lesson(db: Database, session_id: str, scope: Scope) -> Lesson | None:
    """One lesson, or None when there is none *or* it is outside the scope (the two must look the same)."""
    narrow, more = scope.clause()
    row = await db.fetchone(f"SELECT {_COLUMNS}, record FROM sessions WHERE session_id = ?{narrow}",
                            (session_id, *more))
    return _lesson(row, keep_record=True) if row else None


@dataclass(frozen=True)
class DayUsage:
    day: str
    kiosk_id: str
    lessons: int
    minutes: float
    cost_usd: float


async def daily_usage(db: Database, flt: LessonFilter, scope: Scope) -> list[DayUsage]:
    """Lesson minutes and estimated cost per day and kiosk over the filtered lessons, oldest day first."""
    totals: dict[tuple[str, str], list[float]] = {}
    for item in await lessons(db, flt, scope, limit=EXPORT_LIMIT):
        entry = totals.setdefault((item.day, item.kiosk_id), [0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += item.minutes
        entry[2] += item.cost_usd
    return [DayUsage(day, kiosk, int(n), minutes, cost) for (day, kiosk), (n, minutes, cost) in sorted(totals.items())]


# -- the fleet --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KioskRow:
    kiosk_id: str
    created_at: float
    revoked_at: float | None
    daily_minutes: float | None
    group_name: str | None
    seen_at: float | None
    version: str | None
    state: str | None
    unsynced: int | None
    disk_free_mb: float | None
    last_error: str | None
    channel: str = "stable"
    group_id: int | None = None
    update_state: str | None = None
    update_error: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


async def fleet(db: Database, scope: Scope) -> list[KioskRow]:
    """Every kiosk in scope with its group, update channel and latest heartbeat (heartbeat fields None when it
    never sent one)."""
    narrow, args = scope.clause("k.kiosk_id")
    rows = await db.fetchall(
        "SELECT k.kiosk_id, k.created_at, k.revoked_at, k.daily_minutes, g.name, s.seen_at, s.version, s.state, "
        "s.unsynced, s.disk_free_mb, s.last_error, k.channel, k.group_id, s.update_state, s.update_error "
        "FROM kiosks k LEFT JOIN kiosk_status s ON s.kiosk_id = k.kiosk_id "
        f"LEFT JOIN kiosk_groups g ON g.group_id = k.group_id WHERE 1=1{narrow} "
        "ORDER BY k.revoked_at IS NOT NULL, k.kiosk_id", args)
    return [KioskRow(*row) for row in rows]


async def lesson_count(db: Database, kiosk_id: str) -> int:
    """Lessons stored for one kiosk (what erasing it would remove)."""
    row = await db.fetchone("SELECT COUNT(*) FROM sessions WHERE kiosk_id = ?", (kiosk_id,))
    return int(row[0]) if row else 0


async def kiosk_ids(db: Database, scope: Scope) -> list[str]:
    narrow, args = scope.clause()
    return [row[0] for row in await db.fetchall(f"SELECT kiosk_id FROM kiosks WHERE 1=1{narrow} ORDER BY kiosk_id",
                                                args)]


class KioskError(ValueError):
    """A kiosk change that cannot be made; the message says why."""


async def add_kiosk(db: Database, kiosk_id: str) -> str:
    """Register a kiosk and return its new device key (only its hash is stored: show it once).

    A revoked kiosk's name may be reused (that re-keys it); an active one's may not, so a slip of the
    admin's hand never replaces a working kiosk's key."""
    if not KIOSK_ID.match(kiosk_id):
        raise KioskError("a kiosk name is 1-64 letters, digits, '-' or '_'")
    key = secrets.token_urlsafe(32)
    async with db.transaction() as q:
        row = await q.fetchone("SELECT revoked_at FROM kiosks WHERE kiosk_id = ?", (kiosk_id,))
        if row is not None and row[0] is None:
            raise KioskError(f"a kiosk named {kiosk_id} is already active: revoke it first to give it a new key")
        if row is None:
            await q.execute("INSERT INTO kiosks (kiosk_id, key_hash, created_at, revoked_at) VALUES (?, ?, ?, NULL)",
                            (kiosk_id, hash_key(key), time.time()))
        else:
            await q.execute("UPDATE kiosks SET key_hash = ?, revoked_at = NULL WHERE kiosk_id = ?",
                            (hash_key(key), kiosk_id))
    return key


def parse_minutes(text: str) -> float | None:
    """A budget from a form field: blank = the companion's default (None), else minutes 0…1440."""
    text = text.strip()
    if not text:
        return None
    try:
        minutes = float(text)
    except ValueError:
        raise KioskError("a daily budget is a number of minutes, or blank for the companion default") from None
    if not math.isfinite(minutes) or not 0 <= minutes <= MAX_DAILY_MINUTES:
        raise KioskError(f"a daily budget is between 0 and {MAX_DAILY_MINUTES} minutes")
    return minutes
