#!/usr/bin/env python3
"""How long the session store stalls the kiosk's event loop, with a long history stored.

    .venv/bin/python scripts/bench_loop_stall.py                  # 5,000 stored lessons, 30 lessons
    .venv/bin/python scripts/bench_loop_stall.py --stored 1000 --lessons 10

The kiosk's event loop paces the microphone in 20 ms frames, so any stall over a frame is heard. This
runs whole lessons (a checkpoint per turn, then a save and retention, as the kiosk does) through the
kiosk's own store handle (:class:`appliance.store.worker.AsyncStore`, one worker thread) while a probe
on the loop wakes every 5 ms and records how late it woke. As the floor, the same lessons are written
by calling the store directly on the loop (what a naive kiosk would do). Prints max / p99 lateness.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.store.sessions import SessionStore
from appliance.store.worker import AsyncStore
from scripts.bench_store import lesson, machine, write_previous_layout

PROBE_S = 0.005


async def probe(lateness: list[float], stop: asyncio.Event) -> None:
    """Wake every 5 ms; record how much later than asked each wake-up came."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        asked = loop.time() + PROBE_S
        await asyncio.sleep(PROBE_S)
        lateness.append(max(0.0, loop.time() - asked) * 1000)


async def run_lessons(store: SessionStore, lessons: int, turns: int, on_loop: bool) -> list[float]:
    lateness: list[float] = []
    stop = asyncio.Event()
    prober = asyncio.create_task(probe(lateness, stop))
    handle = AsyncStore(store)
    for _ in range(lessons):
        record = lesson(turns)
        for t in range(1, turns + 1):
            partial = dict(record, turns=record["turns"][:t], end_reason="interrupted")
            if on_loop:
                store.checkpoint(partial)
            else:
                handle.checkpoint_soon(partial)
            await asyncio.sleep(0.02)  # turns arrive over time; the loop keeps pacing audio meanwhile
        if on_loop:
            store.save(record)
            store.apply_retention(30, 5000)
        else:
            await handle.save(record)
            await handle.run("apply_retention", 30, 5000)
    stop.set()
    await prober
    handle._executor.shutdown(wait=True)
    return lateness


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    over = sum(1 for v in values if v > 50)
    return f"| {name} | {len(values)} | {p99:.1f} | {ordered[-1]:.1f} | {over} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stored", type=int, default=5000, help="lessons already in the store")
    parser.add_argument("--lessons", type=int, default=30, help="lessons run during the measurement")
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="stella-stall-"))
    try:
        print(f"machine: {machine()}; {args.stored} lessons stored; {args.lessons} lessons x {args.turns} turns")
        print("| store writes | probe wake-ups | p99 late (ms) | max late (ms) | stalls > 50 ms |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for name, on_loop in (("on the event loop (floor)", True), ("store thread (kiosk)", False)):
            state = root / name.split()[0]
            state.mkdir()
            write_previous_layout(state / "sessions.json", args.stored)
            store = SessionStore(state)  # migrates once, outside the measurement
            started = time.perf_counter()
            lateness = asyncio.run(run_lessons(store, args.lessons, args.turns, on_loop))
            store.close()
            print(summary(name, lateness) + f"  ({time.perf_counter() - started:.1f} s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
