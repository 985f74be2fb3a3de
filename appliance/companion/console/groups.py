"""Groups (a school, a class) that own kiosks, the teachers in them, and the scope they give a teacher.

Why groups and not per-teacher kiosk lists: a class changes teachers and a school adds kiosks; an admin
changes one membership or one kiosk, never a list per person. A kiosk belongs to at most one group and a
teacher may be in several. A kiosk's lessons belong to the kiosk: moving it to another group moves its past
lessons too (say so to whoever asks an admin to move one).

:class:`Scope` is the one place a teacher's view is narrowed: every console query that reads lessons,
usage or the fleet takes one, and its SQL clause keeps only the kiosks of the viewer's groups.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from appliance.companion.console.accounts import USERNAME
from appliance.companion.db import Database

GROUP_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,80}$")

_IN_GROUPS = ("SELECT k.kiosk_id FROM kiosks k JOIN group_members m ON m.group_id = k.group_id "
              "WHERE m.username = ?")


class GroupError(ValueError):
    """A group change that cannot be made; the message is safe to show to the admin."""


@dataclass(frozen=True)
class Scope:
    """What one viewer may read: everything (an admin: ``username`` None) or their groups' kiosks."""

    username: str | None = None

    @classmethod
    def everything(cls) -> Scope:
        return cls(None)

    @classmethod
    def of(cls, username: str, role: str) -> Scope:
        return cls(None if role == "admin" else username)

    def clause(self, column: str = "kiosk_id") -> tuple[str, list[Any]]:
        """`` AND column IN (the viewer's kiosks)``, or nothing for an admin."""
        if self.username is None:
            return "", []
        return f" AND {column} IN ({_IN_GROUPS})", [self.username]


@dataclass(frozen=True)
class Group:
    group_id: int
    name: str
    created_at: float
    kiosks: list[str] = field(default_factory=list)
    members: list[str] = field(default_factory=list)


def check_name(name: str) -> str:
    name = name.strip()
    if not GROUP_NAME.match(name):
        raise GroupError("a group name is 1-80 characters, without line breaks or control characters")
    return name


async def list_groups(db: Database) -> list[Group]:
    """Every group with its kiosks and members, by name."""
    kiosks: dict[int, list[str]] = {}
    for group_id, kiosk in await db.fetchall("SELECT group_id, kiosk_id FROM kiosks WHERE group_id IS NOT NULL "
                                             "ORDER BY kiosk_id"):
        kiosks.setdefault(int(group_id), []).append(kiosk)
    members: dict[int, list[str]] = {}
    for group_id, username in await db.fetchall("SELECT group_id, username FROM group_members ORDER BY username"):
        members.setdefault(int(group_id), []).append(username)
    rows = await db.fetchall("SELECT group_id, name, created_at FROM kiosk_groups ORDER BY name")
    return [Group(int(g), n, c, kiosks.get(int(g), []), members.get(int(g), [])) for g, n, c in rows]


async def group_name(db: Database, group_id: int) -> str | None:
    row = await db.fetchone("SELECT name FROM kiosk_groups WHERE group_id = ?", (group_id,))
    return row[0] if row else None


async def group_id_by_name(db: Database, name: str) -> int | None:
    row = await db.fetchone("SELECT group_id FROM kiosk_groups WHERE name = ?", (name,))
    return int(row[0]) if row else None


async def groups_of(db: Database, username: str) -> list[str]:
    """The names of the groups a teacher is in (empty: they see no lessons yet)."""
    rows = await db.fetchall("SELECT g.name FROM kiosk_groups g JOIN group_members m ON m.group_id = g.group_id "
                             "WHERE m.username = ? ORDER BY g.name", (username,))
    return [row[0] for row in rows]


async def add_group(db: Database, name: str) -> int:
    """Create a group; its id. GroupError when the name is malformed or taken."""
    name = check_name(name)
    async with db.transaction() as q:
        if await q.fetchone("SELECT 1 FROM kiosk_groups WHERE name = ?", (name,)):
            raise GroupError(f"there is already a group named {name}")
        row = await q.fetchone("INSERT INTO kiosk_groups (name, created_at) VALUES (?, ?) RETURNING group_id",
                               (name, time.time()))
    assert row is not None  # INSERT ... RETURNING answers with the new row
    return int(row[0])


async def rename_group(db: Database, group_id: int, name: str) -> str:
    """Rename; returns the old name. GroupError when there is no such group or the name is taken."""
    name = check_name(name)
    async with db.transaction() as q:
        old = await q.fetchone("SELECT name FROM kiosk_groups WHERE group_id = ?", (group_id,))
        if old is None:
            raise GroupError("there is no such group")
        clash = await q.fetchone("SELECT group_id FROM kiosk_groups WHERE name = ?", (name,))
        if clash is not None and int(clash[0]) != group_id:
            raise GroupError(f"there is already a group named {name}")
        await q.execute("UPDATE kiosk_groups SET name = ? WHERE group_id = ?", (name, group_id))
    return str(old[0])


async def delete_group(db: Database, group_id: int) -> str:
    """Delete a group: its kiosks belong to no group (admins only see them) and its teachers lose access to
    them. Returns the group's name; GroupError when there is no such group."""
    async with db.transaction() as q:
        old = await q.fetchone("SELECT name FROM kiosk_groups WHERE group_id = ?", (group_id,))
        if old is None:
            raise GroupError("there is no such group")
        await q.execute("UPDATE kiosks SET group_id = NULL WHERE group_id = ?", (group_id,))
        await q.execute("DELETE FROM group_members WHERE group_id = ?", (group_id,))
        await q.execute("DELETE FROM kiosk_groups WHERE group_id = ?", (group_id,))
    return str(old[0])


async def assign_kiosk(db: Database, kiosk_id: str, group_id: int | None) -> None:
    """Put a kiosk in a group (None: in no group). GroupError when the kiosk or the group does not exist."""
    async with db.transaction() as q:
        if group_id is not None and not await q.fetchone("SELECT 1 FROM kiosk_groups WHERE group_id = ?",
                                                         (group_id,)):
            raise GroupError("there is no such group")
        if not await q.execute("UPDATE kiosks SET group_id = ? WHERE kiosk_id = ?", (group_id, kiosk_id)):
            raise GroupError(f"there is no kiosk named {kiosk_id}")


async def add_member(db: Database, group_id: int, username: str) -> None:
    """Put an account in a group (again is harmless). GroupError when either does not exist."""
    if not USERNAME.match(username):  # checked before SQL: PostgreSQL refuses NUL characters, for one
        raise GroupError(f"there is no account named {username!r}")
    async with db.transaction() as q:
        if not await q.fetchone("SELECT 1 FROM kiosk_groups WHERE group_id = ?", (group_id,)):
            raise GroupError("there is no such group")
        if not await q.fetchone("SELECT 1 FROM users WHERE username = ?", (username,)):
            raise GroupError(f"there is no account named {username}")
        if not await q.fetchone("SELECT 1 FROM group_members WHERE group_id = ? AND username = ?",
                                (group_id, username)):
            await q.execute("INSERT INTO group_members (group_id, username) VALUES (?, ?)", (group_id, username))


async def remove_member(db: Database, group_id: int, username: str) -> bool:
    """Take an account out of a group; False when it was not in it."""
    if not USERNAME.match(username):
        return False
    return await db.execute("DELETE FROM group_members WHERE group_id = ? AND username = ?",
                            (group_id, username)) > 0
