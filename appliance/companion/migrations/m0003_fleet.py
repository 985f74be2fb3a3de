"""A district's fleet: per-kiosk budgets and daily counters, rate-limit events, kiosk heartbeats, and
per-lesson columns that the console and retention query without parsing every record.

``received_day`` is the companion's own UTC date when the record arrived: budgets and retention follow
the companion's clock, never a kiosk's (which may be wrong right after boot).
"""

from __future__ import annotations

import json
import time

from appliance.companion.db import Queries

VERSION = 3
NAME = "fleet"


async def apply(q: Queries) -> None:
    serial = "BIGSERIAL PRIMARY KEY" if q.engine == "postgresql" else "INTEGER PRIMARY KEY AUTOINCREMENT"
    for statement in (
        # NULL: the companion's configured default applies.
        "ALTER TABLE kiosks ADD COLUMN daily_minutes DOUBLE PRECISION",
        "ALTER TABLE sessions ADD COLUMN received_day TEXT",
        "ALTER TABLE sessions ADD COLUMN duration_s DOUBLE PRECISION",
        "ALTER TABLE sessions ADD COLUMN cost_usd DOUBLE PRECISION",
        "ALTER TABLE sessions ADD COLUMN level TEXT",
        # Set when retention removed the transcript and kept only the metrics.
        "ALTER TABLE sessions ADD COLUMN reduced_at DOUBLE PRECISION",
        "CREATE INDEX sessions_by_day ON sessions (received_day, kiosk_id)",
        "CREATE INDEX sessions_by_received ON sessions (received_at)",
        # Maintained on every new record: the budget is one row read, not a scan of the day's lessons.
        "CREATE TABLE kiosk_days (kiosk_id TEXT NOT NULL, day TEXT NOT NULL, lessons INTEGER NOT NULL DEFAULT 0, "
        "seconds DOUBLE PRECISION NOT NULL DEFAULT 0, cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0, "
        "PRIMARY KEY (kiosk_id, day))",
        # One row per counted event (a token, a plan, a failed key, a failed login), for sliding windows;
        # bucket is e.g. 'token:kiosk-a'. Old rows are pruned as they leave every window.
        f"CREATE TABLE rate_events (id {serial}, bucket TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX rate_events_by_bucket ON rate_events (bucket, at)",
        # The latest heartbeat of each kiosk (report = the whole heartbeat as JSON).
        "CREATE TABLE kiosk_status (kiosk_id TEXT PRIMARY KEY, seen_at DOUBLE PRECISION NOT NULL, version TEXT, "
        "state TEXT, unsynced INTEGER, disk_free_mb DOUBLE PRECISION, last_error TEXT, report TEXT)",
    ):
        await q.execute(statement)
    await _backfill(q)


async def _backfill(q: Queries) -> None:
    """Fill the new columns and counters from the lessons already stored."""
    rows = await q.fetchall("SELECT seq, kiosk_id, record, received_at FROM sessions")
    days: dict[tuple[str, str], list[float]] = {}
    for seq, kiosk_id, text, received_at in rows:
        try:
            record = json.loads(text)
            metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
        except (ValueError, AttributeError):
            metrics = {}
        duration = _number(metrics.get("duration_s"))
        cost = _number(metrics.get("est_cost_usd"))
        day = time.strftime("%Y-%m-%d", time.gmtime(float(received_at)))
        await q.execute("UPDATE sessions SET received_day = ?, duration_s = ?, cost_usd = ? WHERE seq = ?",
                        (day, duration, cost, seq))
        totals = days.setdefault((kiosk_id, day), [0, 0.0, 0.0])
        totals[0] += 1
        totals[1] += duration
        totals[2] += cost
    for (kiosk_id, day), (lessons, seconds, cost) in days.items():
        await q.execute("INSERT INTO kiosk_days (kiosk_id, day, lessons, seconds, cost_usd) VALUES (?, ?, ?, ?, ?)",
                        (kiosk_id, day, lessons, seconds, cost))


def _number(value: object) -> float:
    """Old records were not type-checked: anything but a finite non-negative number counts as 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value)
    return number if number == number and 0 <= number < float("inf") else 0.0
