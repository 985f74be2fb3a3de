"""Staged rollout: which signed release each kiosk is told to install (``GET /api/updates/assignment``).

A release reaches a district in stages, so that a bad one stops at a few classrooms: an admin publishes a
version to a channel (``canary``, ``stable``), names the groups that take it first and the share of the
channel's other kiosks that take it, raises the share as confidence grows, pauses, or rolls back by
publishing an earlier version.

Why a hash of the kiosk id decides the share: the same kiosks must go first every time (a school knows it
is the pilot), and raising the share from 10 % to 50 % must keep the first 10 % in, or kiosks would be told
to take a release and then told to stop. A kiosk's slot is fixed by its id, and the share is a threshold on
slots, so a larger share is always a superset. The decision itself (:meth:`Channel.assigned`) is a pure
function; the database holds only each channel's settings and each kiosk's channel.

Every change is written to the access log in the same transaction as the change.
"""

from __future__ import annotations

import hashlib
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

from packaging.version import InvalidVersion, Version

from appliance.companion.access_log import record_access
from appliance.companion.db import Database, Queries
from appliance.contract.updates import CHANNELS, DEFAULT_CHANNEL
from appliance.releases.repository import WHEEL_NAME, UpdateRepository

SHARE = re.compile(r"^[0-9]{1,3}$")
SLOTS = 10_000
"""A kiosk's place in the rollout order; a share of N % admits the slots below N * SLOTS / 100."""
CHECK_AFTER_S = 3600
CHECK_JITTER_S = 900
"""Kiosks are told to ask again after an hour plus up to 15 minutes at random, so a fleet switched on at
once (a school's power back on Monday) spreads its checks instead of arriving together."""


class RolloutError(ValueError):
    """A rollout change that cannot be made; the message names the field and is safe to show an admin."""


def slot(kiosk_id: str) -> int:
    """The kiosk's fixed place in every rollout (0 … SLOTS-1), uniform over kiosk ids."""
    digest = hashlib.sha256(kiosk_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % SLOTS


def in_share(kiosk_id: str, share: int) -> bool:
    """Whether a kiosk is within the first ``share`` percent (0 admits none, 100 admits every kiosk)."""
    return slot(kiosk_id) < share * (SLOTS // 100)


@dataclass(frozen=True)
class Channel:
    name: str
    version: str | None
    """The published version; None: nothing published yet."""
    share: int
    paused: bool
    group_ids: frozenset[int]
    """Groups whose kiosks take the version whatever the share."""
    updated_at: float | None = None
    updated_by: str | None = None

    def assigned(self, kiosk_id: str, group_id: int | None) -> str | None:
        """The version this kiosk should run, or None: stay as you are (nothing published, paused, or not
        yet within the groups or the share)."""
        if self.version is None or self.paused:
            return None
        if group_id is not None and group_id in self.group_ids:
            return self.version
        return self.version if in_share(kiosk_id, self.share) else None


class Assignment(TypedDict):
    version: str | None
    channel: str
    check_after_s: int


# -- reading -------------------------------------------------------------------------------------------
async def _channel(q: Queries, name: str, for_update: bool = False) -> Channel | None:
    # A change reads the channel with its row locked on PostgreSQL, so two admins publishing at once are
    # checked one after the other (SQLite's transactions already take the write lock when they begin).
    lock = " FOR UPDATE" if for_update and q.engine == "postgresql" else ""
    row = await q.fetchone("SELECT name, version, share, paused, updated_at, updated_by FROM update_channels "
                           f"WHERE name = ?{lock}", (name,))
    if row is None:
        return None
    groups = await q.fetchall("SELECT group_id FROM channel_groups WHERE channel = ?", (name,))
    return Channel(row[0], row[1], int(row[2]), bool(row[3]), frozenset(int(g[0]) for g in groups), row[4], row[5])


async def channels(db: Database) -> list[Channel]:
    """Every channel, in the order releases travel (canary first)."""
    found = [await _channel(db, name) for name in CHANNELS]
    return [c for c in found if c is not None]


async def assignment(db: Database, kiosk_id: str) -> Assignment:
    """What ``GET /api/updates/assignment`` answers one kiosk."""
    row = await db.fetchone("SELECT channel, group_id FROM kiosks WHERE kiosk_id = ?", (kiosk_id,))
    name, group_id = (row[0], row[1]) if row else (DEFAULT_CHANNEL, None)
    found = await _channel(db, name)
    version = found.assigned(kiosk_id, int(group_id) if group_id is not None else None) if found else None
    return {"version": version, "channel": name,
            "check_after_s": CHECK_AFTER_S + random.randint(0, CHECK_JITTER_S)}  # a spread, not a secret


def available_versions(repository: UpdateRepository | None) -> list[str]:
    """Versions of the releases in the signed repository, oldest first (none without a repository)."""
    if repository is None:
        return []
    targets = repository.targets()
    if targets is None:
        return []
    found = [m["version"] for name in targets.signed.targets if (m := WHEEL_NAME.match(name))]
    return sorted(found, key=parse_version)


def parse_version(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        raise RolloutError(f"version: {text!r} is not a release version") from None


def parse_share(text: str) -> int:
    """A share from a form field: a whole percent 0-100."""
    text = text.strip().removesuffix("%").strip()
    if not SHARE.match(text) or int(text) > 100:
        raise RolloutError("share: a whole percent from 0 to 100")
    return int(text)


# -- changes -------------------------------------------------------------------------------------------
async def _existing(q: Queries, name: str) -> Channel:
    found = await _channel(q, name, for_update=True) if name in CHANNELS else None
    if found is None:
        raise RolloutError(f"channel: one of {', '.join(CHANNELS)}")
    return found


def _offered(version: str, available: Sequence[str]) -> str:
    if version not in available:
        shown = ", ".join(available) or "none: publish a signed release to the repository first"
        raise RolloutError(f"version: {version!r} is not a release in the signed repository (there: {shown})")
    return version


async def _save(q: Queries, name: str, actor: str, **columns: Any) -> None:
    sets = ", ".join(f"{column} = ?" for column in columns)
    await q.execute(f"UPDATE update_channels SET {sets}, updated_at = ?, updated_by = ? WHERE name = ?",
                    (*columns.values(), time.time(), actor, name))


async def publish(db: Database, name: str, version: str, share: int, actor: str, available: Sequence[str]) -> None:
    """Publish a newer release to a channel (the rollout starts unpaused, at ``share``)."""
    _offered(version, available)
    async with db.transaction() as q:
        channel = await _existing(q, name)
        if channel.version is not None and parse_version(version) <= parse_version(channel.version):
            raise RolloutError(f"version: {version} is not newer than {channel.version}, published to {name}; "
                               "to go back to an earlier release, roll the channel back")
        await _save(q, name, actor, version=version, share=share, paused=0)
        await record_access(q, actor, "publish-release", f"{version} to {name} at {share}%")


async def roll_back(db: Database, name: str, version: str, actor: str, available: Sequence[str]) -> str:
    """Publish an earlier release to every kiosk of the channel (share 100 %, unpaused); returns the version
    it replaced. Kiosks that run the later one go back to their previous install when it is this version."""
    _offered(version, available)
    async with db.transaction() as q:
        channel = await _existing(q, name)
        if channel.version is None or parse_version(version) >= parse_version(channel.version):
            raise RolloutError(f"version: roll back to a release older than {channel.version or 'the published one'}")
        await _save(q, name, actor, version=version, share=100, paused=0)
        await record_access(q, actor, "rollback-channel", f"{name} from {channel.version} to {version}")
    return channel.version


async def set_rollout(db: Database, name: str, share: int, group_ids: Iterable[int], actor: str) -> None:
    """Change who takes the channel's release: the share of its kiosks and the groups that go first."""
    wanted = sorted(set(group_ids))
    async with db.transaction() as q:
        await _existing(q, name)
        names = []
        for group_id in wanted:
            row = await q.fetchone("SELECT name FROM kiosk_groups WHERE group_id = ?", (group_id,))
            if row is None:
                raise RolloutError("groups: choose groups from the list")
            names.append(str(row[0]))
        await q.execute("DELETE FROM channel_groups WHERE channel = ?", (name,))
        for group_id in wanted:
            await q.execute("INSERT INTO channel_groups (channel, group_id) VALUES (?, ?)", (name, group_id))
        await _save(q, name, actor, share=share)
        shown = ", ".join(repr(n) for n in names) or "no groups"
        await record_access(q, actor, "set-rollout", f"{name}: {share}%, first: {shown}")


async def set_paused(db: Database, name: str, paused: bool, actor: str) -> None:
    async with db.transaction() as q:
        channel = await _existing(q, name)
        await _save(q, name, actor, paused=int(paused))
        await record_access(q, actor, "pause-rollout" if paused else "resume-rollout",
                            f"{name} ({channel.version or 'nothing published'})")


async def set_kiosk_channel(db: Database, kiosk_id: str, name: str, actor: str) -> None:
    async with db.transaction() as q:
        await _existing(q, name)
        if not await q.execute("UPDATE kiosks SET channel = ? WHERE kiosk_id = ?", (name, kiosk_id)):
            raise RolloutError(f"kiosk_id: there is no kiosk named {kiosk_id}")
        await record_access(q, actor, "set-channel", f"kiosk {kiosk_id} to {name}")
