"""The store's two index files as tables: tinydb written atomically on disk, or held in memory.

Why its own module: every index write must survive a power cut (temporary file, fsync, rename,
directory fsync) and cost one write however many entries change; a store opened read-only (beside
a kiosk that owns it) needs the same interface with every write refused.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, cast

from tinydb import TinyDB
from tinydb.storages import Storage
from tinydb.table import Document

from appliance.store.index import TABLE, IndexEntry, normalize_entry
from appliance.store.journal import (
    StoreError,
    write_atomic,
)

log = logging.getLogger(__name__)

READ_ONLY = "the session store was opened read-only (a running kiosk owns it)"


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


class DiskIndex:
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


class MemoryIndex:
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


