"""What one sync round does with each lesson and when the next round comes, seen from a companion on
127.0.0.1 that answers every lesson as a test scripts it: stored, refused for good, or not stored this
time. The lessons' states are read back from the real store on disk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

from appliance.common.httpserve import start_http
from appliance.store.sessions import SessionStore
from appliance.uplink.client import CompanionClient
from appliance.uplink.sync import Syncer
from tests.harness import KIOSK_ID
from tests.test_offline import record

SLACK_S = 0.3
"""A request on loopback plus a busy 2-core machine's scheduling delay stay well under this."""

Answer = Callable[[dict[str, Any]], dict[str, Any] | None]
"""One lesson's result in a batch answer (None: the lesson is left out of the answer)."""


def stored(lesson: dict[str, Any]) -> dict[str, Any]:
    return {"session_id": lesson["session_id"], "stored": True}


class ScriptedCompanion:
    """The companion's batch and heartbeat endpoints; ``answer`` decides each lesson's result."""

    def __init__(self, answer: Answer = stored) -> None:
        self.answer = answer
        self.batches: list[tuple[float, list[str]]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.hold_heartbeat: asyncio.Event | None = None
        """While set to an unset event, a heartbeat's answer waits for it."""
        self._changed = asyncio.Event()
        app = web.Application()
        app.router.add_post("/api/sessions/batch", self._batch)
        app.router.add_post("/api/heartbeat", self._heartbeat)
        self._app = app
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        self._runner, port = await start_http(self._app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _batch(self, request: web.Request) -> web.Response:
        lessons = (await request.json())["sessions"]
        self.batches.append((time.monotonic(), [s["session_id"] for s in lessons]))
        self._changed.set()
        results = [r for r in (self.answer(s) for s in lessons) if r is not None]
        return web.json_response({"results": results})

    async def _heartbeat(self, request: web.Request) -> web.Response:
        body = await request.json()
        if self.hold_heartbeat is not None:
            await self.hold_heartbeat.wait()
        self.heartbeats.append(body)
        self._changed.set()
        return web.json_response({"ok": True})

    async def until(self, condition: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


@asynccontextmanager
async def syncing(tmp_path: Path, answer: Answer, lessons: list[dict[str, Any]],
                  **options: Any) -> AsyncIterator[tuple[ScriptedCompanion, Syncer, SessionStore]]:
    companion = ScriptedCompanion(answer)
    await companion.start()
    store = SessionStore(tmp_path / "state")
    for lesson in lessons:
        store.save(lesson)
    client = CompanionClient(companion.url, "device-key-0123456789abcdef", KIOSK_ID, timeout_s=2)
    syncer = Syncer(store, client, jitter=lambda: 1.0, **options)
    task: asyncio.Task[None] | None = None

    def start() -> None:
        nonlocal task
        task = asyncio.create_task(syncer.run())

    syncer.start = start  # type: ignore[attr-defined]
    try:
        yield companion, syncer, store
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        await companion.stop()
        store.close()


async def test_a_lesson_the_companion_did_not_store_this_time_is_retried_after_a_backoff(tmp_path: Path) -> None:
    """A lesson the companion answers with a passing error (``busy``) or leaves out of its answer stays
    waiting and is sent again after the backoff delay (base, then doubled), not at once in a loop, and
    never parked. Mutation seen surviving before this test: the per-lesson retry ignored (the round
    counted as a success, the lesson sent again only a whole period later)."""
    busy, left_out = record(1), record(2)

    def answer(lesson: dict[str, Any]) -> dict[str, Any] | None:
        if lesson["session_id"] == busy["session_id"]:
            return {"session_id": lesson["session_id"], "error": {"code": "busy", "message": "try later"}}
        return None

    async with syncing(tmp_path, answer, [busy, left_out], base_backoff_s=0.3, max_backoff_s=5,
                       period_s=60) as (companion, syncer, store):
        syncer.start()  # type: ignore[attr-defined]
        await companion.until(lambda: len(companion.batches) >= 3, timeout=10)
        assert syncer.failures >= 2
        states = {store.state_of(busy["session_id"]), store.state_of(left_out["session_id"])}
    times = [at for at, _ in companion.batches]
    assert 0.3 <= times[1] - times[0] < 0.3 + SLACK_S, times
    assert 0.6 <= times[2] - times[1] < 0.6 + SLACK_S, times
    assert all(sorted(ids) == sorted([busy["session_id"], left_out["session_id"]]) for _, ids in companion.batches)
    assert states == {"pending"}


async def test_a_heartbeat_follows_every_sync_round(tmp_path: Path) -> None:
    """A round that ends while a heartbeat is on its way is followed by another heartbeat, which tells
    the school what the round changed (nothing waiting any more). Defect seen failing here: the wake-up
    set by the round was cleared once the earlier heartbeat returned, so the next one came only
    ``heartbeat_s`` later (300 s by default)."""
    lesson = record(3)
    async with syncing(tmp_path, stored, [lesson], heartbeat_s=300, period_s=300,
                       report=lambda: {"state": "idle"}) as (companion, syncer, store):
        syncer.report = lambda: {"state": "idle", "waiting": syncer.waiting}
        companion.hold_heartbeat = asyncio.Event()
        syncer.start()  # type: ignore[attr-defined]
        await asyncio.wait_for(syncer.round_done.wait(), 10)  # the first heartbeat is still held
        assert store.state_of(lesson["session_id"]) == "synced"
        companion.hold_heartbeat.set()
        await companion.until(lambda: len(companion.heartbeats) >= 2, timeout=5)
    assert companion.heartbeats[-1]["waiting"] == 0
    assert all(b["kiosk_id"] == KIOSK_ID for b in companion.heartbeats)
