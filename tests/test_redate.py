"""Lessons delivered while the kiosk's clock was stale get their true dates at the companion once the
clock is synchronized (same boot), through a real companion and a real store."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.common.clock import iso_utc
from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.contract.dates import InvalidCorrection, apply_date_correction, dates_of, shift_dates, without_dates
from appliance.store.sessions import SessionStore
from appliance.uplink.client import CompanionClient
from appliance.uplink.sync import Syncer
from tests.clock_helpers import TRUE_NOW, YEARS_5, FakeTime, parse, stale_lesson
from tests.harness import API_KEY, KIOSK_ID

KEY = "device-key-0123456789abcdef"


@asynccontextmanager
async def companion_at(tmp_path: Path) -> AsyncIterator[tuple[CompanionServer, CompanionClient]]:
    server = CompanionServer(CompanionConfig(db_path=tmp_path / "companion.db", openai_api_key=API_KEY))
    await server.start()
    await server.provision(KIOSK_ID, KEY)
    client = CompanionClient(server.base_url, KEY, KIOSK_ID, timeout_s=5)
    try:
        yield server, client
    finally:
        await client.aclose()
        await server.stop()


def companion_rows(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT session_id, started_at, ended_at FROM sessions ORDER BY seq"))


async def test_lesson_delivered_under_a_stale_clock_is_redated_at_the_companion(tmp_path: Path) -> None:
    """Guards against stale dates staying at the companion for good: a lesson delivered while the clock
    was five years behind (companion reachable) is corrected there once network time arrives, also
    after the kiosk's process restarted in between (same boot)."""
    t = FakeTime(wall=TRUE_NOW - YEARS_5, synced=False)
    clock = t.clock()
    record = stale_lesson(t)
    sid = record["session_id"]
    async with companion_at(tmp_path) as (server, client):
        store = SessionStore(tmp_path / "state")
        store.save(record)
        assert await Syncer(store, client, clock=clock).drain()
        assert store.is_synced(sid)
        [delivered] = await client.sessions()
        assert delivered["metrics"]["clock_synced"] is False
        assert parse(delivered["started_at"]) == pytest.approx(TRUE_NOW - YEARS_5, abs=0.001)
        store.close()

        t.advance(100)  # network time arrives: the clock is stepped five years forward
        t.wall, t.synced = t.wall + YEARS_5, True
        store = SessionStore(tmp_path / "state")  # the kiosk was restarted meanwhile
        assert await Syncer(store, client, clock=clock).drain()

        [fixed] = await client.sessions()
        assert fixed["session_id"] == sid
        assert parse(fixed["started_at"]) == pytest.approx(TRUE_NOW, abs=0.001)
        assert parse(fixed["ended_at"]) == pytest.approx(TRUE_NOW + 30, abs=0.001)
        assert parse(fixed["turns"][0]["at"]) == pytest.approx(TRUE_NOW + 4, abs=0.001)
        assert parse(fixed["errors"][0]["at"]) == pytest.approx(TRUE_NOW + 9, abs=0.001)
        assert fixed["metrics"]["clock_synced"] is True
        assert fixed["metrics"]["clock_corrected_s"] == pytest.approx(YEARS_5, abs=0.01)
        # Nothing but the dates moved.
        dates = ("started_at", "ended_at")
        assert {k: v for k, v in fixed.items() if k not in (*dates, "turns", "errors", "metrics", "clock_anchor")} \
            == {k: v for k, v in delivered.items() if k not in (*dates, "turns", "errors", "metrics", "clock_anchor")}
        assert [{**turn, "at": None} for turn in fixed["turns"]] \
            == [{**turn, "at": None} for turn in delivered["turns"]]
        assert {k: v for k, v in fixed["metrics"].items() if not k.startswith("clock_")} \
            == {k: v for k, v in delivered["metrics"].items() if not k.startswith("clock_")}
        [(row_id, row_start, row_end)] = companion_rows(tmp_path / "companion.db")
        assert row_id == sid and parse(row_start) == pytest.approx(TRUE_NOW, abs=0.001)
        assert parse(row_end) == pytest.approx(TRUE_NOW + 30, abs=0.001)
        # The kiosk keeps the corrected record too, and asks only once.
        assert store.get(sid)["metrics"]["clock_synced"] is True  # type: ignore[index]
        assert [p for _, p in server.requests].count("/api/sessions/corrections") == 1
        assert await Syncer(store, client, clock=clock).drain()
        assert [p for _, p in server.requests].count("/api/sessions/corrections") == 1
        store.close()


async def test_companion_takes_only_date_corrections(tmp_path: Path) -> None:
    """A correction moves every date by clock_corrected_s and changes nothing else; anything more is
    refused and the stored lesson stays as it was. Applying the same correction twice is harmless."""
    from appliance.common.redate import correct_dates

    t = FakeTime(wall=TRUE_NOW - YEARS_5, synced=False)
    clock = t.clock()
    record = stale_lesson(t)
    synced_lesson = {**stale_lesson(FakeTime()), "session_id": "0b8f6c1e-3d4a-4f43-9a61-2b7f0f1a9c11"}
    t.wall, t.synced = t.wall + YEARS_5, True
    fixed = correct_dates(record, clock)
    assert fixed is not None
    async with companion_at(tmp_path) as (server, client):
        assert all(r["stored"] for r in await client.send_batch([record, synced_lesson]))
        [as_delivered, _] = await client.sessions()

        def refused(results: list[dict[str, Any]]) -> str:
            [result] = results
            assert "corrected" not in result
            return str(result["error"]["code"])

        texts = {**fixed, "turns": [{**fixed["turns"][0], "text": "words the learner never said"}]}
        assert refused(await client.send_corrections([texts])) == "invalid_correction"
        reason = {**fixed, "end_reason": "time_limit"}
        assert refused(await client.send_corrections([reason])) == "invalid_correction"
        duration = {**fixed, "metrics": {**fixed["metrics"], "duration_s": 3000.0}}
        assert refused(await client.send_corrections([duration])) == "invalid_correction"
        uneven = {**fixed, "ended_at": record["ended_at"]}  # one date not moved: the lesson would last years
        assert refused(await client.send_corrections([uneven])) == "invalid_correction"
        unknown = {**fixed, "session_id": "6f0c9b3e-1d2a-4b5c-8e7f-9a0b1c2d3e4f"}
        assert refused(await client.send_corrections([unknown])) == "unknown_session"
        moved_synced = {**synced_lesson, "started_at": "2031-01-01T00:00:00.000Z",
                        "metrics": {**synced_lesson["metrics"], "clock_corrected_s": 1.0}}
        assert refused(await client.send_corrections([moved_synced])) == "invalid_correction"
        assert (await client.sessions())[0] == as_delivered

        other_key = "device-key-of-another-kiosk-0123"
        await server.provision("kiosk-other", other_key)
        other = CompanionClient(server.base_url, other_key, "kiosk-other", timeout_s=5)
        try:
            assert refused(await other.send_corrections([{**fixed, "kiosk_id": "kiosk-other"}])) == "conflict"
            assert refused(await other.send_corrections([fixed])) == "forbidden"
        finally:
            await other.aclose()

        assert await client.send_corrections([fixed]) == [{"session_id": fixed["session_id"], "corrected": True}]
        corrected = (await client.sessions())[0]
        assert await client.send_corrections([fixed]) == [{"session_id": fixed["session_id"], "corrected": True}]
        assert (await client.sessions())[0] == corrected  # idempotent
        later = correct_dates({**record, "clock_anchor": {**record["clock_anchor"],
                                                          "offset_s": record["clock_anchor"]["offset_s"] - 60}}, clock)
        assert later is not None
        assert refused(await client.send_corrections([later])) == "invalid_correction"  # corrected once only
        assert (await client.sessions())[0] == corrected
        assert corrected["clock_anchor"] == record["clock_anchor"]  # nothing but the dates changed


async def test_older_companion_without_corrections_is_left_alone(tmp_path: Path) -> None:
    """A companion from before corrections answers 404: the kiosk stops asking, and still syncs."""
    from aiohttp import web

    from appliance.common.httpserve import start_http

    async def batch(request: web.Request) -> web.Response:
        sessions = (await request.json())["sessions"]
        return web.json_response({"results": [{"session_id": s["session_id"], "stored": True} for s in sessions]})

    app = web.Application()
    app.router.add_post("/api/sessions/batch", batch)
    runner, port = await start_http(app, "127.0.0.1", 0)
    t = FakeTime(wall=TRUE_NOW - YEARS_5, synced=False)
    clock = t.clock()
    store = SessionStore(tmp_path / "state")
    record = stale_lesson(t)
    store.save(record)
    client = CompanionClient(f"http://127.0.0.1:{port}", KEY, KIOSK_ID, timeout_s=5)
    try:
        assert await Syncer(store, client, clock=clock).drain()
        assert [r["session_id"] for r in store.awaiting_redate()] == [record["session_id"]]
        t.wall, t.synced = t.wall + YEARS_5, True
        assert await Syncer(store, client, clock=clock).drain()
        assert store.awaiting_redate() == []
        assert store.get(record["session_id"]) == record  # kept as delivered, like the companion's copy
    finally:
        await client.aclose()
        await runner.cleanup()
        store.close()


async def test_lesson_from_an_earlier_boot_is_not_awaited(tmp_path: Path) -> None:
    """After a reboot the old monotonic offset means nothing: such a lesson is delivered as it is and
    never waits for a correction."""
    t = FakeTime(wall=TRUE_NOW - YEARS_5, synced=False)
    record = stale_lesson(t)
    record = {**record, "clock_anchor": {**record["clock_anchor"], "boot_id": "an-earlier-boot"}}
    async with companion_at(tmp_path) as (_server, client):
        store = SessionStore(tmp_path / "state")
        store.save(record)
        assert await Syncer(store, client, clock=t.clock()).drain()
        assert store.is_synced(record["session_id"]) and store.awaiting_redate() == []
        store.close()


# -- date corrections --------------------------------------------------------------------------------

def _dated_record(turns: int, errors: int, stale: bool) -> dict[str, Any]:
    base = 1_637_320_000.0
    return {"schema": 1, "session_id": "0b8f6c1e-3d4a-4f43-9a61-2b7f0f1a9c11", "kiosk_id": "k1",
            "started_at": iso_utc(base), "ended_at": iso_utc(base + 60 + turns), "end_reason": "button",
            "plan_id": None, "targets": [],
            "turns": [{"role": "learner", "text": f"turn {i}", "at": iso_utc(base + i + 0.123), "source": "text"}
                      for i in range(turns)],
            "errors": [{"code": "gap", "message": "m", "at": iso_utc(base + 30 + i)} for i in range(errors)],
            "metrics": {"duration_s": 60.0 + turns, "clock_synced": not stale},
            **({"clock_anchor": {"boot_id": "b", "offset_s": 12.5}} if stale else {})}


@settings(max_examples=150, deadline=None)
@given(turns=st.integers(0, 5), errors=st.integers(0, 3), shift=st.floats(-1e9, 1e9).map(lambda s: round(s, 3)),
       mutation=st.sampled_from(["none", "text", "end_reason", "duration", "one_date", "extra_key", "drop_turn"]))
def test_a_date_correction_changes_the_dates_and_nothing_else(turns: int, errors: int, shift: float,
                                                               mutation: str) -> None:
    stored = _dated_record(turns, errors, stale=True)
    correction = shift_dates(stored, shift)
    if mutation == "text" and turns:
        correction["turns"][0]["text"] = "changed"
    elif mutation == "end_reason":
        correction["end_reason"] = "idle"
    elif mutation == "duration":
        correction["metrics"]["duration_s"] += 1
    elif mutation == "one_date" and abs(shift) > 0.01:
        correction["ended_at"] = stored["ended_at"]
    elif mutation == "extra_key":
        correction["note"] = "x"
    elif mutation == "drop_turn" and turns:
        correction["turns"] = correction["turns"][1:]
    else:
        mutation = "none"
    if mutation != "none":
        with pytest.raises(InvalidCorrection):
            apply_date_correction(stored, correction)
        return
    updated = apply_date_correction(stored, correction)
    assert without_dates(updated) == without_dates(stored) and updated["clock_anchor"] == stored["clock_anchor"]
    assert [value for _, value in dates_of(updated)] == [value for _, value in dates_of(correction)]
    assert updated["metrics"]["clock_synced"] is True and updated["metrics"]["clock_corrected_s"] == shift
    assert apply_date_correction(updated, correction) is updated  # applied again: nothing changes
    if abs(shift) > 0.01:
        with pytest.raises(InvalidCorrection):  # a lesson is corrected once; a recorded-synced one never
            apply_date_correction(updated, shift_dates(stored, shift / 2))
        with pytest.raises(InvalidCorrection):
            apply_date_correction(_dated_record(turns, errors, stale=False), shift_dates(stored, shift))
