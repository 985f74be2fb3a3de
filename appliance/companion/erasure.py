"""Erasing lessons on a parent's or a school's request, and scrubbing the database files afterwards.

Deleting a row is not enough for children's words: a database keeps the old bytes where nobody looks.
SQLite leaves deleted content in the file's free space unless ``secure_delete`` is on (every companion
connection turns it on), and the write-ahead log keeps earlier page images until it is checkpointed and
truncated. PostgreSQL keeps a deleted or updated row's old version in the table's heap (and TOAST) pages: a
plain ``VACUUM`` marks the space free but leaves the bytes there (measured), so the sessions table is
rewritten with ``VACUUM (FULL)``, which copies the live rows to new files and drops the old ones.

An erased lesson leaves a tombstone (its id and kiosk, no words): a kiosk that sends it again is answered
"stored" without it being stored again (see ``Storage.store_sessions``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from appliance.companion.access_log import record_access
from appliance.companion.db import Database

log = logging.getLogger(__name__)

#: The table that holds the children's words (each lesson record, transcript included).
TRANSCRIPT_TABLE = "sessions"


@dataclass(frozen=True)
class Scrub:
    """What was done so that removed words are not left in the database files."""

    complete: bool
    """False when a step could not finish now (e.g. another process kept the SQLite WAL in use)."""
    steps: str
    """What was done, in words an administrator can check against docs/COMPANION.md."""


@dataclass(frozen=True)
class Erasure:
    """The outcome of one erase, and the companion's proof of it."""

    what: str
    """``lesson <id>`` or ``every lesson of kiosk <name>``."""
    erased: int
    """Lessons deleted now."""
    left: int
    """Lessons still stored that the request named (0 unless something went wrong)."""
    scrub: Scrub

    def line(self) -> str:
        noun = "lesson" if self.erased == 1 else "lessons"
        status = "done" if self.left == 0 and self.scrub.complete else "NOT complete"
        return f"erased {self.erased} {noun} ({self.what}); {self.left} left; {self.scrub.steps}; {status}"


class NothingToErase(LookupError):
    """No such lesson is stored (never stored, or erased already)."""


async def scrub(db: Database) -> Scrub:
    """Make deleted and replaced lesson text unreachable in the database files (after erase and retention).

    SQLite: the deleted cells were zeroed as they were deleted (``secure_delete``); the WAL still holds the
    page images from before, so it is checkpointed into the file and truncated to nothing. PostgreSQL: the
    sessions table (with its TOAST table and indexes) is rewritten; this takes the table's exclusive lock
    for as long as the copy lasts, during which lesson uploads and console pages wait (tokens do not)."""
    if db.engine == "postgresql":
        await db.execute(f"VACUUM (FULL) {TRANSCRIPT_TABLE}")
        return Scrub(True, f"table {TRANSCRIPT_TABLE} rewritten (VACUUM FULL): its old heap and TOAST files are gone")
    row = await db.fetchone("PRAGMA wal_checkpoint(TRUNCATE)")
    busy = bool(row and row[0])
    if busy:
        return Scrub(False, "deleted content zeroed in the file (secure_delete), but the write-ahead log could not "
                            "be truncated because another process is using the database; run the erase again "
                            "when it is idle")
    return Scrub(True, "deleted content zeroed in the file (secure_delete); write-ahead log checkpointed and "
                       "truncated")


async def erase_lesson(db: Database, session_id: str, actor: str, now: float) -> Erasure:
    """Erase one lesson; :class:`NothingToErase` when it was never stored. A lesson erased before is scrubbed
    again (0 erased): that is how an erase whose scrub could not complete is finished."""
    row = await db.fetchone(f"SELECT kiosk_id FROM {TRANSCRIPT_TABLE} WHERE session_id = ? UNION ALL "
                            "SELECT kiosk_id FROM erased_sessions WHERE session_id = ?", (session_id, session_id))
    if row is None:
        raise NothingToErase(f"no lesson {session_id} is stored")
    return await _erase(db, row[0], session_id, actor, now)


async def erase_kiosk(db: Database, kiosk_id: str, actor: str, now: float) -> Erasure:
    """Erase every lesson a kiosk delivered (the kiosk itself, its key and its daily totals stay)."""
    return await _erase(db, kiosk_id, None, actor, now)


async def _erase(db: Database, kiosk_id: str, session_id: str | None, actor: str, now: float) -> Erasure:
    where, args = ("kiosk_id = ? AND session_id = ?", (kiosk_id, session_id)) if session_id else \
        ("kiosk_id = ?", (kiosk_id,))
    what = f"lesson {session_id}" if session_id else f"every lesson of kiosk {kiosk_id}"
    async with db.transaction() as q:
        if q.engine == "postgresql":
            # The lock a kiosk's uploads take: a batch storing this lesson again either finished before (and
            # is erased here) or starts after, and then finds the tombstone.
            await q.fetchone("SELECT pg_advisory_xact_lock(hashtext(CAST(? AS TEXT)))", (f"sessions:{kiosk_id}",))
        await q.execute(f"INSERT INTO erased_sessions (session_id, kiosk_id, erased_at) "
                        f"SELECT session_id, kiosk_id, ? FROM {TRANSCRIPT_TABLE} WHERE {where} "
                        "ON CONFLICT (session_id) DO NOTHING", (now, *args))
        erased = await q.execute(f"DELETE FROM {TRANSCRIPT_TABLE} WHERE {where}", args)
        await record_access(q, actor, "erase-lesson" if session_id else "erase-kiosk-lessons", what, erased)
    done = await scrub(db)
    row = await db.fetchone(f"SELECT COUNT(*) FROM {TRANSCRIPT_TABLE} WHERE {where}", args)
    result = Erasure(what, erased, int(row[0]) if row else 0, done)
    log.info("erasure: %s", result.line())
    return result
