"""The companion's database: device keys (hashed), lesson plans and session records (SQLite).

One small interface (``Storage``), so a district can later put PostgreSQL behind the same calls.
Session ids are primary keys: storing the same session twice stores it once (idempotency).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS kiosks (
    kiosk_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS plans (
    plan_id TEXT PRIMARY KEY, kiosk_id TEXT NOT NULL, plan TEXT NOT NULL, source TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL UNIQUE, kiosk_id TEXT NOT NULL,
    started_at TEXT NOT NULL, ended_at TEXT NOT NULL, end_reason TEXT NOT NULL, record TEXT NOT NULL,
    received_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_by_kiosk ON sessions (kiosk_id, started_at);
"""


def hash_key(key: str) -> str:
    """Keys are random 32-byte secrets, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


class Storage:
    """SQLite storage; every call is short and serialised by one lock."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    # -- kiosks -----------------------------------------------------------------------------
    def add_kiosk(self, kiosk_id: str, key: str) -> None:
        """Register (or re-key) a kiosk; the key itself is never stored."""
        with self._lock:
            self._db.execute(
                "INSERT INTO kiosks (kiosk_id, key_hash, created_at, revoked_at) VALUES (?, ?, ?, NULL) "
                "ON CONFLICT(kiosk_id) DO UPDATE SET key_hash = excluded.key_hash, revoked_at = NULL",
                (kiosk_id, hash_key(key), time.time()))

    def revoke_kiosk(self, kiosk_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("UPDATE kiosks SET revoked_at = ? WHERE kiosk_id = ? AND revoked_at IS NULL",
                                   (time.time(), kiosk_id))
            return cur.rowcount > 0

    def kiosk_for_key(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT kiosk_id FROM kiosks WHERE key_hash = ? AND revoked_at IS NULL",
                                   (hash_key(key),)).fetchone()
        return row[0] if row else None

    # -- plans ------------------------------------------------------------------------------
    def save_plan(self, plan: dict[str, Any], kiosk_id: str, source: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO plans (plan_id, kiosk_id, plan, source, created_at) VALUES (?, ?, ?, ?, ?)",
                             (plan["plan_id"], kiosk_id, json.dumps(plan), source, time.time()))

    def get_plan(self, plan_id: str, kiosk_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT plan FROM plans WHERE plan_id = ? AND kiosk_id = ?",
                                   (plan_id, kiosk_id)).fetchone()
        return json.loads(row[0]) if row else None

    # -- sessions ---------------------------------------------------------------------------
    def store_session(self, record: dict[str, Any]) -> bool:
        """True when the record was new; False when this session id was already stored."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO sessions (session_id, kiosk_id, started_at, ended_at, end_reason, record, "
                "received_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record["session_id"], record["kiosk_id"], record["started_at"], record["ended_at"],
                 record["end_reason"], json.dumps(record, ensure_ascii=False), time.time()))
            return cur.rowcount > 0

    def sessions(self, kiosk_id: str | None, since: str | None = None) -> list[dict[str, Any]]:
        """Records in the order they were received; ``kiosk_id=None`` means all kiosks (admin export)."""
        query = "SELECT record FROM sessions WHERE 1=1"
        args: list[Any] = []
        if kiosk_id is not None:
            query += " AND kiosk_id = ?"
            args.append(kiosk_id)
        if since:
            query += " AND started_at >= ?"
            args.append(since)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return [json.loads(r[0]) for r in rows]
