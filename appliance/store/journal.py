"""One file per lesson: an append-only journal of JSON lines, plus the crash-safe file primitives.

Why a journal: rewriting every stored lesson at each turn made a checkpoint cost grow with the
history (0.6 s per turn with 5,000 lessons). A checkpoint now appends one fsynced line to its own
lesson's file, whatever the history. The last complete line wins; a line torn by a power cut is
ignored, and the next append starts on a fresh line so it cannot glue onto the torn one.

A finished lesson's journal is replaced atomically (temporary file, fsync, rename, directory fsync)
by one ``final`` line, so finished lessons are small to read and never half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from appliance.contract.record import OutgoingRecord, UncheckedRecord


class StoreError(Exception):
    """The store cannot be read or written (disk full, read-only, unwritable record)."""


JOURNAL_VERSION = 1
LOST_LESSON_MARKER = "STELLA-UNSAVED-LESSON"
"""A lesson the disk refused at exit goes into the kiosk's log as ``<marker> <json>``; `stella-kiosk
sessions import` looks for it. Defined with the store because the store writes it and the daemon reads it."""
KINDS = ("checkpoint", "final")
SUFFIX = ".jsonl"
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SURROGATES = re.compile("[\ud800-\udfff]")


def journal_name(session_id: str) -> str:
    """The file name of a lesson's journal. Ids that are not plain file names (``../x``, very long,
    odd characters) get a hash instead, so no record can write outside the store."""
    if _SAFE_NAME.fullmatch(session_id):
        return session_id + SUFFIX
    digest = hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]
    return f"~{digest}{SUFFIX}"


def clean_text(value: str) -> str:
    """Replace lone surrogates (they come from JSON events like ``"\\ud800"``) by U+FFFD: UTF-8
    cannot encode them, and a record must always be writable."""
    return _SURROGATES.sub("\ufffd", value)


def sanitize(value: Any) -> Any:
    """A copy of a JSON-like value with every string (keys included) made encodable."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k: sanitize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [sanitize(v) for v in value]
    return value


class JournalLine(TypedDict):
    """One line of a journal."""

    v: int
    kind: str
    """``checkpoint`` or ``final``."""
    created_at: float
    saved_at: float
    record: OutgoingRecord


def encode_line(entry: JournalLine) -> bytes:
    """One JSON line (no newline inside: JSON escapes them). Never raises anything but StoreError."""
    try:
        try:
            text = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
            return text.encode("utf-8") + b"\n"
        except UnicodeEncodeError:
            text = json.dumps(sanitize(entry), ensure_ascii=False, separators=(",", ":"))
            return text.encode("utf-8") + b"\n"
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreError(f"the lesson record cannot be stored as JSON: {exc}") from None


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, payload: bytes, *, sync_dir: bool = True, sync_file: bool = True) -> None:
    """Replace ``path`` by ``payload``: after a crash the file is either the old or the new version.

    ``sync_file=False`` / ``sync_dir=False`` are for batches (migration, import) that make everything
    durable at once with :func:`sync_all` before they commit."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            if sync_file:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if sync_dir:
            fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None


def sync_all(directory: Path) -> None:
    """Flush every written file to disk (one ``sync`` instead of thousands of fsyncs), then the directory."""
    os.sync()
    fsync_dir(directory)


def append_line(path: Path, line: bytes, *, check_tail: bool) -> bool:
    """Append one line and fsync; returns True if the file was created (its directory was fsynced).

    ``check_tail``: look at the file's last byte first and start a new line if a crash left a torn
    one (done once per file per process; afterwards this process knows its own appends are whole).
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            created = size == 0
            if check_tail and size > 0:
                with open(path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        line = b"\n" + line
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(path.parent)
        return created
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from None


@dataclass
class JournalEntry:
    """The newest complete line of a journal."""

    kind: str
    record: UncheckedRecord
    created_at: float
    saved_at: float


@dataclass
class JournalRead:
    entry: JournalEntry | None
    bad_lines: int
    """Complete lines that were not valid entries (a torn last line is not counted)."""
    total_lines: int


def _number(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return default


def parse_entry(raw: bytes) -> JournalEntry | None:
    """One line as an entry, or None if it is not a well-formed one."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("kind") not in KINDS:
        return None
    record = data.get("record")
    if not isinstance(record, dict) or not isinstance(record.get("session_id"), str) or not record["session_id"]:
        return None
    saved_at = _number(data.get("saved_at"), 0.0)
    return JournalEntry(str(data["kind"]), sanitize(record), _number(data.get("created_at"), saved_at), saved_at)


def read_journal(path: Path) -> JournalRead:
    """The last well-formed line wins. Raises OSError if the file cannot be read."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn_tail = not data.endswith(b"\n")
    complete = [ln for ln in (lines[:-1] if torn_tail else lines) if ln.strip()]
    tail = lines[-1] if torn_tail and lines[-1].strip() else None
    candidates = complete + ([tail] if tail is not None else [])
    bad = 0
    entry = None
    for i in range(len(candidates) - 1, -1, -1):
        entry = parse_entry(candidates[i])
        if entry is not None:
            break
        if not (tail is not None and i == len(candidates) - 1):
            bad += 1
    return JournalRead(entry, bad, len(candidates))


def make_entry(kind: str, record: OutgoingRecord, created_at: float, saved_at: float) -> JournalLine:
    return {"v": JOURNAL_VERSION, "kind": kind, "created_at": created_at, "saved_at": saved_at, "record": record}
