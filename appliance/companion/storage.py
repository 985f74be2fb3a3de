"""The companion's data: device keys (hashed), lesson plans and session records.

Every method is async and goes through ``appliance.companion.db`` (SQLite on its own thread, or
PostgreSQL's async pool), so a slow query never stalls the other kiosks' requests. Nothing is kept in
process memory: two companions on one database behave as one. Session ids are unique: storing the same
session twice stores it once (idempotency).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.companion import erasure
from appliance.companion.db import Database, Queries, open_database
from appliance.companion.erasure import Erasure
from appliance.companion.heartbeat import Heartbeat
from appliance.companion.migrations import migrate
from appliance.companion.retention import reduce_record
from appliance.companion.upstream import LessonPlan
from appliance.contract.dates import InvalidCorrection, apply_date_correction
from appliance.contract.record import SessionRecord, UncheckedRecord

log = logging.getLogger(__name__)

ERASURE_POLICY = ("an administrator can erase one lesson, or every lesson of a kiosk, at any time (a parent's or "
                  "school's request): its record and words are deleted and scrubbed from the database files at once; "
                  "only its id is kept, so that a kiosk sending it again does not store it again; each kiosk's "
                  "daily totals (lessons, minutes, cost) hold no words and are kept")

#: Outcomes of storing one record.
STORED, DUPLICATE, CONFLICT = "stored", "duplicate", "conflict"
#: Outcomes of a date correction (besides CONFLICT: another kiosk's lesson).
CORRECTED, UNKNOWN = "corrected", "unknown"


@dataclass(frozen=True)
class Caller:
    """The kiosk behind a request's device key."""

    kiosk_id: str
    daily_minutes: float | None
    """Its own daily budget in minutes, or None for the configured default."""
    minutes_today: float
    """Lesson minutes received from it today (the companion's UTC day)."""


@dataclass(frozen=True)
class Authentication:
    caller: Caller | None
    """None when the key is unknown or revoked."""
    failures: int
    """Failed attempts counted in the address's bucket within the window, and the oldest of them."""
    oldest_failure: float | None


def utc_day(at: float) -> str:
    """The companion's own UTC date: budgets and retention never follow a kiosk's clock."""
    return time.strftime("%Y-%m-%d", time.gmtime(at))


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
    def __init__(self, db: Database, spec: str = "", clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.path = spec
        self.clock = clock
        """Wall time (tests move it to cross days and windows)."""
        self.transcript_days = 0
        """Transcripts older than this many days are reduced to metrics; 0 keeps them (set by the server)."""
        self._scrub_pending = False
        """The last retention round could not scrub the files completely (a SQLite reader held the WAL)."""

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

    async def set_daily_minutes(self, kiosk_id: str, minutes: float | None) -> bool:
        """This kiosk's own daily lesson budget; None returns it to the companion's default (0 = no budget).
        False when there is no such kiosk."""
        if minutes is not None and not (0 <= minutes < 24 * 60 + 1):
            raise ValueError(f"daily minutes must be between 0 and 1440, got {minutes!r}")
        return await self.db.execute("UPDATE kiosks SET daily_minutes = ? WHERE kiosk_id = ?",
                                     (minutes, kiosk_id)) > 0

    async def authenticate(self, key: str, failures_bucket: str, window_s: float) -> Authentication:
        """Who this key belongs to (with the kiosk's budget and today's minutes), and the failed attempts
        in ``failures_bucket`` within the window: what any request needs to know, in one round trip (at a
        class change every round trip is companion CPU that the next kiosk waits behind)."""
        since = self.clock() - window_s
        row = await self.db.fetchone(
            "SELECT k.kiosk_id, k.daily_minutes, d.seconds, "
            "(SELECT COUNT(*) FROM rate_events WHERE bucket = ? AND at > ?), "
            "(SELECT MIN(at) FROM rate_events WHERE bucket = ? AND at > ?) "
            "FROM (SELECT 1 AS one) AS o "
            "LEFT JOIN kiosks k ON k.key_hash = ? AND k.revoked_at IS NULL "
            "LEFT JOIN kiosk_days d ON d.kiosk_id = k.kiosk_id AND d.day = ?",
            (failures_bucket, since, failures_bucket, since, hash_key(key), utc_day(self.clock())))
        assert row is not None
        kiosk_id, own_budget, seconds, failures, oldest = row
        caller = None if kiosk_id is None else Caller(kiosk_id, own_budget, float(seconds or 0.0) / 60)
        return Authentication(caller, int(failures), oldest)

    async def kiosk_for_key(self, key: str) -> str | None:
        row = await self.db.fetchone("SELECT kiosk_id FROM kiosks WHERE key_hash = ? AND revoked_at IS NULL",
                                     (hash_key(key),))
        return row[0] if row else None

    # -- plans ------------------------------------------------------------------------------
    async def save_plan(self, plan: LessonPlan, kiosk_id: str, source: str) -> None:
        await self.db.execute("INSERT INTO plans (plan_id, kiosk_id, plan, source, created_at) VALUES (?, ?, ?, ?, ?)",
                              (plan["plan_id"], kiosk_id, json.dumps(plan), source, time.time()))

    async def get_plan(self, plan_id: str, kiosk_id: str) -> dict[str, Any] | None:
        row = await self.db.fetchone("SELECT plan FROM plans WHERE plan_id = ? AND kiosk_id = ?", (plan_id, kiosk_id))
        return json.loads(row[0]) if row else None

    # -- sessions ---------------------------------------------------------------------------
    async def store_session(self, record: SessionRecord) -> bool:
        """True when the record was new; False when this session id was already stored."""
        return (await self.store_sessions([record]))[0] == STORED

    async def store_sessions(self, records: list[SessionRecord]) -> list[str]:
        """Store validated records in one transaction; one outcome each: STORED, DUPLICATE (this kiosk
        sent it before) or CONFLICT (another kiosk owns that session id: nothing is overwritten).

        The day's counters (kiosk_days) change in the same transaction, so a budget never sees a lesson
        without its minutes. Records keep their order (``seq`` is the order received). On PostgreSQL a
        kiosk's batches take that kiosk's advisory lock first: a batch re-sent to a second companion while
        the first still stores it then waits instead of deadlocking on the same rows."""
        now = self.clock()
        day = utc_day(now)
        first: dict[str, int] = {}  # a session id sent twice in one batch is stored once
        rows: list[tuple[Any, ...]] = []
        for index, record in enumerate(records):
            if record["session_id"] in first:
                continue
            first[record["session_id"]] = index
            metrics = record.get("metrics") or {}
            level = _level(record)
            rows.append((record["session_id"], record["kiosk_id"], record["started_at"], record["ended_at"],
                         record["end_reason"], json.dumps(record, ensure_ascii=False), now, day,
                         float(metrics.get("duration_s") or 0.0), float(metrics.get("est_cost_usd") or 0.0), level,
                         record.get("voice")))
        if not rows:
            return []
        async with self.db.transaction() as q:
            rows = await self._with_plan_levels(q, records, rows)
            if q.engine == "postgresql":
                for kiosk_id in sorted({r["kiosk_id"] for r in records}):
                    await q.fetchone("SELECT pg_advisory_xact_lock(hashtext(CAST(? AS TEXT)))",
                                     (f"sessions:{kiosk_id}",))
            # An erased lesson sent again (by a kiosk restored from an older image, say) is acknowledged as a
            # duplicate of its own kiosk's lesson, and not stored again.
            owners: dict[str, str] = await self._erased(q, [row[0] for row in rows])
            rows = [row for row in rows if row[0] not in owners]
            inserted: set[str] = set()
            if rows:  # one statement for the whole batch (one round trip, not one per lesson)
                placeholders = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows))
                inserted = {r[0] for r in await q.fetchall(
                    "INSERT INTO sessions (session_id, kiosk_id, started_at, ended_at, end_reason, record, "
                    f"received_at, received_day, duration_s, cost_usd, level, voice) VALUES {placeholders} "
                    "ON CONFLICT (session_id) DO NOTHING RETURNING session_id", [v for row in rows for v in row])}
            others = [row[0] for row in rows if row[0] not in inserted]
            if others:
                marks = ", ".join("?" * len(others))
                owners.update(await q.fetchall(
                    f"SELECT session_id, kiosk_id FROM sessions WHERE session_id IN ({marks})", others))
            totals: dict[str, list[float]] = {}
            for row in rows:
                if row[0] in inserted:
                    kiosk_totals = totals.setdefault(row[1], [0, 0.0, 0.0])
                    kiosk_totals[0] += 1
                    kiosk_totals[1] += row[8]
                    kiosk_totals[2] += row[9]
            for kiosk_id, (lessons, seconds, cost) in sorted(totals.items()):
                await q.execute(
                    "INSERT INTO kiosk_days (kiosk_id, day, lessons, seconds, cost_usd) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (kiosk_id, day) DO UPDATE SET lessons = kiosk_days.lessons + excluded.lessons, "
                    "seconds = kiosk_days.seconds + excluded.seconds, "
                    "cost_usd = kiosk_days.cost_usd + excluded.cost_usd",
                    (kiosk_id, day, int(lessons), seconds, cost))
        outcomes = []
        for index, record in enumerate(records):
            session_id = record["session_id"]
            if session_id in inserted and first[session_id] == index:
                outcomes.append(STORED)
            elif owners.get(session_id, record["kiosk_id"]) == record["kiosk_id"]:
                outcomes.append(DUPLICATE)
            else:
                outcomes.append(CONFLICT)
        return outcomes

    @staticmethod
    async def _erased(q: Queries, session_ids: list[str]) -> dict[str, str]:
        """The kiosk of each of these lessons that an administrator erased."""
        marks = ", ".join("?" * len(session_ids))
        return dict(await q.fetchall(f"SELECT session_id, kiosk_id FROM erased_sessions WHERE session_id IN ({marks})",
                                     session_ids))

    async def correct_dates(self, records: list[dict[str, Any]]) -> list[tuple[str, str]]:
        """Apply validated date corrections of lessons already stored (see ``appliance.contract.dates``), in
        one transaction; one ``(outcome, message)`` each: CORRECTED (also when it was applied before),
        UNKNOWN (no such lesson), CONFLICT (another kiosk's lesson) or ``invalid`` with the reason.

        Only the record's dates and the ``started_at``/``ended_at`` columns change: the day's counters,
        ``received_at`` and everything else the lesson says stay as they are."""
        outcomes: list[tuple[str, str]] = []
        async with self.db.transaction() as q:
            lock = " FOR UPDATE" if q.engine == "postgresql" else ""
            for correction in records:
                row = await q.fetchone(f"SELECT kiosk_id, record FROM sessions WHERE session_id = ?{lock}",
                                       (correction["session_id"],))
                if row is None:
                    outcomes.append((UNKNOWN, "no lesson with this session_id is stored here"))
                    continue
                if row[0] != correction["kiosk_id"]:
                    outcomes.append((CONFLICT, "another kiosk stored a lesson with this session_id"))
                    continue
                stored = json.loads(row[1])
                try:
                    updated = apply_date_correction(stored, correction)
                except InvalidCorrection as exc:
                    outcomes.append(("invalid", str(exc)))
                    continue
                if updated is not stored:
                    await q.execute("UPDATE sessions SET record = ?, started_at = ?, ended_at = ? WHERE session_id = ?",
                                    (json.dumps(updated, ensure_ascii=False), updated["started_at"],
                                     updated["ended_at"], correction["session_id"]))
                outcomes.append((CORRECTED, ""))
        return outcomes

    @staticmethod
    async def _with_plan_levels(q: Queries, records: list[SessionRecord],
                                rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Fill each lesson's CEFR level from the plan this companion gave for it: kiosks do not send the
        level, and teachers filter lessons by it."""
        wanted = {(r["plan_id"], r["kiosk_id"]) for r in records
                  if isinstance(r.get("plan_id"), str) and _level(r) is None}
        if not wanted:
            return rows
        marks = ", ".join("?" * len(wanted))
        levels: dict[tuple[str | None, str], str] = {}
        for plan_id, kiosk_id, text in await q.fetchall(
                f"SELECT plan_id, kiosk_id, plan FROM plans WHERE plan_id IN ({marks})", [p for p, _ in wanted]):
            try:
                level = json.loads(text).get("level")
            except (ValueError, AttributeError):
                continue
            if isinstance(level, str):
                levels[(plan_id, kiosk_id)] = level
        by_session = {r["session_id"]: levels.get((r.get("plan_id"), r["kiosk_id"])) for r in records}
        return [row if row[10] is not None else (*row[:10], by_session.get(row[0]), *row[11:]) for row in rows]

    async def sessions(self, kiosk_id: str | None, since: str | None = None) -> list[UncheckedRecord]:
        """Records in the order they were received; ``kiosk_id=None`` means all kiosks (admin export). As
        stored: those past retention are reduced to their metrics."""
        query = "SELECT record FROM sessions WHERE 1=1"
        args: list[Any] = []
        if kiosk_id is not None:
            query += " AND kiosk_id = ?"
            args.append(kiosk_id)
        if since:
            query += " AND started_at >= ?"
            args.append(since)
        rows = await self.db.fetchall(query + " ORDER BY seq", args)
        return [stored_json(r[0]) for r in rows]

    # -- retention --------------------------------------------------------------------------
    async def reduce_old_transcripts(self, batch: int = 500) -> int:
        """Reduce lessons received more than ``transcript_days`` ago to their metrics (no turns, no
        free text), marking them ``reduced_at``; returns how many. Safe to run from several companions
        at once: a row is only ever reduced once."""
        if self.transcript_days <= 0:
            return 0
        now = self.clock()
        cutoff = now - self.transcript_days * 86400
        reduced = 0
        while True:
            async with self.db.transaction() as q:
                rows = await q.fetchall("SELECT seq, record FROM sessions WHERE received_at < ? AND reduced_at IS NULL "
                                        "ORDER BY seq LIMIT ?", (cutoff, batch))
                for seq, text in rows:
                    reduced_text = json.dumps(reduce_record(json.loads(text)), ensure_ascii=False)
                    await q.execute("UPDATE sessions SET record = ?, reduced_at = ? "
                                    "WHERE seq = ? AND reduced_at IS NULL",
                                    (reduced_text, now, seq))
            reduced += len(rows)
            if len(rows) < batch:
                break
        if reduced or self._scrub_pending:
            # The transcripts' old bytes are still in the files (WAL, PostgreSQL's dead row versions).
            done = await erasure.scrub(self.db)
            self._scrub_pending = not done.complete
            if not done.complete:
                log.warning("retention: %s; tried again at the next round", done.steps)
        return reduced

    # -- erasure ----------------------------------------------------------------------------
    async def erase_lesson(self, session_id: str, actor: str) -> Erasure:
        """Erase one lesson now (rows and text), or scrub again after one erased before; :class:`NothingToErase`
        when it was never stored."""
        return await erasure.erase_lesson(self.db, session_id, actor, self.clock())

    async def erase_kiosk(self, kiosk_id: str, actor: str) -> Erasure:
        """Erase every lesson of a kiosk now (rows and text)."""
        return await erasure.erase_kiosk(self.db, kiosk_id, actor, self.clock())

    async def retention_policy(self) -> dict[str, Any]:
        """What is kept and for how long, for admins (health, console)."""
        row = await self.db.fetchone("SELECT COUNT(*) FROM sessions WHERE reduced_at IS NOT NULL")
        days = self.transcript_days
        return {"transcript_days": days, "reduced_lessons": int(row[0]) if row else 0,
                "policy": (f"transcripts are kept {days} days after the companion received them, then reduced to "
                           "their metrics (times, duration, counts, cost); the metrics are kept")
                if days > 0 else "transcripts are kept until deleted by an administrator",
                "erasure": ERASURE_POLICY}

    # -- heartbeats and the fleet -----------------------------------------------------------
    async def save_heartbeat(self, kiosk_id: str, report: Heartbeat) -> None:
        """The kiosk's latest heartbeat (validated by the caller), stamped with the companion's clock. The
        updater's own report changes only the version and the update fields (it knows nothing else)."""
        if report.get("updater"):
            await self.db.execute(
                "INSERT INTO kiosk_status (kiosk_id, seen_at, version, update_state, update_error) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (kiosk_id) DO UPDATE SET seen_at = excluded.seen_at, "
                "version = COALESCE(excluded.version, kiosk_status.version), "
                "update_state = excluded.update_state, update_error = excluded.update_error",
                (kiosk_id, self.clock(), report.get("version"), report.get("update_state"), report.get("update_error")))
            return
        await self.db.execute(
            "INSERT INTO kiosk_status (kiosk_id, seen_at, version, state, unsynced, disk_free_mb, last_error, report, "
            "update_state, update_error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (kiosk_id) DO UPDATE SET "
            "seen_at = excluded.seen_at, version = excluded.version, state = excluded.state, "
            "unsynced = excluded.unsynced, disk_free_mb = excluded.disk_free_mb, last_error = excluded.last_error, "
            "report = excluded.report, update_state = excluded.update_state, update_error = excluded.update_error",
            (kiosk_id, self.clock(), report.get("version"), report.get("state"), report.get("unsynced"),
             report.get("disk_free_mb"), report.get("last_error"), json.dumps(report, ensure_ascii=False),
             report.get("update_state"), report.get("update_error")))

    async def fleet(self) -> list[dict[str, Any]]:
        """Every kiosk, revoked ones too, with its latest heartbeat and today's lessons (companion's UTC day)."""
        rows = await self.db.fetchall(
            "SELECT k.kiosk_id, k.created_at, k.revoked_at, k.daily_minutes, s.seen_at, s.version, s.state, "
            "s.unsynced, s.disk_free_mb, s.last_error, d.lessons, d.seconds FROM kiosks k "
            "LEFT JOIN kiosk_status s ON s.kiosk_id = k.kiosk_id "
            "LEFT JOIN kiosk_days d ON d.kiosk_id = k.kiosk_id AND d.day = ? ORDER BY k.kiosk_id",
            (utc_day(self.clock()),))
        keys = ("kiosk_id", "created_at", "revoked_at", "daily_minutes", "seen_at", "version", "state", "unsynced",
                "disk_free_mb", "last_error")
        return [{**dict(zip(keys, row[:10], strict=True)), "lessons_today": int(row[10] or 0),
                 "minutes_today": float(row[11] or 0.0) / 60} for row in rows]

    async def day_totals(self, since_day: str) -> list[dict[str, Any]]:
        """Per kiosk and day (companion's UTC days, ``YYYY-MM-DD``) from ``since_day`` on."""
        rows = await self.db.fetchall("SELECT kiosk_id, day, lessons, seconds, cost_usd FROM kiosk_days WHERE day >= ? "
                                      "ORDER BY day, kiosk_id", (since_day,))
        return [{"kiosk_id": k, "day": d, "lessons": int(n), "minutes": float(s) / 60, "cost_usd": float(c)}
                for k, d, n, s, c in rows]


def stored_json(text: str) -> Any:
    """A stored record as standard JSON values: NaN or Infinity that an older companion let in become null."""
    return json.loads(text, parse_constant=lambda _name: None)


def _level(record: SessionRecord) -> str | None:
    """The CEFR level a record carries beside the schema (from a companion that already filled it in)."""
    extra: Mapping[str, object] = record  # a key the schema does not name: any JSON value
    level = extra.get("level")
    return level if isinstance(level, str) else None
