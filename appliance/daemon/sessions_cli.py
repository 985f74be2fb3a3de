"""`stella-kiosk sessions list | show ID | export | import`.

list, show and export get a store opened read-only (``SessionStore(read_only=True)``), so they can run
beside the kiosk that owns it and never write, move or repair a file under it: index files are replaced
atomically, and a lesson's journal is only appended to (a line still being written is ignored).
import writes, under the kiosk's lock (``sessions_command`` takes it before it opens the store).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from appliance.config import EX_CONFIG, ConfigError, load_config
from appliance.contract.record import UncheckedRecord
from appliance.store.index import StoredLesson
from appliance.store.journal import LOST_LESSON_MARKER
from appliance.store.lock import AlreadyRunning, InstanceLock
from appliance.store.sessions import SessionStore, StoreError

CSV_FIELDS = ["session_id", "kiosk_id", "started_at", "ended_at", "end_reason", "plan_id", "state",
              "duration_s", "learner_turns", "tutor_turns", "learner_words", "tutor_words",
              "targets_used", "connect_ms", "est_cost_usd", "transcript"]


def list_sessions(store: SessionStore, out: TextIO = sys.stdout) -> int:
    docs = store.documents()
    for problem in store.problems:  # repairs made while opening or reading the store
        print(f"store: {problem}", file=sys.stderr)
    if not docs:
        print("no lessons stored", file=out)
        return 0
    print(f"{'started (UTC)':<24} {'length':>7} {'end':<11} {'turns':>5} {'state':<11} session", file=out)
    for doc in docs:
        r = doc["record"]
        m = r.get("metrics", {})
        state = doc["state"]
        print(f"{r.get('started_at', '?'):<24} {m.get('duration_s', 0):6.0f}s {r.get('end_reason', '?'):<11} "
              f"{len(r.get('turns', [])):>5} {state:<11} {r['session_id']}", file=out)
        if state == "parked":
            print(f"{'':>24} parked: {doc.get('parked_reason', '')}", file=out)
    return 0


def find(store: SessionStore, prefix: str) -> StoredLesson | None:
    matches = [d for d in store.documents() if d["session_id"].startswith(prefix)]
    return matches[0] if len(matches) == 1 else None


def show_session(store: SessionStore, prefix: str, out: TextIO = sys.stdout) -> int:
    doc = find(store, prefix)
    if doc is None:
        print(f"stella-kiosk: no single lesson matches {prefix!r}", file=sys.stderr)
        return 1
    r = doc["record"]
    print(f"session {r['session_id']} ({doc['state']})", file=out)
    print(f"  {r['started_at']} → {r['ended_at']}, ended by {r['end_reason']}, plan {r.get('plan_id')}", file=out)
    for turn in r.get("turns", []):
        typed = " (typed)" if turn.get("source") == "text" else ""
        print(f"  {turn['at'][11:19]} {turn['role']:>7}: {turn['text']}{typed}", file=out)
    print(json.dumps(r.get("metrics", {}), indent=2), file=out)
    return 0


def export_sessions(store: SessionStore, fmt: str, out: TextIO = sys.stdout) -> int:
    docs = store.documents()
    if fmt == "jsonl":
        for doc in docs:
            out.write(json.dumps(doc["record"], ensure_ascii=False) + "\n")
        return 0
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for doc in docs:
        r = doc["record"]
        m = r.get("metrics", {})
        row = {k: r.get(k) for k in CSV_FIELDS if k in r}
        row.update({k: m.get(k) for k in CSV_FIELDS if k in m})
        row["state"] = doc["state"]
        row["transcript"] = " | ".join(f"{t['role']}: {t['text']}" for t in r.get("turns", []))
        writer.writerow(row)
    return 0


def read_importable(lines: Iterable[str]) -> tuple[list[UncheckedRecord], int]:
    """Lesson records found in ``lines``: the kiosk's ``STELLA-UNSAVED-LESSON {...}`` log lines (as
    `journalctl -o cat` prints them), `journalctl -o json` entries with a LESSON_RECORD field, or
    plain JSONL records (`sessions export`). Returns the records and how many lines were skipped."""
    records: list[UncheckedRecord] = []
    skipped = 0
    for line in lines:
        text = line.strip()
        if not text:
            continue
        candidate: Any = None
        if LOST_LESSON_MARKER in text:
            candidate = _json(text.split(LOST_LESSON_MARKER, 1)[1].strip())
        else:
            parsed = _json(text)
            if isinstance(parsed, dict) and isinstance(parsed.get("LESSON_RECORD"), str):
                candidate = _json(parsed["LESSON_RECORD"])
            else:
                candidate = parsed
        if isinstance(candidate, dict) and isinstance(candidate.get("session_id"), str) \
                and isinstance(candidate.get("turns"), list):
            records.append(candidate)
        else:
            skipped += 1
    return records, skipped


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def import_sessions(store: SessionStore, lines: Iterable[str], out: TextIO = sys.stdout) -> int:
    """Add recovered lessons to the store as waiting for the companion; ones already stored are kept."""
    records, skipped = read_importable(lines)
    added = 0
    for record in records:
        if store.get(record["session_id"]) is None:
            store.save(record)
            added += 1
    print(f"imported {added} lesson(s); {len(records) - added} already stored; {skipped} line(s) skipped",
          file=out)
    return 0 if records or not skipped else 1


def sessions_command(args: argparse.Namespace) -> int:
    """`sessions list | show | export` only read: they open the store read-only, because a running kiosk
    owns it and a second writer (or a repair made under it) would lose its updates. `import` writes,
    so it takes the kiosk's lock first."""
    try:
        state_dir = load_config(args.config).kiosk.state_dir
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    if args.action == "import":
        return _import_sessions(state_dir, args.file)
    try:
        store = SessionStore(state_dir, read_only=True)
    except StoreError as exc:
        print(f"stella-kiosk: {exc}", file=sys.stderr)
        return 1
    if args.action == "list":
        return list_sessions(store)
    if args.action == "show":
        return show_session(store, args.session_id)
    return export_sessions(store, args.format)


def _import_sessions(state_dir: Path, source: str) -> int:
    """Import under the kiosk's lock, taken before the store is opened (opening may repair it): two
    writers on one store would lose each other's updates."""
    lock = InstanceLock(state_dir)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        print(f"stella-kiosk: {exc}; then import again", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"stella-kiosk: cannot lock {lock.path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        try:
            store = SessionStore(state_dir)
        except StoreError as exc:
            print(f"stella-kiosk: {exc}", file=sys.stderr)
            return 1
        try:
            if source == "-":
                return import_sessions(store, sys.stdin)
            try:
                with open(source, encoding="utf-8", errors="replace") as lines:
                    return import_sessions(store, lines)
            except OSError as exc:
                print(f"stella-kiosk: cannot read {source}: {exc.strerror or exc}", file=sys.stderr)
                return 1
        finally:
            store.close()
    finally:
        lock.release()
