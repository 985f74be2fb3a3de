"""The companion's database layer: migrations from the schema companions used before, file modes, and a
database newer than the code. Each runs on SQLite and on a private PostgreSQL."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import time
from pathlib import Path

import pytest

from appliance.companion.db import DatabaseError, open_database
from appliance.companion.migrations import latest_version, migrate
from appliance.companion.storage import hash_key, open_storage

#: The schema exactly as companions created it before versioned migrations (no schema_migrations table).
PREVIOUS_SCHEMA = """
CREATE TABLE IF NOT EXISTS kiosks (
    kiosk_id TEXT PRIMARY KEY, key_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS plans (
    plan_id TEXT PRIMARY KEY, kiosk_id TEXT NOT NULL, plan TEXT NOT NULL, source TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (
    seq {serial}, session_id TEXT NOT NULL UNIQUE, kiosk_id TEXT NOT NULL,
    started_at TEXT NOT NULL, ended_at TEXT NOT NULL, end_reason TEXT NOT NULL, record TEXT NOT NULL,
    received_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_by_kiosk ON sessions (kiosk_id, started_at)
"""

OLD_RECORD = {"schema": 1, "session_id": "0b8f6c1e-3d4a-4f43-9a61-2b7f0f1a9c11", "kiosk_id": "kiosk-old",
              "started_at": "2026-09-01T09:00:00.000Z", "ended_at": "2026-09-01T09:05:00.000Z",
              "end_reason": "button", "turns": [], "metrics": {"duration_s": 300.0}}


def seed_previous(spec: str) -> None:
    """A database as an older companion left it: tables, one kiosk and one lesson."""
    rows = [("INSERT INTO kiosks (kiosk_id, key_hash, created_at, revoked_at) VALUES (?, ?, ?, NULL)",
             ("kiosk-old", hash_key("old-key-0123456789"), 1.7e9)),
            ("INSERT INTO sessions (session_id, kiosk_id, started_at, ended_at, end_reason, record, received_at) "
             "VALUES (?, ?, ?, ?, ?, ?, ?)", (OLD_RECORD["session_id"], "kiosk-old", OLD_RECORD["started_at"],
                                              OLD_RECORD["ended_at"], "button", json.dumps(OLD_RECORD), 1.7e9))]
    if spec.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(spec, autocommit=True) as conn:
            for statement in PREVIOUS_SCHEMA.format(serial="BIGSERIAL PRIMARY KEY").split(";"):
                conn.execute(statement)
            for sql, args in rows:
                conn.execute(sql.replace("?", "%s"), args)
    else:
        with sqlite3.connect(spec) as conn:
            conn.executescript(PREVIOUS_SCHEMA.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT"))
            for sql, args in rows:
                conn.execute(sql, args)


@pytest.fixture(params=["sqlite", "postgres"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "companion.db")
    return request.getfixturevalue("postgres_dsn")


async def test_previous_schema_is_migrated_and_keeps_its_lessons_and_keys(spec: str) -> None:
    """Guards against a migration that only works on an empty database: an older companion's file keeps
    its kiosk key and lesson, every step is recorded once, and opening again applies nothing."""
    seed_previous(spec)
    storage = await open_storage(spec)
    try:
        assert await storage.kiosk_for_key("old-key-0123456789") == "kiosk-old"
        assert [r["session_id"] for r in await storage.sessions("kiosk-old")] == [OLD_RECORD["session_id"]]
        rows = await storage.db.fetchall("SELECT version FROM schema_migrations ORDER BY version")
        versions = [row[0] for row in rows]
        assert versions == list(range(1, latest_version() + 1))
        assert await migrate(storage.db) == []
        # The daily counters start from the lessons already stored (by the companion's received day).
        day = await storage.db.fetchone("SELECT day, lessons, seconds FROM kiosk_days WHERE kiosk_id = ?",
                                        ("kiosk-old",))
        assert day == (time.strftime("%Y-%m-%d", time.gmtime(1.7e9)), 1, 300.0)
    finally:
        await storage.close()


async def test_a_database_newer_than_the_companion_is_refused(spec: str) -> None:
    """An older companion must not write into a schema it does not know."""
    storage = await open_storage(spec)
    await storage.db.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                             (latest_version() + 1, "from the future", 0.0))
    await storage.close()
    with pytest.raises(DatabaseError, match="upgrade the companion"):
        await open_storage(spec)


async def test_sqlite_files_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    """Children's lessons must not be readable by other users: the database and its WAL/SHM are 0600
    even under umask 022 (guards against plain ``sqlite3.connect`` creating them 0644)."""
    path = tmp_path / "companion.db"
    old = os.umask(0o022)
    try:
        storage = await open_storage(path)
        await storage.add_kiosk("kiosk-a", "key-a-0123456789abcdef")
        await storage.store_session({**OLD_RECORD, "kiosk_id": "kiosk-a"})
        files = sorted(p.name for p in tmp_path.iterdir())
        assert {"companion.db", "companion.db-wal", "companion.db-shm"} <= set(files)
        for name in files:
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
        await storage.close()
    finally:
        os.umask(old)


async def test_a_transaction_is_rolled_back_on_error(spec: str) -> None:
    db = await open_database(spec)
    try:
        await migrate(db)
        with pytest.raises(RuntimeError):
            async with db.transaction() as q:
                await q.execute("INSERT INTO kiosks (kiosk_id, key_hash, created_at) VALUES (?, ?, ?)", ("k", "h", 1.0))
                raise RuntimeError("half-way")
        assert await db.fetchone("SELECT kiosk_id FROM kiosks WHERE kiosk_id = ?", ("k",)) is None
    finally:
        await db.close()


async def test_unreachable_postgres_is_a_clear_error() -> None:
    with pytest.raises(DatabaseError, match=r"cannot reach PostgreSQL at postgresql://stella@127\.0\.0\.1:9/x"):
        await open_database("postgresql://stella:secret@127.0.0.1:9/x?connect_timeout=1")
