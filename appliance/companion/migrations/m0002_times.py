"""Times as double precision on PostgreSQL.

The first schema said REAL, which PostgreSQL stores as a 4-byte float: a Unix time then keeps only
about two minutes of resolution, too coarse for hourly limits and retention. SQLite's REAL is already
8 bytes, so there is nothing to do there.
"""

from __future__ import annotations

from appliance.companion.db import Queries

VERSION = 2
NAME = "double-precision times"


async def apply(q: Queries) -> None:
    if q.engine != "postgresql":
        return
    for table, column in (("kiosks", "created_at"), ("kiosks", "revoked_at"), ("plans", "created_at"),
                          ("sessions", "received_at")):
        await q.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE DOUBLE PRECISION")
