"""Local session store (tinydb) with crash-safe writes.

TinyDB's default JSON storage rewrites its file in place, so a power cut while the file shrinks
leaves it corrupt. :class:`AtomicJSONStorage` writes a temporary file, fsyncs it, renames it over
the old one and fsyncs the directory: after a crash the file is either the old or the new version.
A finished session is written before the kiosk says it is saved, and only marked synced after the
companion confirmed it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage

log = logging.getLogger(__name__)

STORE_SCHEMA = 1


class StoreError(Exception):
    """The store cannot be read or written (disk full, read-only, corrupt file)."""


class AtomicJSONStorage(Storage):
    """TinyDB storage whose every write is atomic and durable."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._path.parent.mkdir(parents=True, exist_ok=True)

    def read(self) -> dict[str, dict[str, Any]] | None:
        try:
            text = self._path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self._path}: {exc.strerror or exc}") from None
        if not text.strip():
            return None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise StoreError(f"{self._path} is not valid JSON ({exc}); it was kept untouched") from None
        if not isinstance(data, dict):
            raise StoreError(f"{self._path} does not hold a session database")
        return data

    def write(self, data: dict[str, dict[str, Any]]) -> None:
        tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._path)
            dir_fd = os.open(self._path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write {self._path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        pass


class SessionStore:
    """Lessons on this kiosk, each with its sync state.

    States: ``in_progress`` (a checkpoint of a running lesson, rewritten at every completed turn),
    ``pending`` (finished, not yet confirmed by the companion), ``synced``, and ``parked`` (the
    companion rejected it for good; kept with the reason, never retried automatically).
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / "sessions.json"
        try:
            self._db = TinyDB(self.path, storage=AtomicJSONStorage)
            self._sessions = self._db.table("sessions")
            meta = self._db.table("meta")
            if not meta.all():
                meta.insert({"schema": STORE_SCHEMA})
        except OSError as exc:
            raise StoreError(f"cannot open the session store in {state_dir}: {exc.strerror or exc}") from None

    def _put(self, record: dict[str, Any], state: str) -> None:
        q = Query()
        session_id = record["session_id"]
        now = time.time()
        if self._sessions.contains(q.session_id == session_id):
            self._sessions.update({"record": record, "state": state, "saved_at": now}, q.session_id == session_id)
        else:
            self._sessions.insert({"session_id": session_id, "record": record, "state": state,
                                   "created_at": now, "saved_at": now, "synced_at": None})

    def checkpoint(self, record: dict[str, Any]) -> None:
        """Durably keep a lesson in progress (its record as it would be if the power went now)."""
        self._put(record, "in_progress")

    def save(self, record: dict[str, Any]) -> None:
        """Durably keep a finished lesson until the companion has it; raises StoreError if it could not."""
        self._put(record, "pending")

    def recover_interrupted(self) -> list[dict[str, Any]]:
        """Close lessons a crash or power cut left in progress; they become pending (``interrupted``)."""
        q = Query()
        docs = self._sessions.search(q.state == "in_progress")
        for doc in docs:
            record = dict(doc["record"])
            record["end_reason"] = "interrupted"
            self._sessions.update({"record": record, "state": "pending"}, q.session_id == doc["session_id"])
        return [dict(doc["record"], end_reason="interrupted") for doc in docs]

    def apply_retention(self, keep_synced_days: float, max_lessons: int) -> int:
        """Delete synced lessons older than ``keep_synced_days``, then the oldest synced ones while
        there are more than ``max_lessons``. Unsynced lessons are never deleted: when they alone
        exceed the cap, say so loudly. Returns how many were deleted."""
        q = Query()
        cutoff = time.time() - keep_synced_days * 86400
        removed = self._sessions.remove((q.state == "synced") & (q.synced_at < cutoff))
        excess = len(self._sessions) - max_lessons
        if excess > 0:
            synced = [d for d in self._docs() if d["state"] == "synced"][:excess]
            if synced:
                removed += self._sessions.remove(doc_ids=[d.doc_id for d in synced])
            if len(self._sessions) > max_lessons:
                log.error("session store is full: %d lessons waiting for the companion exceed the cap of %d; "
                          "nothing unsynced is deleted — check the companion connection",
                          len(self._sessions), max_lessons)
        return len(removed) if isinstance(removed, list) else int(removed or 0)

    def mark_synced(self, session_id: str) -> None:
        q = Query()
        self._sessions.update({"state": "synced", "synced_at": time.time()}, q.session_id == session_id)

    def park(self, session_id: str, reason: str) -> None:
        """The companion will never accept this record: keep it aside with the reason."""
        q = Query()
        self._sessions.update({"state": "parked", "parked_reason": reason}, q.session_id == session_id)

    def get(self, session_id: str) -> dict[str, Any] | None:
        q = Query()
        doc = self._sessions.get(q.session_id == session_id)
        return dict(doc["record"]) if doc else None

    def state_of(self, session_id: str) -> str | None:
        q = Query()
        doc = self._sessions.get(q.session_id == session_id)
        return doc["state"] if doc else None

    def is_synced(self, session_id: str) -> bool:
        return self.state_of(session_id) == "synced"

    def unsynced(self) -> list[dict[str, Any]]:
        """Finished records not yet confirmed by the companion, oldest first."""
        return [d["record"] for d in self._docs() if d["state"] == "pending"]

    def parked(self) -> list[tuple[dict[str, Any], str]]:
        return [(d["record"], d.get("parked_reason", "")) for d in self._docs() if d["state"] == "parked"]

    def documents(self) -> list[dict[str, Any]]:
        """Every stored lesson with its state, oldest first (for `stella-kiosk sessions`)."""
        return [dict(d) for d in self._docs()]

    def records(self) -> Iterator[dict[str, Any]]:
        for doc in self._docs():
            yield doc["record"]

    def _docs(self) -> list[Any]:
        return sorted(self._sessions.all(), key=lambda d: d.get("created_at", 0))

    def __len__(self) -> int:
        return len(self._sessions)

    def close(self) -> None:
        self._db.close()
