"""The web console's accounts and browser sessions.

Accounts are people (teachers, admins), separate from device keys. Only an argon2 hash of each password
and only a SHA-256 of each session token are stored: a copy of the database lets nobody log in. Login
throttling needs no table of its own: it counts rows in ``rate_events`` (buckets ``login:<user>`` and
``login-ip:<address>``), so every companion on the database shares the same counts.
"""

from __future__ import annotations

from appliance.companion.db import Queries

VERSION = 4
NAME = "console"


async def apply(q: Queries) -> None:
    for statement in (
        "CREATE TABLE users (username TEXT PRIMARY KEY, password_hash TEXT NOT NULL, "
        "role TEXT NOT NULL CHECK (role IN ('teacher', 'admin')), created_at DOUBLE PRECISION NOT NULL, "
        "disabled_at DOUBLE PRECISION)",
        "CREATE TABLE web_sessions (token_hash TEXT PRIMARY KEY, username TEXT NOT NULL, csrf_token TEXT NOT NULL, "
        "created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL, "
        "last_seen DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX web_sessions_by_user ON web_sessions (username)",
    ):
        await q.execute(statement)
