"""The access log: who read or exported children's words, and who changed accounts, groups, kiosks or
which release the fleet runs.

A data-protection officer asks "who has seen this child's lessons?" and "who gave that teacher access?";
this table answers both. Rows are only ever added (the database refuses UPDATE and DELETE, see migration
m0006) except by :func:`purge_access_log`, the retention job, which removes rows older than
``access_log_days`` and records that it did.

Reads are logged *before* the words are sent: if the log cannot be written, the page fails instead of
showing words that nobody recorded. Admin changes are logged right after they succeed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from appliance.companion.db import Database, Queries

DEFAULT_DAYS = 365
"""How long access-log rows are kept unless ``access_log_days`` says otherwise (0 = forever)."""

ACTION = re.compile(r"^[a-z][a-z0-9-]{0,39}$")
ACTOR = re.compile(r"^[A-Za-z0-9._:@()-]{1,100}$")
MAX_SUBJECT = 500
DAY = re.compile(r"^\d{4}-\d\d-\d\d$")
LIST_LIMIT = 500
EXPORT_LIMIT = 100_000
RETENTION_ACTOR = "(retention)"

#: The actions the companion writes today, with what each means (the console's filter offers these).
ACTIONS = {
    "view-lesson": "read one lesson's transcript",
    "export-lessons": "exported lessons (with transcripts) as CSV",
    "export-access-log": "exported the access log as CSV",
    "add-kiosk": "registered a kiosk or gave it a new key",
    "revoke-kiosk": "revoked a kiosk's key",
    "set-budget": "changed a kiosk's daily budget",
    "assign-kiosk": "moved a kiosk into a group (or out of every group)",
    "add-user": "created an account",
    "disable-user": "disabled an account",
    "enable-user": "enabled an account",
    "reset-password": "reset an account's password",
    "add-group": "created a group",
    "rename-group": "renamed a group",
    "delete-group": "deleted a group",
    "add-member": "put a teacher in a group",
    "remove-member": "took a teacher out of a group",
    "publish-release": "published a release to an update channel",
    "rollback-channel": "rolled an update channel back to an earlier release",
    "set-rollout": "changed which kiosks of a channel take its release (share, groups first)",
    "pause-rollout": "paused a channel's rollout",
    "resume-rollout": "resumed a channel's rollout",
    "set-channel": "moved a kiosk to another update channel",
    "erase-lesson": "erased a lesson",
    "erase-kiosk-lessons": "erased every lesson of a kiosk",
    "purge-access-log": "removed access-log rows past their retention",
}


class LogFilterError(ValueError):
    """A filter value that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Entry:
    id: int
    at: float
    username: str
    action: str
    subject: str
    lessons: int


async def record_access(db: Queries, user: str, action: str, subject: str, lessons: int = 0) -> None:
    """Append one row: ``user`` (an account name, or e.g. ``cli:root`` for the command line) did ``action``
    (lower-case words joined by '-', see :data:`ACTIONS`) to ``subject`` (free text naming what: a lesson
    id, a filter, an account), reading ``lessons`` lessons' words (0 for a change that read none).

    ``db`` may be a database or an open transaction (to log a change atomically with it). A malformed
    user or action is a programming error: ValueError."""
    if not ACTOR.match(user):
        raise ValueError(f"access log: {user!r} is not an account or actor name")
    if not ACTION.match(action):
        raise ValueError(f"access log: {action!r} is not an action name (lower-case words joined by '-')")
    if lessons < 0:
        raise ValueError("access log: lessons cannot be negative")
    await db.execute("INSERT INTO access_log (at, username, action, subject, lessons) VALUES (?, ?, ?, ?, ?)",
                     (time.time(), user, action, subject.replace("\x00", "")[:MAX_SUBJECT], int(lessons)))


@dataclass(frozen=True)
class LogFilter:
    user: str | None = None
    action: str | None = None
    day_from: str | None = None
    day_to: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> LogFilter:
        """From GET parameters ``user``, ``action``, ``from``, ``to`` (UTC days); blank means no filter."""
        user = (query.get("user") or "").strip() or None
        action = (query.get("action") or "").strip() or None
        day_from = (query.get("from") or "").strip() or None
        day_to = (query.get("to") or "").strip() or None
        if user is not None and not ACTOR.match(user):
            raise LogFilterError("user: an account name is 1-100 letters, digits or . _ - : @ ( )")
        if action is not None and not ACTION.match(action):
            raise LogFilterError(f"action: one of {', '.join(ACTIONS)}")
        for name, value in (("from", day_from), ("to", day_to)):
            if value is not None and _day_start(value) is None:
                raise LogFilterError(f"{name}: a day is written YYYY-MM-DD, e.g. 2026-11-24")
        return cls(user, action, day_from, day_to)

    def params(self) -> dict[str, str]:
        pairs = {"user": self.user, "action": self.action, "from": self.day_from, "to": self.day_to}
        return {k: v for k, v in pairs.items() if v}

    def where(self) -> tuple[str, list[Any]]:
        sql, args = " WHERE 1=1", list[Any]()
        if self.user:
            sql += " AND username = ?"
            args.append(self.user)
        if self.action:
            sql += " AND action = ?"
            args.append(self.action)
        if self.day_from:
            sql += " AND at >= ?"
            args.append(_day_start(self.day_from))
        if self.day_to:  # the whole day: before the next midnight (plain seconds: 9999-12-31 cannot overflow)
            sql += " AND at < ?"
            args.append((_day_start(self.day_to) or 0.0) + 86400)
        return sql, args


def _day_start(text: str) -> float | None:
    """Midnight UTC of a YYYY-MM-DD day as a Unix time, or None when it is not such a day."""
    if not DAY.match(text):
        return None
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC).timestamp()
    except ValueError:
        return None


async def entries(db: Database, flt: LogFilter, limit: int = LIST_LIMIT) -> list[Entry]:
    """The newest rows matching the filter (at most ``limit``)."""
    where, args = flt.where()
    rows = await db.fetchall(f"SELECT id, at, username, action, subject, lessons FROM access_log{where} "
                             "ORDER BY at DESC, id DESC LIMIT ?", [*args, limit])
    return [Entry(*row) for row in rows]


async def actors(db: Database) -> list[str]:
    """Everyone with a row in the log (for the filter)."""
    return [row[0] for row in await db.fetchall("SELECT DISTINCT username FROM access_log ORDER BY username")]


async def purge_access_log(db: Database, days: int, now: float | None = None) -> int:
    """Remove rows older than ``days`` (0 keeps them forever) and log how many went; returns that number.

    The only DELETE the database lets through: the cutoff is declared inside this transaction, and the
    guard refuses any row at or after it. Safe from several companions at once (each removes what is left)."""
    if days <= 0:
        return 0
    cutoff = (time.time() if now is None else now) - days * 86400
    async with db.transaction() as q:
        if q.engine == "postgresql":
            await q.fetchone("SELECT set_config('stella.access_log_cutoff', ?, true)", (repr(cutoff),))
            removed = await q.execute("DELETE FROM access_log WHERE at < ?", (cutoff,))
        else:
            await q.execute("INSERT INTO access_log_purge (cutoff) VALUES (?)", (cutoff,))
            removed = await q.execute("DELETE FROM access_log WHERE at < ?", (cutoff,))
            await q.execute("DELETE FROM access_log_purge")
        if removed:
            await record_access(q, RETENTION_ACTOR, "purge-access-log",
                                f"{removed} row(s) older than {days} days", 0)
    return removed
