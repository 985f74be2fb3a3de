"""Erased lessons: one row per lesson an administrator erased, holding only its id, its kiosk and when.

Why keep anything: a kiosk restored from an older image, or one that crashed before it recorded a delivery,
sends the lesson again. The companion must then acknowledge it (or the kiosk retries forever) without storing
the child's words a second time. The id alone says nothing about the child.
"""

from __future__ import annotations

from appliance.companion.db import Queries

VERSION = 7
NAME = "erasure"


async def apply(q: Queries) -> None:
    await q.execute("CREATE TABLE erased_sessions (session_id TEXT PRIMARY KEY, kiosk_id TEXT NOT NULL, "
                    "erased_at DOUBLE PRECISION NOT NULL)")
