"""Staged rollout: release channels, the groups that take a channel's release first, each kiosk's
channel, and the update state kiosks report in their heartbeats.

A channel names the version its kiosks should run (``version``; NULL: nothing published yet), the share
of its kiosks that take it (``share``, whole percent 0-100, chosen by a hash of the kiosk id so the same
kiosks always go first) and whether the rollout is paused. ``channel_groups`` lists the groups whose
kiosks take the channel's version whatever the share. Every kiosk is in ``stable`` unless an admin moves it.
"""

from __future__ import annotations

from appliance.companion.db import Queries

VERSION = 8
NAME = "rollout"


async def apply(q: Queries) -> None:
    for statement in (
        "CREATE TABLE update_channels (name TEXT PRIMARY KEY, version TEXT, share INTEGER NOT NULL DEFAULT 0, "
        "paused INTEGER NOT NULL DEFAULT 0, updated_at DOUBLE PRECISION, updated_by TEXT)",
        "CREATE TABLE channel_groups (channel TEXT NOT NULL, group_id BIGINT NOT NULL, "
        "PRIMARY KEY (channel, group_id))",
        "ALTER TABLE kiosks ADD COLUMN channel TEXT NOT NULL DEFAULT 'stable'",
        "ALTER TABLE kiosk_status ADD COLUMN update_state TEXT",
        "ALTER TABLE kiosk_status ADD COLUMN update_error TEXT",
    ):
        await q.execute(statement)
    for name in ("canary", "stable"):
        await q.execute("INSERT INTO update_channels (name, version, share, paused) VALUES (?, NULL, 0, 0)", (name,))
