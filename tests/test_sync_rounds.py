"""What one sync round does with each lesson and when the next round comes, seen from a companion on
127.0.0.1 that answers every lesson as a test scripts it: stored, refused for good, or not stored this
time. The lessons' states are read back from the real store on disk."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from appliance.common.httpserve import start_http
from appliance.store.sessions import SessionStore
from appliance.uplink.client import CompanionClient
from appliance.uplink.sync import Syncer
from tests.harness import KIOSK_ID
from tests.harness import numbered_lesson as record

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
        self.heartbeat_times: list[float] = []
        self.heartbeat_status = 200
        self.corrections: list[list[str]] = []
        self.correct: Answer = lambda lesson: {"session_id": lesson["session_id"], "corrected": True}
        self.corrections_status = 200
        self.hold_heartbeat: asyncio.Event | None = None
        """While set to an unset event, a heartbeat's answer waits for it."""
        self._changed = asyncio.Event()
        app = web.Application()
        app.router.add_post("/api/sessions/batch", self._batch)
        app.router.add_post("/api/heartbeat", self._heartbeat)
        app.router.add_post("/api/sessions/corrections", self._corrections)
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
        self.heartbeat_times.append(time.monotonic())
        self._changed.set()
        if self.heartbeat_status != 200:
            return web.json_response({"error": {"code": "nope", "message": "no"}}, status=self.heartbeat_status)
        return web.json_response({"ok": True})

    async def _corrections(self, request: web.Request) -> web.Response:
        lessons = (await request.json())["sessions"]
        self.corrections.append([s["session_id"] for s in lessons])
        self._changed.set()
        if self.corrections_status != 200:
            return web.json_response({"error": {"code": "gone", "message": "no"}}, status=self.corrections_status)
        return web.json_response({"results": [r for r in (self.correct(s) for s in lessons) if r is not None]})

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


async def test_every_lessons_outcome_is_reported_and_kept(tmp_path: Path) -> None:
    """One batch, three answers: stored (synced), refused for good (parked with the companion's reason,
    never sent again), not stored this time (still waiting). Each outcome reaches ``on_attempt`` with its
    lesson's id; a result that names no lesson changes nothing."""
    kept, refused, busy, taken = record(1), record(2), record(3), record(4)

    def answer(lesson: dict[str, Any]) -> dict[str, Any] | None:
        sid = lesson["session_id"]
        if sid == refused["session_id"]:
            return {"session_id": sid, "error": {"code": "invalid_record", "message": "turns: not a list"}}
        if sid == taken["session_id"]:
            return {"session_id": sid, "error": {"code": "conflict"}}
        if sid == busy["session_id"]:
            return {"session_id": sid, "error": {"code": "busy", "message": "later"}}
        return stored(lesson)

    reports: list[tuple[str, bool]] = []
    async with syncing(tmp_path, answer, [kept, refused, busy, taken],
                       on_attempt=lambda s, ok: reports.append((s, ok)),
                       base_backoff_s=60) as (companion, syncer, store):
        syncer.lesson_waiting()
        syncer.lesson_waiting()
        assert syncer.waiting == 2  # counted until the next look at the store
        assert not await syncer.drain()
        await asyncio.sleep(0)  # the reports are handed to the loop
        assert syncer.waiting == 4
        assert sorted(reports) == sorted([(kept["session_id"], True), (refused["session_id"], False),
                                          (busy["session_id"], False), (taken["session_id"], False)])
        assert store.state_of(kept["session_id"]) == "synced" and store.state_of(busy["session_id"]) == "pending"
        assert [(r["session_id"], why) for r, why in store.parked()] == [
            (refused["session_id"], "invalid_record: turns: not a list"), (taken["session_id"], "conflict:")]
        companion.answer = stored
        reports.clear()
        assert await syncer.drain()
        await asyncio.sleep(0)
        assert reports == [(busy["session_id"], True)] and syncer.waiting == 0
        assert [ids for _, ids in companion.batches][-1] == [busy["session_id"]]


async def test_a_result_without_a_lesson_id_is_ignored(tmp_path: Path) -> None:
    """Results that name no lesson (no id, an id that is not text) sit beside the real one: the lesson is
    marked delivered and the round ends well."""
    lesson = record(4)

    async def answer_with_junk(request: web.Request) -> web.Response:
        sessions = (await request.json())["sessions"]
        return web.json_response({"results": [{"stored": True}, {"session_id": 7, "stored": True},
                                              *(stored(s) for s in sessions)]})

    app = web.Application()
    app.router.add_post("/api/sessions/batch", answer_with_junk)
    runner, port = await start_http(app, "127.0.0.1", 0)
    store = SessionStore(tmp_path / "state")
    store.save(lesson)
    client = CompanionClient(f"http://127.0.0.1:{port}", "device-key-0123456789abcdef", KIOSK_ID, timeout_s=2)
    try:
        assert await Syncer(store, client).drain()
        assert store.state_of(lesson["session_id"]) == "synced"
    finally:
        await client.aclose()
        await runner.cleanup()
        store.close()


async def test_a_long_outbox_goes_in_batches_oldest_first_in_one_round(tmp_path: Path) -> None:
    lessons = [record(i) for i in range(5)]
    async with syncing(tmp_path, stored, lessons, batch_size=2) as (companion, syncer, _store):
        assert await syncer.drain()
        assert syncer.idle.is_set() and syncer.waiting == 0
    ids = [r["session_id"] for r in lessons]
    assert [batch for _, batch in companion.batches] == [ids[0:2], ids[2:4], ids[4:5]]


async def test_an_unreachable_companion_reports_every_lesson_of_the_batch_unsent(tmp_path: Path) -> None:
    lessons = [record(i) for i in range(3)]
    reports: list[tuple[str, bool]] = []
    async with syncing(tmp_path, stored, lessons, on_attempt=lambda s, ok: reports.append((s, ok))) \
            as (companion, syncer, store):
        await companion.stop()
        assert not await syncer.drain()
        await asyncio.sleep(0)
        assert sorted(reports) == sorted((r["session_id"], False) for r in lessons)
        assert all(store.state_of(r["session_id"]) == "pending" for r in lessons)


async def test_heartbeats_go_every_heartbeat_s_while_idle_and_a_failure_never_stops_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Idle, heartbeats follow each other ``heartbeat_s`` apart; one refused (503), one the companion does
    not know (404, logged once) and a status snapshot that raises end none of them."""
    calls = [0]

    def report() -> dict[str, Any]:
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("a broken snapshot")
        return {"state": "idle", "n": calls[0]}

    caplog.set_level(logging.DEBUG, logger="appliance.uplink.sync")
    async with syncing(tmp_path, stored, [], heartbeat_s=0.3, period_s=300, report=report) \
            as (companion, syncer, _store):
        syncer.start()  # type: ignore[attr-defined]
        await companion.until(lambda: len(companion.heartbeats) >= 3, timeout=10)
        assert syncer.heartbeats_sent >= 2 and syncer.heartbeat_delivered.is_set()
        companion.heartbeat_status = 503
        assert not await syncer.send_heartbeat()
        companion.heartbeat_status = 404
        before = syncer.heartbeats_sent
        assert not await syncer.send_heartbeat()
        assert not await syncer.send_heartbeat()
        assert syncer.heartbeats_sent == before
        companion.heartbeat_status = 200
        count = len(companion.heartbeats)
        await companion.until(lambda: len(companion.heartbeats) >= count + 2, timeout=10)
    first, second = companion.heartbeat_times[count:count + 2]  # two idle heartbeats in a row
    assert 0.3 - 0.05 <= second - first < 0.3 + SLACK_S, companion.heartbeat_times
    assert [h.get("n") for h in companion.heartbeats[:2]] == [1, 3]  # the broken snapshot sent nothing
    assert sum("does not know heartbeats" in r.getMessage() for r in caplog.records) == 1
    assert any("could not build or send the heartbeat" in r.getMessage() for r in caplog.records)
    no_report, _ = await _syncer_without_report(tmp_path)
    assert not await no_report.send_heartbeat()
    async with syncing(tmp_path / "direct", stored, [], report=lambda: {"state": "idle"}) as (_c, direct, _s):
        assert [await direct.send_heartbeat() for _ in range(3)] == [True, True, True]
        assert direct.heartbeats_sent == 3
        direct.report = lambda: {}["missing"]
        assert not await direct.send_heartbeat() and direct.heartbeats_sent == 3


async def _syncer_without_report(tmp_path: Path) -> tuple[Syncer, None]:
    store = SessionStore(tmp_path / "bare")
    syncer = Syncer(store, CompanionClient("http://127.0.0.1:9", "k" * 20, KIOSK_ID))
    store.close()
    return syncer, None


async def test_corrected_dates_follow_refusals_stop_and_missing_answers_are_asked_again(tmp_path: Path) -> None:
    """Three lessons delivered under a stale clock, then the clock synchronized: corrections go in batches
    of ``batch_size``; a corrected one is kept corrected here, a refused one is never asked about again,
    one the companion left out of its answer is asked about at the next round."""
    from tests.clock_helpers import TRUE_NOW, YEARS_5, FakeTime, stale_lesson

    t = FakeTime(wall=TRUE_NOW - YEARS_5, synced=False)
    lessons = [stale_lesson(t) for _ in range(5)]
    ok, left_out, refused, refused_bare, ok2 = (r["session_id"] for r in lessons)

    def correct(lesson: dict[str, Any]) -> dict[str, Any] | None:
        sid = lesson["session_id"]
        if sid == refused:
            return {"session_id": sid, "error": {"code": "not_a_correction", "message": "text changed"}}
        if sid == refused_bare:
            return {"session_id": sid, "corrected": False}
        return None if sid == left_out else {"session_id": sid, "corrected": True}

    async with syncing(tmp_path, stored, lessons, batch_size=3, clock=t.clock()) as (companion, syncer, store):
        companion.correct = correct
        assert await syncer.drain()
        assert companion.corrections == []  # nothing to correct while the clock is stale
        assert sorted(r["session_id"] for r in store.awaiting_redate()) == sorted(r["session_id"] for r in lessons)
        t.wall, t.synced = t.wall + YEARS_5, True
        assert await syncer.drain()
        assert companion.corrections == [[ok, left_out, refused], [refused_bare, ok2]]
        assert [r["session_id"] for r in store.awaiting_redate()] == [left_out]
        for sid, before in ((ok, lessons[0]), (ok2, lessons[4])):
            fixed = store.get(sid)
            assert fixed is not None and fixed["started_at"] != before["started_at"]
        assert store.get(refused) == lessons[2] and store.get(refused_bare) == lessons[3]
        companion.correct = lambda lesson: {"session_id": lesson["session_id"], "corrected": True}
        assert await syncer.drain()
        assert companion.corrections[-1] == [left_out] and store.awaiting_redate() == []


async def test_a_companion_refusing_corrections_is_asked_again_and_one_without_them_is_left_alone(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from tests.clock_helpers import TRUE_NOW, YEARS_5, FakeTime, stale_lesson

    t = FakeTime(wall=TRUE_NOW - YEARS_5, synced=False)
    lessons = [stale_lesson(t) for _ in range(3)]
    caplog.set_level(logging.INFO, logger="appliance.uplink.sync")
    async with syncing(tmp_path, stored, lessons, batch_size=2, clock=t.clock()) as (companion, syncer, store):
        assert await syncer.drain()
        t.wall, t.synced = t.wall + YEARS_5, True
        companion.corrections_status = 503
        assert not await syncer.send_corrections()  # asked again with the next round
        assert len(store.awaiting_redate()) == 3 and len(companion.corrections) == 1
        companion.corrections_status = 404
        assert await syncer.send_corrections()
        assert [len(b) for b in companion.corrections[1:]] == [2, 1] and store.awaiting_redate() == []
        assert await syncer.send_corrections()
    assert sum("does not take corrected dates" in r.getMessage() for r in caplog.records) == 1


async def test_a_lesson_corrected_here_before_a_stop_is_not_sent_again(tmp_path: Path) -> None:
    """A stop between keeping a lesson's corrected record and clearing its flag leaves a lesson flagged
    whose record needs no correction: it is no longer asked about, and the lessons after it still are."""
    from appliance.common.redate import correct_dates
    from appliance.store.journal import encode_line, make_entry, write_atomic
    from tests.clock_helpers import TRUE_NOW, YEARS_5, FakeTime, stale_lesson

    t = FakeTime(wall=TRUE_NOW - YEARS_5, synced=False)
    done, waiting = stale_lesson(t), stale_lesson(t)
    async with syncing(tmp_path, stored, [done, waiting], clock=t.clock()) as (companion, syncer, store):
        assert await syncer.drain()
        t.wall, t.synced = t.wall + YEARS_5, True
        fixed = correct_dates(done, t.clock())
        assert fixed is not None
        write_atomic(store._journal(done["session_id"]), encode_line(make_entry("final", fixed, 0.0, 0.0)))
        assert await syncer.drain()
        assert companion.corrections == [[waiting["session_id"]]] and store.awaiting_redate() == []


async def test_a_lesson_saved_before_the_clock_was_set_leaves_with_its_true_dates(tmp_path: Path) -> None:
    """Saved while the clock was five years behind, sent once it is synchronized (same boot): the companion
    receives the corrected dates and the store keeps the corrected record, so nothing is left to correct."""
    from appliance.common.redate import correct_dates
    from tests.clock_helpers import TRUE_NOW, YEARS_5, FakeTime, stale_lesson

    t = FakeTime(wall=TRUE_NOW - YEARS_5, synced=False)
    lesson = stale_lesson(t)
    received: list[dict[str, Any]] = []

    def answer(sent: dict[str, Any]) -> dict[str, Any]:
        received.append(sent)
        return stored(sent)

    async with syncing(tmp_path, answer, [lesson], clock=t.clock()) as (_companion, syncer, store):
        t.wall, t.synced = t.wall + YEARS_5, True
        expected = correct_dates(lesson, t.clock())
        assert expected is not None and expected["started_at"] != lesson["started_at"]
        assert await syncer.drain()
        assert [r["started_at"] for r in received] == [expected["started_at"]]
        assert store.get(lesson["session_id"]) == expected and store.awaiting_redate() == []


async def test_a_store_that_cannot_be_read_ends_the_round_as_a_failure(tmp_path: Path) -> None:
    async with syncing(tmp_path, stored, [record(5)]) as (companion, syncer, _store):
        (tmp_path / "state" / "sessions.json").write_bytes(b"\xff\xfe")
        assert not await syncer.drain()
        assert companion.batches == []
