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
from appliance.companion.migrations import latest_version, migrate, steps
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
        assert versions == [step.VERSION for step in steps()] and versions[-1] == latest_version()
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


# -- the storage's own promises, on both engines -------------------------------------------------------

DAY = 86400.0
NOON = 1_790_000_000.0 - 1_790_000_000.0 % DAY + DAY / 2
"""Noon (UTC) of a fixed day: a lesson stored now and one stored 13 h later fall on two companion days."""


def lesson(session_id: str, kiosk: str = "kiosk-a", duration_s: float = 60.0, cost: float = 0.01,
           started: str = "2026-09-01T09:00:00.000Z", **extra: object) -> dict:
    return {**OLD_RECORD, "session_id": session_id, "kiosk_id": kiosk, "started_at": started, "errors": [],
            "metrics": {"duration_s": duration_s, "est_cost_usd": cost}, **extra}


async def clocked(spec: str) -> tuple:
    storage = await open_storage(spec)
    now = [NOON]
    storage.clock = lambda: now[0]
    return storage, now


async def test_keys_are_hashed_rekeyed_and_revoked(spec: str) -> None:
    storage, _ = await clocked(spec)
    try:
        await storage.add_kiosk("kiosk-a", "key-a-0123456789abcdef")
        rows = await storage.db.fetchall("SELECT key_hash FROM kiosks")
        assert rows == [(hash_key("key-a-0123456789abcdef"),)]  # the key itself is never stored
        assert hash_key("key-a-0123456789abcdef") != hash_key("key-a-0123456789abcdeF")
        assert hash_key("\ud800") != hash_key("\ufffd")  # any text a header may carry can be hashed
        assert await storage.kiosk_for_key("key-a-0123456789abcdef") == "kiosk-a"
        await storage.add_kiosk("kiosk-a", "key-a-new-0123456789ab")
        assert await storage.kiosk_for_key("key-a-0123456789abcdef") is None
        assert await storage.kiosk_for_key("key-a-new-0123456789ab") == "kiosk-a"
        assert await storage.revoke_kiosk("kiosk-a") and not await storage.revoke_kiosk("kiosk-a")
        assert not await storage.revoke_kiosk("kiosk-nobody")
        assert await storage.kiosk_for_key("key-a-new-0123456789ab") is None
        await storage.add_kiosk("kiosk-a", "key-a-new-0123456789ab")  # re-keying lifts the revocation
        assert await storage.kiosk_for_key("key-a-new-0123456789ab") == "kiosk-a"
    finally:
        await storage.close()


async def test_a_kiosks_budget_and_todays_minutes_come_with_its_key(spec: str) -> None:
    """Authentication answers who the key is, its own budget (None: the default), today's minutes from the
    companion's day, and the failed attempts of the address within the window with the oldest of them."""
    storage, now = await clocked(spec)
    try:
        await storage.add_kiosk("kiosk-a", "key-a-0123456789abcdef")
        with pytest.raises(ValueError, match="between 0 and 1440"):
            await storage.set_daily_minutes("kiosk-a", -1)
        with pytest.raises(ValueError, match="between 0 and 1440"):
            await storage.set_daily_minutes("kiosk-a", 1441)
        assert not await storage.set_daily_minutes("kiosk-nobody", 10)
        assert await storage.set_daily_minutes("kiosk-a", 1440) and await storage.set_daily_minutes("kiosk-a", 0)
        assert await storage.set_daily_minutes("kiosk-a", 45.5)
        await storage.store_sessions([lesson("s1", duration_s=90), lesson("s2", duration_s=30)])
        for at in (NOON - 100, NOON - 30, NOON - 10):
            await storage.db.execute("INSERT INTO rate_events (bucket, at) VALUES (?, ?)", ("addr:1", at))
        await storage.db.execute("INSERT INTO rate_events (bucket, at) VALUES (?, ?)", ("addr:2", NOON - 5))
        auth = await storage.authenticate("key-a-0123456789abcdef", "addr:1", 60)
        assert auth.caller is not None and auth.caller.kiosk_id == "kiosk-a"
        assert auth.caller.daily_minutes == 45.5 and auth.caller.minutes_today == pytest.approx(2.0)
        assert (auth.failures, auth.oldest_failure) == (2, NOON - 30)
        nobody = await storage.authenticate("wrong-key-0123456789ab", "addr:2", 60)
        assert nobody.caller is None and nobody.failures == 1
        assert await storage.set_daily_minutes("kiosk-a", None)
        now[0] = NOON + DAY  # the next day: no minutes yet, no failures in the window
        later = await storage.authenticate("key-a-0123456789abcdef", "addr:1", 60)
        assert later.caller is not None and later.caller.daily_minutes is None and later.caller.minutes_today == 0
        assert (later.failures, later.oldest_failure) == (0, None)
    finally:
        await storage.close()


async def test_a_plan_is_read_back_only_by_its_own_kiosk(spec: str) -> None:
    storage, _ = await clocked(spec)
    try:
        plan = {"plan_id": "p1", "level": "A2", "targets": ["left"]}
        await storage.save_plan(plan, "kiosk-a", "curriculum")  # type: ignore[arg-type]
        assert await storage.get_plan("p1", "kiosk-a") == plan
        assert await storage.get_plan("p1", "kiosk-b") is None and await storage.get_plan("p2", "kiosk-a") is None
    finally:
        await storage.close()


async def test_lessons_are_stored_once_counted_once_and_never_overwritten(spec: str) -> None:
    """One batch: new lessons stored, one sent twice in the batch stored once, one sent before a
    duplicate, one owned by another kiosk a conflict (the other kiosk's copy stays). The day's counters
    count only what was stored, per kiosk and companion day."""
    storage, now = await clocked(spec)
    try:
        assert await storage.store_sessions([]) == []
        assert await storage.store_session(lesson("x1", kiosk="kiosk-b", duration_s=600, cost=0.5))
        assert not await storage.store_session(lesson("x1", kiosk="kiosk-b"))
        batch = [lesson("s1", duration_s=120, cost=0.1), lesson("s2", duration_s=60, cost=0.05),
                 lesson("s1", duration_s=999, cost=9.0), lesson("x1", duration_s=999, cost=9.0),
                 lesson("b2", kiosk="kiosk-b", duration_s=30, cost=0.02)]
        assert await storage.store_sessions(batch) == ["stored", "stored", "duplicate", "conflict", "stored"]
        assert await storage.store_sessions([lesson("s2")]) == ["duplicate"]
        assert await storage.store_sessions([lesson("s2"), lesson("x1")]) == ["duplicate", "conflict"]
        assert await storage.store_sessions([lesson("n1"), lesson("n1")]) == ["stored", "duplicate"]
        assert [r["session_id"] for r in await storage.sessions(None)] == ["x1", "s1", "s2", "b2", "n1"]
        assert [r["kiosk_id"] for r in await storage.sessions(None)] == ["kiosk-b", "kiosk-a", "kiosk-a", "kiosk-b",
                                                                          "kiosk-a"]
        assert (await storage.sessions("kiosk-a"))[0]["metrics"]["duration_s"] == 120
        now[0] = NOON + DAY
        await storage.store_sessions([lesson("s3", duration_s=300, cost=0.2), {**lesson("s4"), "metrics": {}}])
        day1 = time.strftime("%Y-%m-%d", time.gmtime(NOON))
        day2 = time.strftime("%Y-%m-%d", time.gmtime(NOON + DAY))
        assert await storage.day_totals(day1) == [
            {"kiosk_id": "kiosk-a", "day": day1, "lessons": 3, "minutes": 4.0, "cost_usd": pytest.approx(0.16)},
            {"kiosk_id": "kiosk-b", "day": day1, "lessons": 2, "minutes": 10.5, "cost_usd": pytest.approx(0.52)},
            {"kiosk_id": "kiosk-a", "day": day2, "lessons": 2, "minutes": 5.0, "cost_usd": pytest.approx(0.2)}]
        assert [t["day"] for t in await storage.day_totals(day2)] == [day2]
    finally:
        await storage.close()


async def test_a_lesson_takes_its_level_from_its_own_kiosks_plan(spec: str) -> None:
    storage, _ = await clocked(spec)
    try:
        await storage.db.execute("INSERT INTO plans (plan_id, kiosk_id, plan, source, created_at) "
                                 "VALUES (?, ?, ?, ?, ?)", ("p3", "kiosk-a", "[1, 2]", "upstream", 0.0))
        await storage.save_plan({"plan_id": "p1", "level": "B1"}, "kiosk-a", "upstream")  # type: ignore[arg-type]
        await storage.save_plan({"plan_id": "p2", "level": 3}, "kiosk-a", "upstream")  # type: ignore[arg-type]
        assert await storage.store_sessions([lesson("solo", plan_id="p1")]) == ["stored"]
        await storage.store_sessions([lesson("l1", plan_id="p1"), lesson("l2", plan_id="p1", level="C2"),
                                      lesson("l3", kiosk="kiosk-b", plan_id="p1"), lesson("l4", plan_id="p2"),
                                      lesson("l5", plan_id="p3"), lesson("l6", plan_id=None),
                                      lesson("l7", plan_id="p1", level=5)])
        levels = dict(await storage.db.fetchall("SELECT session_id, level FROM sessions ORDER BY seq"))
        assert levels == {"solo": "B1", "l1": "B1", "l2": "C2", "l3": None, "l4": None, "l5": None, "l6": None,
                          "l7": "B1"}
        assert storage.path == spec
    finally:
        await storage.close()


async def test_date_corrections_change_only_the_dates_of_the_kiosks_own_lessons(spec: str) -> None:
    from appliance.contract.dates import shift_dates

    storage, _ = await clocked(spec)
    try:
        stale = lesson("d1", metrics={"duration_s": 60.0, "clock_synced": False})
        await storage.store_sessions([stale, lesson("d2", kiosk="kiosk-b")])
        fixed = {**shift_dates(stale, 3600.0), "kiosk_id": "kiosk-a"}
        other = {**shift_dates(lesson("d2"), 3600.0), "kiosk_id": "kiosk-a"}
        unknown = {**shift_dates(lesson("d9"), 3600.0), "kiosk_id": "kiosk-a"}
        changed = {**fixed, "end_reason": "idle"}
        outcomes = await storage.correct_dates([unknown, other, changed, fixed, fixed])
        assert outcomes[:2] == [("unknown", "no lesson with this session_id is stored here"),
                                ("conflict", "another kiosk stored a lesson with this session_id")]
        assert [o for o, _ in outcomes[2:]] == ["invalid", "corrected", "corrected"]
        assert "only the dates" in outcomes[2][1] and outcomes[3][1] == ""
        [row] = await storage.db.fetchall("SELECT started_at, ended_at, record FROM sessions WHERE session_id = ?",
                                          ("d1",))
        assert (row[0], row[1]) == (fixed["started_at"], fixed["ended_at"]) != (stale["started_at"], stale["ended_at"])
        assert json.loads(row[2])["end_reason"] == "button" and json.loads(row[2])["metrics"]["clock_synced"] is True
    finally:
        await storage.close()


async def test_sessions_since_a_date_in_the_order_received(spec: str) -> None:
    storage, _ = await clocked(spec)
    try:
        await storage.store_sessions([lesson("late", started="2026-09-03T09:00:00.000Z"),
                                      lesson("early", started="2026-09-01T09:00:00.000Z"),
                                      lesson("mid", kiosk="kiosk-b", started="2026-09-02T09:00:00.000Z")])
        assert [r["session_id"] for r in await storage.sessions(None, "2026-09-02T09:00:00.000Z")] == ["late", "mid"]
        assert [r["session_id"] for r in await storage.sessions("kiosk-a", "2026-09-02")] == ["late"]
        assert [r["session_id"] for r in await storage.sessions("kiosk-a", "")] == ["late", "early"]
    finally:
        await storage.close()


async def test_old_transcripts_are_reduced_once_in_batches(spec: str) -> None:
    storage, now = await clocked(spec)
    try:
        turns = [{"role": "learner", "text": "my name is Ana", "at": "2026-09-01T09:00:01.000Z", "source": "text"}]
        await storage.store_sessions([lesson(f"o{i}", turns=turns) for i in range(5)])
        now[0] = NOON + 10
        assert await storage.reduce_old_transcripts() == 0  # 0 days: kept until an administrator deletes them
        assert (await storage.retention_policy())["policy"] == "transcripts are kept until deleted by an administrator"
        storage.transcript_days = 30
        now[0] = NOON + 30 * DAY - 1
        assert await storage.reduce_old_transcripts(batch=2) == 0
        await storage.store_sessions([lesson("new", turns=turns)])
        now[0] = NOON + 30 * DAY + 1
        assert await storage.reduce_old_transcripts(batch=2) == 5
        assert await storage.reduce_old_transcripts(batch=2) == 0
        by_id = {r["session_id"]: r for r in await storage.sessions(None)}
        assert all(by_id[f"o{i}"]["turns"] == [] and by_id[f"o{i}"]["reduced"] for i in range(5))
        assert by_id["new"]["turns"] == turns
        reduced_at = await storage.db.fetchall("SELECT reduced_at FROM sessions WHERE reduced_at IS NOT NULL")
        assert [r[0] for r in reduced_at] == [NOON + 30 * DAY + 1] * 5
        policy = await storage.retention_policy()
        assert policy["transcript_days"] == 30 and policy["reduced_lessons"] == 5
        assert policy["policy"] == ("transcripts are kept 30 days after the companion received them, then reduced "
                                    "to their metrics (times, duration, counts, cost); the metrics are kept")
        storage.transcript_days = 1
        assert (await storage.retention_policy())["policy"].startswith("transcripts are kept 1 days after")
        now[0] += 2 * DAY
        assert await storage.reduce_old_transcripts() == 1  # the "new" one, now two days old
    finally:
        await storage.close()


async def test_the_fleet_shows_every_kiosk_with_its_latest_heartbeat_and_today(spec: str) -> None:
    storage, now = await clocked(spec)
    try:
        await storage.add_kiosk("kiosk-a", "key-a-0123456789abcdef")
        await storage.add_kiosk("kiosk-b", "key-b-0123456789abcdef")
        await storage.revoke_kiosk("kiosk-b")
        await storage.set_daily_minutes("kiosk-a", 30)
        beat = {"version": "0.1.0", "state": "idle", "unsynced": 2, "disk_free_mb": 900, "last_error": None}
        await storage.save_heartbeat("kiosk-a", beat)  # type: ignore[arg-type]
        now[0] = NOON + 60
        await storage.save_heartbeat("kiosk-a", {**beat, "state": "in_lesson", "unsynced": 0,  # type: ignore[arg-type]
                                                 "last_error": "mic"})
        await storage.store_sessions([lesson("f1", duration_s=90), lesson("f2", duration_s=30)])
        a, b = await storage.fleet()
        assert {k: a[k] for k in ("kiosk_id", "daily_minutes", "seen_at", "version", "state", "unsynced",
                                   "disk_free_mb", "last_error", "lessons_today", "revoked_at")} == {
            "kiosk_id": "kiosk-a", "daily_minutes": 30, "seen_at": NOON + 60, "version": "0.1.0",
            "state": "in_lesson", "unsynced": 0, "disk_free_mb": 900, "last_error": "mic", "lessons_today": 2,
            "revoked_at": None}
        assert a["minutes_today"] == pytest.approx(2.0) and a["created_at"] > 0
        assert b["kiosk_id"] == "kiosk-b" and b["revoked_at"] is not None and b["seen_at"] is None
        assert (b["lessons_today"], b["minutes_today"]) == (0, 0.0)
        report = await storage.db.fetchone("SELECT report FROM kiosk_status WHERE kiosk_id = ?", ("kiosk-a",))
        assert json.loads(report[0])["state"] == "in_lesson"
        now[0] = NOON + DAY
        a, _ = await storage.fleet()
        assert (a["lessons_today"], a["minutes_today"]) == (0, 0.0)
    finally:
        await storage.close()
