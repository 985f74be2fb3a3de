"""The companion's data: device keys (hashed), lesson plans and session records.

Every method is async and goes through ``appliance.companion.db`` (SQLite on its own thread, or
PostgreSQL's async pool), so a slow query never stalls the other kiosks' requests. Nothing is kept in
process memory: two companions on one database behave as one. Session ids are unique: storing the same
session twice stores it once (idempotency).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from appliance.companion.db import Database, open_database
from appliance.companion.migrations import migrate


def hash_key(key: str) -> str:
    """Keys are random 32-byte secrets, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


async def open_storage(spec: str | Path) -> Storage:
    """Open the database (``postgresql://…`` or a SQLite path) and bring its schema up to date."""
    db = await open_database(spec)
    try:
        await migrate(db)
    except BaseException:
        await db.close()
        raise
    return Storage(db, str(spec))


class Storage:
    def __init__(self, db: Database, spec: str = "") -> None:
        self.db = db
        self.path = spec

    async def close(self) -> None:
        await self.db.close()

    # -- kiosks -----------------------------------------------------------------------------
    async def add_kiosk(self, kiosk_id: str, key: str) -> None:
        """Register (or re-key) a kiosk; the key itself is never stored."""
        await self.db.execute(
            "INSERT INTO kiosks (kiosk_id, key_hash, created_at, revoked_at) VALUES (?, ?, ?, NULL) "
            "ON CONFLICT(kiosk_id) DO UPDATE SET key_hash = excluded.key_hash, revoked_at = NULL",
            (kiosk_id, hash_key(key), time.time()))

    async def revoke_kiosk(self, kiosk_id: str) -> bool:
        changed = await self.db.execute("UPDATE kiosks SET revoked_at = ? WHERE kiosk_id = ? AND revoked_at IS NULL",
                                        (time.time(), kiosk_id))
        return changed > 0

    async def kiosk_for_key(self, key: str) -> str | None:
        row = await self.db.fetchone("SELECT kiosk_id FROM kiosks WHERE key_hash = ? AND revoked_at IS NULL",
                                     (hash_key(key),))
        return row[0] if row else None

    # -- plans ------------------------------------------------------------------------------
    async def save_plan(self, plan: dict[str, Any], kiosk_id: str, source: str) -> None:
        await self.db.execute("INSERT INTO plans (plan_id, kiosk_id, plan, source, created_at) VALUES (?, ?, ?, ?, ?)",
                              (plan["plan_id"], kiosk_id, json.dumps(plan), source, time.time()))

    async def get_plan(self, plan_id: str, kiosk_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT plan FROM plans WHERE plan_id = ? AND kiosk_id = ?", (plan_id, kiosk_id))
        return json.loads(row[0]) if row else None

    # -- sessions ---------------------------------------------------------------------------
    async def store_session(self, record: dict[str, Any]) -> bool:
        """True when the record was new; False when this session id was already stored."""
        changed = await self.db.execute(
            "INSERT INTO sessions (session_id, kiosk_id, started_at, ended_at, end_reason, record, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
            (record["session_id"], record["kiosk_id"], record["started_at"], record["ended_at"],
             record["end_reason"], json.dumps(record, ensure_ascii=False), time.time()))
        return changed > 0

    async def sessions(self, kiosk_id: str | None, since: str | None = None) -> list[dict[str, Any]]:
        """Records in the order they were received; ``kiosk_id=None`` means all kiosks (admin export)."""
        query = "SELECT record FROM sessions WHERE 1=1"
        args: list[Any] = []
        if kiosk_id is not None:
            query += " AND kiosk_id = ?"
            args.append(kiosk_id)
        if since:
            query += " AND started_at >= ?"
            args.append(since)
        rows = await self.db.fetchall(query + " ORDER BY seq", args)
        return [json.loads(r[0]) for r in rows]
