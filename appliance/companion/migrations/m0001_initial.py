"""The first schema: kiosks (hashed keys), plans and session records.

Written with IF NOT EXISTS because companions from before versioned migrations already created these
tables: on such a database this step changes nothing and is simply recorded.
"""

from __future__ import annotations

from appliance.companion.db import Queries

VERSION = 1
NAME = "initial"


async def apply(q: Queries) -> None:
    serial = "BIGSERIAL PRIMARY KEY" if q.engine == "postgresql" else "INTEGER PRIMARY KEY AUTOINCREMENT"
    for statement in (
        "CREATE TABLE IF NOT EXISTS kiosks (kiosk_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, "
        "created_at REAL NOT NULL, revoked_at REAL)",
        "CREATE TABLE IF NOT EXISTS plans (plan_id TEXT PRIMARY KEY, kiosk_id TEXT NOT NULL, plan TEXT NOT NULL, "
        "source TEXT NOT NULL, created_at REAL NOT NULL)",
        f"CREATE TABLE IF NOT EXISTS sessions (seq {serial}, session_id TEXT NOT NULL UNIQUE, "
        "kiosk_id TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT NOT NULL, end_reason TEXT NOT NULL, "
        "record TEXT NOT NULL, received_at REAL NOT NULL)",
        "CREATE INDEX IF NOT EXISTS sessions_by_kiosk ON sessions (kiosk_id, started_at)",
    ):
        await q.execute(statement)
