#!/usr/bin/env python3
"""Session store latency: per-turn checkpoint, save, open and retention, against the full-rewrite floor.

    .venv/bin/python scripts/bench_store.py                 # 10 / 1,000 / 5,000 stored lessons
    .venv/bin/python scripts/bench_store.py --sizes 10 1000 --lessons 10

For each history size N it writes a store in the previous layout (every record inside one tinydb
file), then:

- **before**: the previous store's write path on that file (a tinydb table of full records, every
  checkpoint and save a read-modify-write of the whole file through the atomic storage);
- **now**: :class:`appliance.store.sessions.SessionStore` opened on a copy (the first open migrates it), then
  whole lessons: ``--turns`` checkpoints with a growing record, save, mark_synced and
  apply_retention at the default cap of 5,000 (as the kiosk does after every lesson).

Records are realistic: 20 turns, ~4 KB of JSON. Everything runs on the real file system with fsync.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB
from tinydb.storages import Storage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.store.journal import write_atomic
from appliance.store.sessions import SessionStore

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "green", "apples",
         "fall", "from", "tall", "trees"]


def lesson(turns: int, sid: str | None = None) -> dict[str, Any]:
    """A record shaped like Lesson.to_record(): ~200 bytes per turn, ~4 KB at 20 turns."""
    sid = sid or str(uuid.uuid4())
    return {
        "schema": 1, "session_id": sid, "kiosk_id": "bench-kiosk", "started_at": "2026-01-01T09:00:00.000Z",
        "ended_at": "2026-01-01T09:10:00.000Z", "end_reason": "button", "plan_id": "plan-7",
        "targets": [{"word": w} for w in WORDS[:4]],
        "turns": [{"role": "learner" if i % 2 else "tutor", "at": f"2026-01-01T09:{i:02}:00.000Z",
                   "source": "voice", "text": " ".join(WORDS[(i + j) % len(WORDS)] for j in range(22))}
                  for i in range(turns)],
        "metrics": {"duration_s": 600.0, "learner_turns": turns // 2, "tutor_turns": turns - turns // 2,
                    "connect_ms": 80.5, "first_audio_ms": 210.1, "est_cost_usd": 0.12},
        "errors": [],
    }


class PreviousStorage(Storage):
    """The previous AtomicJSONStorage: parse the whole file on every read, rewrite it on every write."""

    def __init__(self, path: str) -> None:
        self._path = Path(path)

    def read(self) -> dict[str, Any] | None:
        try:
            return json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def write(self, data: dict[str, Any]) -> None:
        write_atomic(self._path, json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def previous_put(table: Any, record: dict[str, Any], state: str) -> None:
    """The previous SessionStore._put (checkpoint and save both went through it)."""
    q = Query()
    sid, now = record["session_id"], time.time()
    if table.contains(q.session_id == sid):
        table.update({"record": record, "state": state, "saved_at": now}, q.session_id == sid)
    else:
        table.insert({"session_id": sid, "record": record, "state": state, "created_at": now, "saved_at": now,
                      "synced_at": None})


def write_previous_layout(path: Path, n: int) -> None:
    now = time.time() - 86400
    docs = {}
    for i in range(n):
        rec = lesson(20)
        state = "pending" if i >= n - 3 else "synced"
        docs[str(i + 1)] = {"session_id": rec["session_id"], "record": rec, "state": state, "created_at": now + i,
                            "saved_at": now + i, "synced_at": now + i if state == "synced" else None}
    path.write_text(json.dumps({"sessions": docs, "meta": {"1": {"schema": 1}}}, separators=(",", ":")))


def timed(fn: Callable[[], Any], into: list[float]) -> Any:
    t = time.perf_counter()
    result = fn()
    into.append((time.perf_counter() - t) * 1000)
    return result


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def row(name: str, n: int, values: list[float]) -> str:
    if not values:
        return f"| {name} | {n:,} | – | – | – | 0 |"
    return (f"| {name} | {n:,} | {statistics.median(values):.2f} | {pct(values, 0.99):.2f} | {max(values):.2f} "
            f"| {len(values)} |")


def bench_size(root: Path, n: int, lessons: int, turns: int, old_ops: int) -> list[str]:
    old_dir, new_dir = root / f"old-{n}", root / f"new-{n}"
    old_dir.mkdir()
    write_previous_layout(old_dir / "sessions.json", n)
    shutil.copytree(old_dir, new_dir)
    file_mb = (old_dir / "sessions.json").stat().st_size / 1e6
    rows = []

    # Before: the full-rewrite shape.
    db = TinyDB(str(old_dir / "sessions.json"), storage=PreviousStorage)
    table = db.table("sessions")
    old_ck: list[float] = []
    old_save: list[float] = []
    done = 0
    while done < old_ops:
        rec = lesson(0)
        for t in range(1, turns + 1):
            if done >= old_ops:
                break
            rec = dict(rec, turns=lesson(t, rec["session_id"])["turns"])
            timed(lambda r=rec: previous_put(table, r, "in_progress"), old_ck)
            done += 1
        timed(lambda r=rec: previous_put(table, r, "pending"), old_save)
    db.close()
    rows.append(row(f"before: checkpoint (one {file_mb:.1f} MB file)", n, old_ck))
    rows.append(row("before: save", n, old_save))

    # Now: journals + index.
    opened: list[float] = []
    store = timed(lambda: SessionStore(new_dir), opened)
    migrate_ms = opened[0]
    store.close()
    reopen: list[float] = []
    for _ in range(3):
        timed(lambda: SessionStore(new_dir).close(), reopen)
    store = SessionStore(new_dir)
    ck: list[float] = []
    save: list[float] = []
    synced: list[float] = []
    retention: list[float] = []
    unsynced: list[float] = []
    for _ in range(lessons):
        rec = lesson(0)
        for t in range(1, turns + 1):
            rec = dict(rec, turns=lesson(t, rec["session_id"])["turns"])
            timed(lambda r=rec: store.checkpoint(r), ck)
        timed(lambda r=rec: store.save(r), save)
        timed(lambda r=rec: store.mark_synced(r["session_id"]), synced)
        timed(lambda: store.apply_retention(30, 5000), retention)
        timed(store.count_unsynced, unsynced)
    assert not store.problems, store.problems
    store.close()
    rows.append(row("now: checkpoint", n, ck))
    rows.append(row("now: save", n, save))
    rows.append(row("now: mark_synced", n, synced))
    rows.append(row("now: apply_retention (cap 5,000)", n, retention))
    rows.append(row("now: count_unsynced", n, unsynced))
    rows.append(row("now: open (steady state)", n, reopen))
    rows.append(row("now: first open (migrates the previous layout)", n, [migrate_ms]))
    return rows


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()}-core {model} ({platform.machine()}), Python {platform.python_version()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 5000])
    parser.add_argument("--lessons", type=int, default=20, help="whole lessons run on the new store per size")
    parser.add_argument("--turns", type=int, default=20, help="checkpoints per lesson")
    parser.add_argument("--old-ops", type=int, default=20, help="checkpoints measured on the previous shape")
    parser.add_argument("--dir", type=Path, default=None, help="where to build the stores (default: a temp dir)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.dir))
    try:
        print(f"Machine: {machine()}; stores in {root}")
        print(f"{args.lessons} lessons x {args.turns} checkpoints per size (now); {args.old_ops} checkpoints (before)")
        print()
        print("| operation | stored lessons | p50 ms | p99 ms | max ms | samples |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for n in args.sizes:
            for line in bench_size(root, n, args.lessons, args.turns, args.old_ops):
                print(line, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
