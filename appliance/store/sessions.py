"""The kiosk's local lesson store: one journal file per lesson plus a small tinydb index.

Layout in ``state_dir``:

- ``lessons/<session_id>.jsonl`` — the lesson itself (:mod:`appliance.store.journal`). A checkpoint appends
  one fsynced line; a finished lesson's journal is replaced atomically by one ``final`` line. Cost:
  one lesson, whatever the history.
- ``sessions.json`` — tinydb index of finished lessons still moving (``pending``, ``parked``, and
  recently ``synced``): session_id, state, timestamps, parked_reason; never the records.
- ``synced.json`` — tinydb index of delivered lessons. It is the big one (up to the lesson cap), so it
  is rewritten only in batches (every ``ARCHIVE_BATCH`` deliveries) and by retention.

A lesson in progress has a journal and no index entry: that is how a crash is recognised at the next
start. Every index write is atomic and durable (:class:`AtomicJSONStorage`): temporary file, fsync,
rename, directory fsync. ``save()`` returns only once the final record is on disk.

Damage never stops the kiosk: a file that cannot be read as it should is moved aside
(``<name>.corrupt-<UTC time>``), whatever it still holds is salvaged, the index is rebuilt from the
journals on disk, and each event is logged at CRITICAL and listed in :attr:`SessionStore.problems`.
Something of the wrong kind where the store keeps a file or a folder (``sessions.json`` a directory,
``lessons`` a regular file) is moved aside whole, unread (``<name>.not-a-file-<UTC time>``,
``<name>.not-a-folder-<UTC time>``), and the store starts a new one in its place.

Opened with ``read_only=True`` (the `sessions` commands, which may run beside a kiosk that owns the
store), it writes nothing at all: it shows what the kiosk would show after its repairs, holding them in
memory, and lists in :attr:`SessionStore.problems` what it left for the kiosk to repair.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from appliance.common.clock import system_clock
from appliance.contract.record import OutgoingRecord, UncheckedRecord
from appliance.store.index import IndexEntry, StoredLesson, normalize_entry
from appliance.store.journal import (
    JournalEntry,
    StoreError,
    append_line,
    clean_text,
    encode_line,
    journal_name,
    make_entry,
    read_journal,
    sync_all,
    write_atomic,
)
from appliance.store.repair import StoreRepair
from appliance.store.tables import READ_ONLY, AtomicJSONStorage, DiskIndex, MemoryIndex
from appliance.store.upkeep import StoreUpkeep

__all__ = ["ARCHIVE_BATCH", "READ_ONLY", "AtomicJSONStorage", "SessionStore", "StoreError"]

log = logging.getLogger(__name__)

ARCHIVE_BATCH = 32
"""Synced entries collected in sessions.json before they move to synced.json in one write."""


class SessionStore(StoreRepair, StoreUpkeep):
    """Lessons on this kiosk, each with its sync state.

    States: ``in_progress`` (checkpoints of a running lesson, one per completed turn), ``pending``
    (finished, not yet confirmed by the companion), ``synced``, and ``parked`` (the companion rejected
    it for good; kept with the reason, never retried automatically).

    Synchronous and not thread-safe: call it from one thread at a time (the kiosk uses one worker
    thread). ``problems`` lists, in words, every repair made since the store was opened.

    ``clock`` stamps entries (wall time); ``synced`` says whether that clock is synchronized to network
    time, so a stamp read on a stale clock is never used to age a lesson (see :meth:`apply_retention`).
    ``read_only``: never write, move or delete a file (for commands that may run beside the kiosk that
    owns the store); the repairs are made in memory only, and every write raises StoreError.
    """

    def __init__(self, state_dir: Path | str, *, clock: Callable[[], float] = time.time,
                 synced: Callable[[], bool] | None = None, read_only: bool = False) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / "sessions.json"
        self.archive_path = self.state_dir / "synced.json"
        self.journal_dir = self.state_dir / "lessons"
        self.read_only = read_only
        self.problems: list[str] = []
        self._clock = clock
        self._synced = synced if synced is not None else lambda: system_clock().synchronized()
        self._in_progress: dict[str, dict[str, float]] = {}
        self._tail_checked: set[str] = set()
        self._warned: set[str] = set()
        self._absent: set[Path] = set()
        """Read-only: obstructions taken as missing (the kiosk moves them aside)."""
        self._held: dict[str, JournalEntry] = {}
        """Read-only: records the kiosk would write into journals (previous layout, salvage)."""
        self._paths: dict[str, Path] = {}
        """Read-only: journals found under another name than their lesson's (the kiosk renames them)."""
        try:
            self._clear_the_way()
            if not read_only:
                self.journal_dir.mkdir(parents=True, exist_ok=True)
            entries = self._open()
        except OSError as exc:
            raise StoreError(f"cannot open the session store in {state_dir}: {exc.strerror or exc}") from None
        self._active: DiskIndex | MemoryIndex
        self._archive: DiskIndex | MemoryIndex
        if read_only:
            ordered = sorted(entries.values(), key=lambda e: e["created_at"])
            self._active = MemoryIndex(e for e in ordered if e["state"] != "synced")
            self._archive = MemoryIndex(e for e in ordered if e["state"] == "synced")
        else:
            self._active = DiskIndex(self.path)
            self._archive = DiskIndex(self.archive_path)

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(READ_ONLY)

    # -- lookups -------------------------------------------------------------------------------

    def _find(self, session_id: str) -> tuple[DiskIndex | MemoryIndex | None, IndexEntry] | None:
        hit = self._active.map().get(session_id)
        if hit is not None:
            return self._active, hit[1]
        hit = self._archive.map().get(session_id)
        if hit is not None:
            return self._archive, hit[1]
        progress = self._in_progress.get(session_id)
        if progress is not None:
            return None, self._progress_entry(session_id, progress)
        return None

    @staticmethod
    def _progress_entry(session_id: str, progress: dict[str, float]) -> IndexEntry:
        return {"session_id": session_id, "state": "in_progress", "created_at": progress["created_at"],
                "saved_at": progress["saved_at"], "synced_at": None, "synced_at_trusted": False,
                "redate_pending": False, "parked_reason": None}

    def _entries(self) -> list[IndexEntry]:
        """Every lesson's index entry (no records), oldest first."""
        merged = {e["session_id"]: e for e in self._archive.entries()}
        merged.update((e["session_id"], e) for e in self._active.entries())
        for sid, progress in self._in_progress.items():
            merged.setdefault(sid, self._progress_entry(sid, progress))
        return sorted(merged.values(), key=lambda e: e["created_at"])

    def _journal(self, session_id: str) -> Path:
        return self._paths.get(session_id) or self.journal_dir / journal_name(session_id)

    def _load(self, entry: IndexEntry) -> UncheckedRecord | None:
        """A lesson's record from its journal, or None (logged, repaired) if the journal is gone or damaged."""
        sid = entry["session_id"]
        held = self._held.get(sid)
        if held is not None:
            return held.record
        path = self._journal(sid)
        try:
            read = read_journal(path)
        except FileNotFoundError:
            self._forget(entry, f"lesson {sid} ({entry['state']}) lost its journal file; it cannot be sent")
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
        found = read.entry
        if found is None or found.record["session_id"] != sid:
            try:
                aside = self._set_aside(path)
            except OSError as exc:
                aside = f"moved nowhere ({exc.strerror or exc})"
            self._forget(entry, f"lessons/{path.name} held no readable lesson {sid}; {aside}")
            return None
        if read.bad_lines and sid not in self._warned:
            self._warned.add(sid)
            self._problem(f"lessons/{path.name} had {read.bad_lines} damaged line(s); kept its last good one")
        return found.record

    def _forget(self, entry: IndexEntry, message: str) -> None:
        sid = entry["session_id"]
        if entry["state"] == "synced":
            log.info("session store: %s", message)
        else:
            self._problem(message)
        self._in_progress.pop(sid, None)
        try:
            self._active.remove([sid])
            self._archive.remove([sid])
        except StoreError as exc:
            log.error("session store: cannot drop the entry of lesson %s: %s", sid, exc)

    def _with_records(self, entries: Iterable[IndexEntry]) -> Iterator[tuple[IndexEntry, UncheckedRecord]]:
        for entry in list(entries):
            record = self._load(entry)
            if record is not None:
                yield entry, record

    @staticmethod
    def _prepare(record: Any) -> tuple[OutgoingRecord, str]:
        if not isinstance(record, dict):
            raise StoreError(f"a lesson record must be a JSON object, not {type(record).__name__}")
        sid = record.get("session_id")
        if not isinstance(sid, str) or not sid:
            raise StoreError("a lesson record needs a non-empty string session_id")
        clean = clean_text(sid)
        return (record if clean == sid else {**record, "session_id": clean}), clean

    # -- writes --------------------------------------------------------------------------------

    def checkpoint(self, record: OutgoingRecord) -> None:
        """Durably keep a lesson in progress (its record as it would be if the power went now).

        Appends one line to the lesson's journal: the cost does not depend on how many lessons are stored.
        """
        self._check_writable()
        record, sid = self._prepare(record)
        now = self._clock()
        found = self._find(sid)
        created = found[1]["created_at"] if found else now
        line = encode_line(make_entry("checkpoint", record, created, now))
        if found is not None and found[0] is not None:
            found[0].remove([sid])  # a finished lesson taken up again (not done by the kiosk)
        try:
            append_line(self._journal(sid), line, check_tail=sid not in self._tail_checked)
        except StoreError:
            self._tail_checked.discard(sid)  # a failed write may have left a partial line
            raise
        self._tail_checked.add(sid)
        self._in_progress[sid] = {"created_at": created, "saved_at": now}

    def save(self, record: OutgoingRecord) -> None:
        """Durably keep a finished lesson until the companion has it; raises StoreError if it could not.

        The journal is replaced by the final record (atomic), then the lesson's index entry is written.
        A crash between the two is repaired at the next start (the journal says ``final``).
        """
        self._check_writable()
        record, sid = self._prepare(record)
        self._finish(sid, record)

    def _finish(self, sid: str, record: OutgoingRecord) -> None:
        now = self._clock()
        found = self._find(sid)
        created = found[1]["created_at"] if found else now
        write_atomic(self._journal(sid), encode_line(make_entry("final", record, created, now)))
        self._tail_checked.add(sid)
        entry = normalize_entry({"session_id": sid, "created_at": created, "saved_at": now}, "pending")
        assert entry is not None
        self._active.put(entry)
        if found is not None and found[0] is self._archive:
            self._archive.remove([sid])
        self._in_progress.pop(sid, None)

    def recover_interrupted(self) -> list[UncheckedRecord]:
        """Close lessons a crash or power cut left in progress; they become pending (``interrupted``)."""
        self._check_writable()
        recovered = []
        for sid, progress in list(self._in_progress.items()):
            record = self._load(self._progress_entry(sid, progress))
            if record is None:
                continue
            record = dict(record, end_reason="interrupted")
            self._finish(sid, record)
            recovered.append(record)
        return recovered

    def import_records(self, records: Iterable[Any]) -> int:
        """Add finished lessons not stored yet, as ``pending`` (e.g. from ``sessions export --format jsonl``).

        Lessons already stored (any state) are left alone; malformed records are skipped with a log line.
        Returns how many were added. One index write for the whole batch.
        """
        self._check_writable()
        known = {e["session_id"] for e in self._entries()}
        added: list[IndexEntry] = []
        now = self._clock()
        for raw in records:
            try:
                record, sid = self._prepare(raw)
                if sid in known:
                    continue
                line = encode_line(make_entry("final", record, now, now))
            except StoreError as exc:
                log.warning("import: skipped a record: %s", exc)
                continue
            write_atomic(self._journal(sid), line, sync_dir=False, sync_file=False)
            entry = normalize_entry({"session_id": sid, "created_at": now, "saved_at": now}, "pending")
            assert entry is not None
            added.append(entry)
            known.add(sid)
        if added:
            try:
                sync_all(self.journal_dir)
            except OSError as exc:
                raise StoreError(f"cannot write {self.journal_dir}: {exc.strerror or exc}") from None
            self._active.put_many(added)
        return len(added)

    def mark_synced(self, session_id: str, redate: bool = False) -> None:
        """The companion confirmed this lesson. ``redate``: its dates were read on an unsynchronized clock
        and must be corrected at the companion once the clock is synchronized (:meth:`awaiting_redate`)."""
        self._check_writable()
        self._set_state(clean_text(session_id), "synced", redate=redate)

    def park(self, session_id: str, reason: str) -> None:
        """The companion will never accept this record: keep it aside with the reason."""
        self._check_writable()
        self._set_state(clean_text(session_id), "parked", clean_text(str(reason)))

    def _set_state(self, sid: str, state: str, reason: str | None = None, redate: bool = False) -> None:
        found = self._find(sid)
        if found is None or found[0] is None:
            log.warning("store: cannot mark lesson %s %s: it is not a finished lesson here", sid, state)
            return
        where, old = found
        synced = state == "synced"
        entry: IndexEntry = {**old, "state": state, "synced_at": self._clock() if synced else None,
                             "synced_at_trusted": synced and self._synced(), "redate_pending": synced and redate,
                             "parked_reason": reason if state == "parked" else None}
        if where is self._archive and state == "synced":
            self._archive.put(entry)
            return
        self._active.put(entry)
        if where is self._archive:
            self._archive.remove([sid])
        if state == "synced":
            self._archive_delivered()

    def _archive_delivered(self) -> None:
        """Move delivered entries from sessions.json to synced.json in batches, so the big file is
        rewritten once per ``ARCHIVE_BATCH`` deliveries. Archive first: a crash in between leaves the
        entry in both files, and sessions.json (read last) wins."""
        delivered = [e for e in self._active.entries() if e["state"] == "synced"]
        if len(delivered) >= ARCHIVE_BATCH:
            self._archive.put_many(delivered)
            self._active.remove(e["session_id"] for e in delivered)

    # -- reads ---------------------------------------------------------------------------------

    def get(self, session_id: str) -> UncheckedRecord | None:
        found = self._find(clean_text(session_id))
        if found is None:
            return None
        record = self._load(found[1])
        return dict(record) if record is not None else None

    def state_of(self, session_id: str) -> str | None:
        found = self._find(clean_text(session_id))
        return found[1]["state"] if found else None

    def is_synced(self, session_id: str) -> bool:
        return self.state_of(session_id) == "synced"

    def count_unsynced(self) -> int:
        """How many finished lessons wait for the companion, from the index alone (no journal is read)."""
        active = self._active.map()
        waiting = sum(1 for _, e in active.values() if e["state"] == "pending")
        return waiting + sum(1 for sid, (_, e) in self._archive.map().items()
                             if e["state"] == "pending" and sid not in active)

    def unsynced(self) -> list[UncheckedRecord]:
        """Finished records not yet confirmed by the companion, oldest first."""
        return [record for _, record in self._with_records(e for e in self._entries() if e["state"] == "pending")]

    def parked(self) -> list[tuple[UncheckedRecord, str]]:
        return [(record, entry["parked_reason"] or "")
                for entry, record in self._with_records(e for e in self._entries() if e["state"] == "parked")]

    def documents(self) -> list[StoredLesson]:
        """Every stored lesson with its state, oldest first (for `stella-kiosk sessions`): session_id,
        state, created_at, saved_at, synced_at, parked_reason and record."""
        return [{**entry, "record": record} for entry, record in self._with_records(self._entries())]

    def records(self) -> Iterator[UncheckedRecord]:
        for _, record in self._with_records(self._entries()):
            yield record

    def __len__(self) -> int:
        return len(self._entries())

    def close(self) -> None:
        self._active.close()
        self._archive.close()

