"""Opening the store: what is in the way moved aside, damaged indexes salvaged, journals matched, the
previous layout migrated. A mixin of :class:`~appliance.store.sessions.SessionStore` (same state).

Damage never stops the kiosk: a file that cannot be read as it should is moved aside, whatever it still
holds is salvaged, the index is rebuilt from the journals on disk, and each event is logged at CRITICAL
and listed in ``problems``. Read-only, nothing is moved or written: the repairs are held in memory.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from appliance.store.index import TABLE, IndexEntry, LoadedIndex, load_index, normalize_entry
from appliance.store.journal import (
    SUFFIX,
    JournalEntry,
    StoreError,
    encode_line,
    journal_name,
    make_entry,
    read_journal,
    sync_all,
    write_atomic,
)

log = logging.getLogger(__name__)

STORE_SCHEMA = 2
"""1: full records inside sessions.json; 2: journals + index."""
LEFT_AS_IT_IS = "left as it is (read-only here: the kiosk sets it aside at its next start)"


def _utc_stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())




class StoreRepair:
    state_dir: Path
    path: Path
    archive_path: Path
    journal_dir: Path
    read_only: bool
    problems: list[str]
    _absent: set[Path]
    _held: dict[str, JournalEntry]
    _paths: dict[str, Path]
    _warned: set[str]
    _in_progress: dict[str, dict[str, float]]

    def _journal(self, session_id: str) -> Path:
        raise NotImplementedError

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
