"""The companion's database: device keys (hashed), lesson plans and session records.

SQLite by default (one school, one file); PostgreSQL by a DSN for a district's fleet of kiosks.
Both run the same SQL (written with ``?`` placeholders, translated for PostgreSQL). Session ids are
unique: storing the same session twice stores it once (idempotency).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS kiosks (
    kiosk_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS plans (
    plan_id TEXT PRIMARY KEY, kiosk_id TEXT NOT NULL, plan TEXT NOT NULL, source TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    seq {serial}, session_id TEXT NOT NULL UNIQUE, kiosk_id TEXT NOT NULL,
    started_at TEXT NOT NULL, ended_at TEXT NOT NULL, end_reason TEXT NOT NULL, record TEXT NOT NULL,
    received_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_by_kiosk ON sessions (kiosk_id, started_at);
"""


def hash_key(key: str) -> str:
    """Keys are random 32-byte secrets, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(key.encode()).hexdigest()


def open_storage(spec: str | Path) -> Storage:
    """``postgresql://…`` opens PostgreSQL; anything else is a SQLite file path."""
    text = str(spec)
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresStorage(text)
    return Storage(text)


class Storage:
    """SQLite storage; every call is short and serialised by one lock."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db: Any = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA_TEMPLATE.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT"))
        self._lock = threading.Lock()

    def _run(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> Any:
        return self._db.execute(sql, args)

    def close(self) -> None:
        self._db.close()

    # -- kiosks -----------------------------------------------------------------------------
    def add_kiosk(self, kiosk_id: str, key: str) -> None:
        """Register (or re-key) a kiosk; the key itself is never stored."""
        with self._lock:
            self._run(
                "INSERT INTO kiosks (kiosk_id, key_hash, created_at, revoked_at) VALUES (?, ?, ?, NULL) "
                "ON CONFLICT(kiosk_id) DO UPDATE SET key_hash = excluded.key_hash, revoked_at = NULL",
                (kiosk_id, hash_key(key), time.time()))

    def revoke_kiosk(self, kiosk_id: str) -> bool:
        with self._lock:
            cur = self._run("UPDATE kiosks SET revoked_at = ? WHERE kiosk_id = ? AND revoked_at IS NULL",
                                   (time.time(), kiosk_id))
            return cur.rowcount > 0

    def kiosk_for_key(self, key: str) -> str | None:
        with self._lock:
            row = self._run("SELECT kiosk_id FROM kiosks WHERE key_hash = ? AND revoked_at IS NULL",
                                   (hash_key(key),)).fetchone()
        return row[0] if row else None

    # -- plans ------------------------------------------------------------------------------
    def save_plan(self, plan: dict[str, Any], kiosk_id: str, source: str) -> None:
        with self._lock:
            self._run("INSERT INTO plans (plan_id, kiosk_id, plan, source, created_at) VALUES (?, ?, ?, ?, ?)",
                             (plan["plan_id"], kiosk_id, json.dumps(plan), source, time.time()))

    def get_plan(self, plan_id: str, kiosk_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._run("SELECT plan FROM plans WHERE plan_id = ? AND kiosk_id = ?",
                                   (plan_id, kiosk_id)).fetchone()
        return json.loads(row[0]) if row else None

    # -- sessions ---------------------------------------------------------------------------
    def store_session(self, record: dict[str, Any]) -> bool:
        """True when the record was new; False when this session id was already stored."""
        with self._lock:
            cur = self._run(
                "INSERT INTO sessions (session_id, kiosk_id, started_at, ended_at, end_reason, record, "
                "received_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id) DO NOTHING",
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
            rows = self._run(query + " ORDER BY seq", args).fetchall()
        return [json.loads(r[0]) for r in rows]


class PostgresStorage(Storage):
    """The same storage on PostgreSQL (psycopg 3), for many kiosks against one companion."""

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ImportError:
            raise RuntimeError("PostgreSQL needs psycopg: pip install 'psycopg[binary]'") from None
        self.path = dsn
        self._db = psycopg.connect(dsn, autocommit=True)
        self._lock = threading.Lock()
        with self._lock:
            for statement in SCHEMA_TEMPLATE.format(serial="BIGSERIAL PRIMARY KEY").split(";"):
                if statement.strip():
                    self._db.execute(statement)

    def _run(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> Any:
        return self._db.execute(sql.replace("?", "%s"), args)
