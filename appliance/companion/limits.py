"""Sliding-window limits kept in the database, so they hold across requests, instances and restarts.

Why in the database: a per-process list let 150 simultaneous requests all pass a limit of 60 (each
checked before any was recorded), doubled the limit with two companions and forgot it on restart. Here a
request *reserves* its slot inside one transaction before the costly upstream call: on SQLite ``BEGIN
IMMEDIATE`` lets one writer in at a time (across processes too); on PostgreSQL a transaction-scoped
advisory lock on the bucket's name serialises every companion that counts the same bucket (taken inside
the ``stella_reserve`` function, so the whole reservation is one round trip). A slot whose
upstream call failed is given back with :func:`release`.

A bucket is a name like ``token:kiosk-a`` or ``authfail:10.0.0.7``; each counted event is one row of
``rate_events``. Rows older than the window are pruned whenever the bucket is counted, and
:func:`prune` clears buckets nobody counts any more.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.companion.db import Database


@dataclass(frozen=True)
class Verdict:
    """``allowed`` with the reserved event's id, or refused with how long until a slot frees up."""

    allowed: bool
    event_id: int | None = None
    retry_after_s: float = 0.0


def retry_after(oldest: float | None, window_s: float, now: float) -> float:
    """Seconds until the oldest counted event leaves the window (at least 1, for the Retry-After header)."""
    return max(1.0, (oldest if oldest is not None else now) + window_s - now)


async def reserve(db: Database, bucket: str, limit: int, window_s: float, now: float) -> Verdict:
    """Take one of ``limit`` slots per ``window_s`` seconds in ``bucket``, atomically."""
    if db.engine == "postgresql":
        # One round trip: the same steps as below, in the stored function of migration m0005.
        row = await db.fetchone("SELECT event_id, oldest FROM stella_reserve(?, ?, ?, ?)",
                                (bucket, now, window_s, limit))
        assert row is not None
        if row[0] is not None:
            return Verdict(True, event_id=int(row[0]))
        return Verdict(False, retry_after_s=retry_after(row[1], window_s, now))
    async with db.transaction() as q:
        await q.execute("DELETE FROM rate_events WHERE bucket = ? AND at <= ?", (bucket, now - window_s))
        # Count and insert in one statement; BEGIN IMMEDIATE (one writer at a time) makes it race-free.
        rows = await q.fetchall("INSERT INTO rate_events (bucket, at) SELECT ?, ? WHERE "
                                "(SELECT COUNT(*) FROM rate_events WHERE bucket = ?) < ? RETURNING id",
                                (bucket, now, bucket, limit))
        if rows:
            return Verdict(True, event_id=int(rows[0][0]))
        row = await q.fetchone("SELECT MIN(at) FROM rate_events WHERE bucket = ?", (bucket,))
        return Verdict(False, retry_after_s=retry_after(row[0] if row else None, window_s, now))


async def release(db: Database, event_id: int | None) -> None:
    """Give a reserved slot back (its upstream call failed, so it must not count)."""
    if event_id is not None:
        await db.execute("DELETE FROM rate_events WHERE id = ?", (event_id,))


async def prune(db: Database, older_than: float) -> int:
    """Drop events older than every window (buckets of revoked kiosks or passing addresses)."""
    return await db.execute("DELETE FROM rate_events WHERE at < ?", (older_than,))
