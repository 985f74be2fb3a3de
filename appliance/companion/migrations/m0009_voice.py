"""The tutor's voice of each lesson as a column, so the lessons list shows it without reading transcripts.

NULL for lessons stored before (their kiosks did not send a voice); filled from the record on arrival.
"""

from __future__ import annotations

from appliance.companion.db import Queries

VERSION = 9
NAME = "voice"


async def apply(q: Queries) -> None:
    await q.execute("ALTER TABLE sessions ADD COLUMN voice TEXT")
