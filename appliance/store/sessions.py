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

import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document

from appliance.common.clock import system_clock
from appliance.contract.record import OutgoingRecord, UncheckedRecord
from appliance.store.index import TABLE, IndexEntry, LoadedIndex, StoredLesson, load_index, normalize_entry
from appliance.store.journal import (
    SUFFIX,
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

__all__ = ["AtomicJSONStorage", "SessionStore", "StoreError"]

log = logging.getLogger(__name__)

STORE_SCHEMA = 2
"""1: full records inside sessions.json; 2: journals + index."""
ARCHIVE_BATCH = 32
"""Synced entries collected in sessions.json before they move to synced.json in one write."""
READ_ONLY = "the session store was opened read-only (a running kiosk owns it)"
LEFT_AS_IT_IS = "left as it is (read-only here: the kiosk sets it aside at its next start)"


class AtomicJSONStorage(Storage):
    """TinyDB storage whose every write is atomic and durable.

    Reads are cached and revalidated with one ``stat``: every write replaces the file (new inode), so
    an unchanged identity means unchanged content, and a write by another process is still seen.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._data: dict[str, dict[str, Any]] | None = None
        self._signature: tuple[int, ...] | None = None
        self.generation = 0
        """Bumped whenever the data may have changed (a write, or a reload from disk)."""

    def _stat(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self._path}: {exc.strerror or exc}") from None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def read(self) -> dict[str, dict[str, Any]] | None:
        signature = self._stat()
        if signature is not None and signature == self._signature:
            return self._data
        self.generation += 1
        self._data, self._signature = None, signature
        if signature is None:
            return None
        try:
            text = self._path.read_bytes().decode("utf-8")
        except OSError as exc:
            self._signature = None
            raise StoreError(f"cannot read {self._path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            text = "\0"
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict) or not all(isinstance(t, dict) for t in data.values()):
            self._signature = None
            raise StoreError(f"{self._path} was damaged while the kiosk ran; restart the kiosk to repair it")
        self._data = data
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        self.generation += 1
        try:
            payload = encode_in_pieces(data)
            write_atomic(self._path, payload)
            self._data, self._signature = data, self._stat()
        except (StoreError, TypeError, ValueError) as exc:
            self._data, self._signature = None, None  # the cache may hold what never reached the disk
            raise exc if isinstance(exc, StoreError) else StoreError(f"cannot write {self._path}: {exc}") from None

    def close(self) -> None:
        pass


def encode_in_pieces(data: dict[str, dict[str, Any]]) -> bytes:
    """The same JSON as one ``json.dumps(data)``, encoded document by document.

    Why: ``json.dumps`` of a whole index (5,000 entries) is one C call that holds the GIL for tens
    of milliseconds, and the event loop that paces the audio waits for it although the store runs on
    its own thread. Many small calls let the interpreter switch threads between them.
    """
    def dumps(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    tables = []
    for name, docs in data.items():
        inner = ",".join(f"{dumps(str(doc_id))}:{dumps(doc)}" for doc_id, doc in docs.items())
        tables.append(f"{dumps(name)}:{{{inner}}}")
    return ("{" + ",".join(tables) + "}").encode("utf-8")


class _Index:
    """One tinydb index file and a ``session_id → (doc_id, entry)`` map kept in step with it."""

    def __init__(self, path: Path) -> None:
        self.db = TinyDB(path, storage=AtomicJSONStorage)
        self.storage = cast(AtomicJSONStorage, self.db.storage)  # TinyDB built it from the class given above
        self.table = self.db.table(TABLE)
        self._map: dict[str, tuple[int, IndexEntry]] = {}
        self._seen = -1

    def map(self) -> dict[str, tuple[int, IndexEntry]]:
        self.storage.read()  # revalidates the cache against the file
        if self.storage.generation != self._seen:
            fresh: dict[str, tuple[int, IndexEntry]] = {}
            for doc in self.table.all():
                entry = normalize_entry(doc)
                if entry is None:
                    log.error("store: skipped a malformed index entry in %s", self.storage._path.name)
                    continue
                fresh[entry["session_id"]] = (doc.doc_id, entry)
            self._map, self._seen = fresh, self.storage.generation
        return self._map

    def entries(self) -> Iterator[IndexEntry]:
        return (entry for _, entry in self.map().values())

    def put_many(self, entries: list[IndexEntry]) -> None:
        """Insert or replace entries (one file write when they are all new or all known)."""
        if not entries:
            return
        current = self.map()
        before = self.storage.generation
        writes = 0
        known = [(current[e["session_id"]][0], e) for e in entries if e["session_id"] in current]
        for doc_id, entry in known:
            self.table.update(dict(entry), doc_ids=[doc_id])
            writes += 1
        next_id = max((doc_id for doc_id, _ in current.values()), default=0) + 1
        added = [(next_id + i, e) for i, e in enumerate(e for e in entries if e["session_id"] not in current)]
        if added:
            self.table.insert_multiple([Document(dict(e), doc_id=doc_id) for doc_id, e in added])
            writes += 1
        self._after_write(before + writes, known + added, [])

    def put(self, entry: IndexEntry) -> None:
        self.put_many([entry])

    def remove(self, session_ids: Iterable[str]) -> None:
        current = self.map()
        doomed = [sid for sid in set(session_ids) if sid in current]
        if doomed:
            before = self.storage.generation
            self.table.remove(doc_ids=[current[sid][0] for sid in doomed])
            self._after_write(before + 1, [], doomed)

    def _after_write(self, expected: int, put: list[tuple[int, IndexEntry]], removed: list[str]) -> None:
        """Update the map in place after our own writes instead of re-reading the whole table."""
        if self.storage.generation != expected:
            self._seen = -1  # the file was also re-read in between: rebuild on next use
            return
        for doc_id, entry in put:
            self._map[entry["session_id"]] = (doc_id, entry.copy())
        for sid in removed:
            self._map.pop(sid, None)
        self._seen = self.storage.generation

    def close(self) -> None:
        self.db.close()


class _MemoryIndex:
    """A read-only store's index: the entries it would write, kept in memory (its files are never written).

    ``remove`` only forgets in memory (a lesson whose journal vanished); every write method of the
    store refuses before it gets here.
    """

    def __init__(self, entries: Iterable[IndexEntry]) -> None:
        self._map: dict[str, tuple[int, IndexEntry]] = {e["session_id"]: (n, {**e}) for n, e in enumerate(entries, 1)}

    def map(self) -> dict[str, tuple[int, IndexEntry]]:
        return self._map

    def entries(self) -> Iterator[IndexEntry]:
        return (entry for _, entry in self._map.values())

    def put_many(self, entries: list[IndexEntry]) -> None:
        raise StoreError(READ_ONLY)

    def put(self, entry: IndexEntry) -> None:
        raise StoreError(READ_ONLY)

    def remove(self, session_ids: Iterable[str]) -> None:
        for sid in list(session_ids):
            self._map.pop(sid, None)

    def close(self) -> None:
        pass


def _utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


class SessionStore:
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
        self._active: _Index | _MemoryIndex
        self._archive: _Index | _MemoryIndex
        if read_only:
            ordered = sorted(entries.values(), key=lambda e: e["created_at"])
            self._active = _MemoryIndex(e for e in ordered if e["state"] != "synced")
            self._archive = _MemoryIndex(e for e in ordered if e["state"] == "synced")
        else:
            self._active = _Index(self.path)
            self._archive = _Index(self.archive_path)

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreError(READ_ONLY)

    # -- opening, repair and migration -------------------------------------------------------

    def _problem(self, message: str) -> None:
        self.problems.append(message)
        # Read-only, nothing was changed: whoever opened it shows ``problems``; the kiosk repairs and alarms.
        log.log(logging.INFO if self.read_only else logging.CRITICAL, "session store: %s", message)

    def _set_aside(self, path: Path, why: str = "corrupt") -> str:
        """Move ``path`` aside and say where to; read-only, leave it and say so."""
        if self.read_only:
            return LEFT_AS_IT_IS
        return f"moved to {self._move_aside(path, why).name}"

    def _clear_the_way(self) -> None:
        """Move aside whatever sits where the store keeps a file or a folder but is not one.

        Why: ``sessions.json`` as a directory (or ``lessons`` as a file, an unpacked backup, a mistyped
        command) made every start fail, and systemd gave up on the kiosk after five. The thing in the way
        is kept whole under a name that says why, never read and never deleted.
        """
        for path, folder in ((self.journal_dir, True), (self.path, False), (self.archive_path, False)):
            try:
                mode = os.stat(path).st_mode
                what = "a directory" if stat.S_ISDIR(mode) else "a regular file" if stat.S_ISREG(mode) \
                    else "a special file"
            except FileNotFoundError:
                if not os.path.lexists(path):
                    continue
                mode, what = 0, "a broken symbolic link"
            if (stat.S_ISDIR(mode) if folder else stat.S_ISREG(mode)):
                continue
            role = "its lessons folder" if folder else "an index file"
            if self.read_only:
                self._absent.add(path)
                self._problem(f"{path.name} is {what} where the store keeps {role}; {LEFT_AS_IT_IS}")
                continue
            aside = self._move_aside(path, "not-a-folder" if folder else "not-a-file")
            self._problem(f"{path.name} was {what} where the store keeps {role}; moved to {aside.name} "
                          "unread (nothing was deleted: look inside, then remove it); a new one was made")

    def _move_aside(self, path: Path, why: str = "corrupt") -> Path:
        base = f"{path.name}.{why}-{_utc_stamp()}"
        target = path.with_name(base)
        n = 1
        while target.exists():
            n += 1
            target = path.with_name(f"{base}-{n}")
        os.replace(path, target)
        return target

    def _open(self) -> dict[str, IndexEntry]:
        """Read both index files, repair or migrate what needs it, and match them with the journals.
        Returns every finished lesson's entry (what the index files hold afterwards)."""
        loaded = {path: LoadedIndex() if path in self._absent else load_index(path)
                  for path in (self.archive_path, self.path)}
        rewrite = not self.path.exists() or loaded[self.path].schema != STORE_SCHEMA
        for path, index in loaded.items():
            if index.damage or index.dropped:
                what = index.damage or f"{index.dropped} document(s) of the wrong shape"
                self._problem(f"{path.name} was damaged ({what}); {self._set_aside(path)}; "
                              f"{len(index.entries) + len(index.old)} lesson(s) salvaged from it")
                rewrite = True
        entries: dict[str, IndexEntry] = {}
        for index in loaded.values():  # sessions.json last: its entries are the newer ones
            entries.update(index.entries)
        rewrite |= self._write_carried_records(loaded.values(), entries)
        rewrite |= self._match_journals(entries)
        if rewrite and not self.read_only:
            self._write_indexes(entries)
        return entries

    def _write_carried_records(self, loaded: Iterable[LoadedIndex], entries: dict[str, IndexEntry]) -> bool:
        """Lessons whose record sits in an index (the previous layout, or salvage) get their journal."""
        carried = {sid: doc for index in loaded for sid, doc in index.old.items()}
        if self.read_only:  # hold them in memory, as the journals the kiosk would write
            for sid, doc in carried.items():
                kind = "checkpoint" if doc.state == "in_progress" else "final"
                created, saved = doc.entry["created_at"], doc.entry["saved_at"]
                self._held[sid] = JournalEntry(kind, doc.record, created, saved)
                if kind == "final":
                    entries[sid] = doc.entry
                else:
                    entries.pop(sid, None)
                    self._in_progress[sid] = {"created_at": created, "saved_at": saved}
            return False
        for sid, doc in carried.items():
            kind = "checkpoint" if doc.state == "in_progress" else "final"
            try:
                line = encode_line(make_entry(kind, doc.record, doc.entry["created_at"], doc.entry["saved_at"]))
            except StoreError as exc:
                self._problem(f"lesson {sid} could not be carried over: {exc}")
                continue
            write_atomic(self.journal_dir / journal_name(sid), line, sync_dir=False, sync_file=False)
            if kind == "final":
                entries[sid] = doc.entry
            else:
                entries.pop(sid, None)
        if carried:
            sync_all(self.journal_dir)  # durable before the index that no longer holds them is written
            log.warning("session store: %d lesson(s) moved into per-lesson journals", len(carried))
        return bool(carried)

    def _match_journals(self, entries: dict[str, IndexEntry]) -> bool:
        """Journals without an entry are lessons in progress (or finished ones whose index write a crash
        cut off); entries without a journal are dropped. Returns True if ``entries`` changed.

        A journal is matched by the session id inside it, not by its file name: one under another name
        (restored from a copy, renamed by hand) is renamed to the name its lesson expects, and its index
        entry, if any, is kept as it was (pending, synced or parked).
        """
        names: set[str] = set()
        if not self.read_only or (self.journal_dir not in self._absent and self.journal_dir.is_dir()):
            names = {e.name for e in os.scandir(self.journal_dir)
                     if e.name.endswith(SUFFIX) and not e.name.startswith(".") and e.is_file()}
        expected = {journal_name(sid): sid for sid in entries}
        changed = False
        for name in sorted(names - expected.keys()):
            path = self.journal_dir / name
            try:
                journal = read_journal(path)
            except FileNotFoundError:  # read-only beside a running kiosk: retention just deleted it
                names.discard(name)
                continue
            found = journal.entry
            if found is None and journal.bad_lines == 0:
                # Nothing but a line cut off by a crash: the lesson's first checkpoint never returned,
                # so nothing was saved. A normal power-cut outcome, not damage. (Read-only: it may be
                # the first line of a lesson the running kiosk is writing right now.)
                if not self.read_only:
                    path.unlink()
                    log.warning("session store: lessons/%s held only a line cut off by a crash; removed", name)
                continue
            if found is None:
                self._problem(f"lessons/{name} held no readable lesson; {self._set_aside(path)}")
                continue
            sid = found.record["session_id"]
            if sid in self._held:
                continue  # read-only: the index's own copy of that lesson wins, as the kiosk's rewrite would
            if journal_name(sid) != name:
                right = self.journal_dir / journal_name(sid)
                if right.exists() or sid in self._paths:  # its own journal is there too: keep that one
                    self._problem(f"lessons/{name} holds lesson {sid} stored elsewhere too; {self._set_aside(path)}")
                    continue
                if self.read_only:
                    self._paths[sid] = path
                else:
                    os.replace(path, right)
                    log.warning("session store: lessons/%s holds lesson %s; renamed to %s", name, sid, right.name)
                names.discard(name)
                names.add(right.name)
            if sid in entries:
                continue  # its entry says what became of it (pending, synced, parked)
            if found.kind == "final":
                entry = normalize_entry({"session_id": sid, "created_at": found.created_at,
                                         "saved_at": found.saved_at}, "pending")
                assert entry is not None
                entries[sid] = entry
                changed = True
            else:
                self._in_progress[sid] = {"created_at": found.created_at, "saved_at": found.saved_at}
        for name, sid in expected.items():
            if name in names or sid in self._held:
                continue
            gone = entries.pop(sid)
            changed = True
            if gone["state"] == "synced":
                log.info("session store: delivered lesson %s had no journal left (retention was cut off)", sid)
            else:
                self._problem(f"lesson {sid} ({gone['state']}) lost its journal file; it cannot be sent")
        return changed

    def _write_indexes(self, entries: dict[str, IndexEntry]) -> None:
        """Write both index files from scratch: delivered lessons to synced.json, the rest to sessions.json."""
        ordered = sorted(entries.values(), key=lambda e: e["created_at"])
        synced = [e for e in ordered if e["state"] == "synced"]
        active = [e for e in ordered if e["state"] != "synced"]

        def payload(docs: list[IndexEntry], meta: bool) -> bytes:
            data: dict[str, Any] = {TABLE: {str(i): d for i, d in enumerate(docs, 1)}}
            if meta:
                data["meta"] = {"1": {"schema": STORE_SCHEMA}}
            return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

        write_atomic(self.archive_path, payload(synced, False))
        write_atomic(self.path, payload(active, True))  # the commit point of a migration

    # -- lookups -------------------------------------------------------------------------------

    def _find(self, session_id: str) -> tuple[_Index | _MemoryIndex | None, IndexEntry] | None:
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

    def _waiting_redate(self, sid: str) -> tuple[_Index | _MemoryIndex, IndexEntry] | None:
        found = self._find(sid)
        if found is None or found[0] is None or found[1]["state"] != "synced":
            log.warning("store: lesson %s is not a delivered lesson here; its dates stay as they are", sid)
            return None
        return found[0], found[1]

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

