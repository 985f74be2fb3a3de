"""Keeping the store in shape while the kiosk runs for months: retention by age and by count, and the
corrected dates of lessons delivered before the clock was synchronized. A mixin of
:class:`~appliance.store.sessions.SessionStore` (same state).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from appliance.contract.record import OutgoingRecord, UncheckedRecord
from appliance.store.index import IndexEntry
from appliance.store.journal import (
    StoreError,
    clean_text,
    encode_line,
    make_entry,
    write_atomic,
)
from appliance.store.tables import DiskIndex, MemoryIndex

log = logging.getLogger(__name__)


class StoreUpkeep:
    _active: DiskIndex | MemoryIndex
    _archive: DiskIndex | MemoryIndex
    _clock: Callable[[], float]
    _synced: Callable[[], bool]

    def _check_writable(self) -> None:
        raise NotImplementedError

    def _entries(self) -> list[IndexEntry]:
        raise NotImplementedError

    def _journal(self, session_id: str) -> Path:
        raise NotImplementedError

    def _with_records(self, entries: Iterable[IndexEntry]) -> Iterator[tuple[IndexEntry, UncheckedRecord]]:
        raise NotImplementedError

    @staticmethod
    def _prepare(record: Any) -> tuple[OutgoingRecord, str]:
        raise NotImplementedError

    def _find(self, session_id: str) -> tuple[DiskIndex | MemoryIndex | None, IndexEntry] | None:
        raise NotImplementedError

    def apply_retention(self, keep_synced_days: float, max_lessons: int) -> int:
        """Delete synced lessons older than ``keep_synced_days``, then the oldest synced ones while
        there are more than ``max_lessons``. Unsynced lessons are never deleted: when they alone
        exceed the cap, say so loudly. Returns how many were deleted.

        Ages count only on a synchronized clock, from stamps read on one: a board that boots with a stale
        date and is stepped forward years by network time would otherwise delete at once every lesson
        delivered before the step. A stamp read unsynchronized is replaced by "now" at the first retention
        on a synchronized clock, so such a lesson is kept its full period from then (never less). While the
        clock is not synchronized, only the cap deletes.

        Journals go first, then the index entries: a crash in between leaves entries without a
        journal, which the next start drops quietly (they were delivered)."""
        self._check_writable()
        now = self._clock()
        entries = self._entries()
        synced = [e for e in entries if e["state"] == "synced"]
        doomed: list[str] = []
        if self._synced():
            synced = self._restamp(synced, now)
            cutoff = now - keep_synced_days * 86400
            doomed = [e["session_id"] for e in synced
                      if e["synced_at_trusted"] and e["synced_at"] is not None and e["synced_at"] < cutoff]
        excess = len(entries) - len(doomed) - max_lessons
        if excess > 0:
            gone = set(doomed)
            doomed += [e["session_id"] for e in synced if e["session_id"] not in gone][:excess]
        if doomed:
            for sid in doomed:
                try:
                    self._journal(sid).unlink(missing_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot delete {self._journal(sid)}: {exc.strerror or exc}") from None
            self._archive.remove(doomed)
            self._active.remove(doomed)
        total = len(entries) - len(doomed)
        if total > max_lessons:
            log.error("session store is full: %d lessons waiting for the companion exceed the cap of %d; "
                      "nothing unsynced is deleted — check the companion connection", total, max_lessons)
        return len(doomed)

    def _restamp(self, synced: list[IndexEntry], now: float) -> list[IndexEntry]:
        """``synced`` with every stamp read on an unsynchronized clock replaced by ``now`` (trusted), written
        to the index in one write per file."""
        stale: dict[str, IndexEntry] = {e["session_id"]: {**e, "synced_at": now, "synced_at_trusted": True}
                                        for e in synced if not e["synced_at_trusted"]}
        if not stale:
            return synced
        active = self._active.map()
        self._active.put_many([e for sid, e in stale.items() if sid in active])
        self._archive.put_many([e for sid, e in stale.items() if sid not in active])
        log.info("retention: %d delivered lesson(s) were stamped before the clock was synchronized; "
                 "their retention period counts from now", len(stale))
        return [stale.get(e["session_id"], e) for e in synced]

    # -- dates corrected after delivery ------------------------------------------------------------

    def awaiting_redate(self) -> list[UncheckedRecord]:
        """Delivered lessons whose dates must still be corrected at the companion, oldest first.

        Asked at every sync round once the clock is synchronized: only the flagged entries are sorted and
        read, not the whole history."""
        active = self._active.map()
        flagged = {e["session_id"]: e for _, e in self._archive.map().values()
                   if e["redate_pending"] and e["session_id"] not in active}
        flagged.update((e["session_id"], e) for _, e in active.values() if e["redate_pending"])
        waiting = sorted((e for e in flagged.values() if e["state"] == "synced"), key=lambda e: e["created_at"])
        return [record for _, record in self._with_records(waiting)]

    def redated(self, record: UncheckedRecord) -> None:
        """The companion took the corrected dates of this delivered lesson: keep the corrected record here
        too (atomically, as every final record) and stop asking."""
        self._check_writable()
        prepared, sid = self._prepare(record)
        found = self._waiting_redate(sid)
        if found is None:
            return
        where, entry = found
        write_atomic(self._journal(sid), encode_line(make_entry("final", prepared, entry["created_at"],
                                                                entry["saved_at"])))
        where.put({**entry, "redate_pending": False})

    def drop_redate(self, session_id: str) -> None:
        """Stop asking to correct this lesson's dates (it cannot be, or the companion refused for good)."""
        self._check_writable()
        found = self._waiting_redate(clean_text(session_id))
        if found is not None:
            found[0].put({**found[1], "redate_pending": False})

    def _waiting_redate(self, sid: str) -> tuple[DiskIndex | MemoryIndex, IndexEntry] | None:
        found = self._find(sid)
        if found is None or found[0] is None or found[1]["state"] != "synced":
            log.warning("store: lesson %s is not a delivered lesson here; its dates stay as they are", sid)
            return None
        return found[0], found[1]
