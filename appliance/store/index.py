"""Reading the store's index files defensively: validate every document, salvage what a damaged
file still holds, and recognise the previous layout (full records inside ``sessions.json``).

Nothing here writes; :mod:`appliance.store.sessions` decides what to move aside and rewrite. Why so careful:
the kiosk runs unattended for a school year, and a store that raises at start-up makes systemd
restart it forever. A damaged file must cost the damaged part, never the kiosk.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from appliance.contract.record import UncheckedRecord
from appliance.store.journal import sanitize

INDEX_STATES = ("pending", "synced", "parked")
OLD_STATES = ("in_progress", *INDEX_STATES)
TABLE = "sessions"
#: Where a salvage scan tries to decode an object: index entries and old documents start with
#: ``session_id``, lesson records with ``schema``.
_OBJECT_START = re.compile(r'\{\s*"(?:session_id|schema)"\s*:')


class IndexEntry(TypedDict):
    """What the index keeps of a lesson (never its record)."""

    session_id: str
    state: str
    """``pending``, ``synced`` or ``parked``; ``in_progress`` for a lesson that has only a journal."""
    created_at: float
    saved_at: float
    synced_at: float | None
    parked_reason: str | None
    synced_at_trusted: bool
    """``synced_at`` was read from a clock known to be synchronized (retention may count age from it)."""
    redate_pending: bool
    """Delivered before the clock was synchronized: its corrected dates are still to be sent."""


class StoredLesson(IndexEntry):
    """A lesson's index entry with its record, as `stella-kiosk sessions` lists them."""

    record: UncheckedRecord


@dataclass
class OldDocument:
    """A lesson from the previous layout (or a bare record found by salvage): it carries its record."""

    entry: IndexEntry
    state: str
    record: UncheckedRecord


@dataclass
class LoadedIndex:
    entries: dict[str, IndexEntry] = field(default_factory=dict)
    old: dict[str, OldDocument] = field(default_factory=dict)
    damage: str | None = None
    """Why the file as a whole could not be read (it is moved aside), or None."""
    dropped: int = 0
    """Documents of the wrong shape that were skipped."""
    schema: int | None = None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


def normalize_entry(doc: Any, state: Any = None) -> IndexEntry | None:
    """An index entry in its one well-formed shape, or None (then the lesson's journal, if any,
    decides: a finished one becomes ``pending`` — sending again is harmless, losing it is not)."""
    if not isinstance(doc, dict):
        return None
    sid = doc.get("session_id")
    if not isinstance(sid, str) or not sid:
        return None
    state = doc.get("state") if state is None else state
    if state not in INDEX_STATES:
        return None
    created = _number(doc.get("created_at"))
    saved = _number(doc.get("saved_at"))
    created = created if created is not None else (saved if saved is not None else 0.0)
    reason = doc.get("parked_reason")
    synced = state == "synced"
    return {
        "session_id": sanitize(sid),
        "state": state,
        "created_at": created,
        "saved_at": saved if saved is not None else created,
        "synced_at": _number(doc.get("synced_at")) if synced else None,
        # Missing (an entry from an older kiosk): not trusted, so retention re-stamps it rather than
        # aging it from a date that may have been read on a stale clock.
        "synced_at_trusted": synced and doc.get("synced_at_trusted") is True,
        "redate_pending": synced and doc.get("redate_pending") is True,
        "parked_reason": (reason if isinstance(reason, str) else "") if state == "parked" else None,
    }


def classify(doc: Any) -> IndexEntry | OldDocument | None:
    """An index entry, a document carrying its record (old layout, or a bare record), or None."""
    if not isinstance(doc, dict):
        return None
    if "record" in doc:
        record = doc["record"]
        if not isinstance(record, dict) or not isinstance(record.get("session_id"), str) or not record["session_id"]:
            return None
        state = doc["state"] if doc.get("state") in OLD_STATES else "pending"
        entry = normalize_entry({**doc, "session_id": record["session_id"]},
                                state if state in INDEX_STATES else "pending")
        assert entry is not None
        return OldDocument(entry, state, sanitize(record))
    if "state" in doc:
        return normalize_entry(doc)
    if isinstance(doc.get("session_id"), str) and doc["session_id"]:
        # A lesson record on its own (salvaged from a truncated old file): keep it, send it again.
        entry = normalize_entry({"session_id": doc["session_id"]}, "pending")
        assert entry is not None
        return OldDocument(entry, "pending", sanitize(doc))
    return None


def _add(result: LoadedIndex, item: IndexEntry | OldDocument | None) -> None:
    if item is None:
        result.dropped += 1
    elif isinstance(item, OldDocument):
        result.old[item.entry["session_id"]] = item
        result.entries.pop(item.entry["session_id"], None)
    else:
        result.entries[item["session_id"]] = item
        result.old.pop(item["session_id"], None)


def salvage_scan(text: str, result: LoadedIndex) -> None:
    """Decode every complete lesson object still present in a damaged file's text."""
    decoder = json.JSONDecoder()
    end = 0
    for match in _OBJECT_START.finditer(text):
        if match.start() < end:
            continue
        try:
            obj, stop = decoder.raw_decode(text, match.start())
        except (ValueError, RecursionError):
            continue
        item = classify(obj)
        if item is not None:
            _add(result, item)
            end = stop


def load_index(path: Path) -> LoadedIndex:
    """Read an index file; never raises for bad content (OSError other than a missing file does)."""
    result = LoadedIndex()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return result
    if not raw.strip():
        return result
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        result.damage = "not UTF-8 text"
        salvage_scan(raw.decode("utf-8", "replace"), result)
        return result
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        result.damage = "not JSON (truncated or garbage)"
        salvage_scan(text, result)
        return result
    if not isinstance(data, dict):
        result.damage = f"not a session database (the top level is {type(data).__name__})"
        if isinstance(data, list):
            for doc in data:
                _add(result, classify(doc))
        return result
    meta = data.get("meta")
    if isinstance(meta, dict):
        for doc in meta.values():
            if isinstance(doc, dict) and isinstance(doc.get("schema"), int) and not isinstance(doc["schema"], bool):
                result.schema = doc["schema"]
    table = data.get(TABLE, {})
    if isinstance(table, dict):
        docs = list(table.values())
    elif isinstance(table, list):
        result.damage = "wrong shape (the sessions table is a list)"
        docs = table
    else:
        result.damage = f"wrong shape (the sessions table is {type(table).__name__})"
        docs = []
    for doc in docs:
        _add(result, classify(doc))
    return result
