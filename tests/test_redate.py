"""Lessons delivered while the kiosk's clock was stale get their true dates at the companion once the
clock is synchronized (same boot), through a real companion and a real store."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.core.lesson import Lesson
from appliance.store.sessions import SessionStore
from appliance.uplink.client import CompanionClient
from appliance.uplink.sync import Syncer
from tests.harness import API_KEY, KIOSK_ID
from tests.test_clock import DAY, TRUE_NOW, FakeTime, parse

YEARS_5 = 5 * 365 * DAY
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


def stale_lesson(t: FakeTime) -> dict[str, Any]:
    """A lesson on a clock five years behind, not synchronized: 4 s to a turn, an error at 9 s, 30 s long."""
    lesson = Lesson(kiosk_id=KIOSK_ID, clock=t.clock())
    t.advance(4)
    lesson.transcript.add_typed("hello from the past")
    t.advance(5)
    lesson.add_error("late_audio", "a gap in the tutor's audio")
    t.advance(21)
    return lesson.to_record("button")


def companion_rows(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT session_id, started_at, ended_at FROM sessions ORDER BY seq"))


async def test_lesson_delivered_under_a_stale_clock_is_redated_at_the_companion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards against stale dates staying at the companion for good: a lesson delivered while the clock
    was five years behind (companion reachable) is corrected there once network time arrives, also
    after the kiosk's process restarted in between (same boot)."""
    t = FakeTime(wall=TRUE_NOW - YEARS_5, synced=False)
    clock = t.clock()
    monkeypatch.setattr("appliance.uplink.sync.system_clock", lambda: clock)
    record = stale_lesson(t)
    sid = record["session_id"]
    async with companion_at(tmp_path) as (server, client):
        store = SessionStore(tmp_path / "state")
        store.save(record)
        assert await Syncer(store, client).drain()
        assert store.is_synced(sid)
        [delivered] = await client.sessions()
        assert delivered["metrics"]["clock_synced"] is False
        assert parse(delivered["started_at"]) == pytest.approx(TRUE_NOW - YEARS_5, abs=0.001)
        store.close()

        t.advance(100)  # network time arrives: the clock is stepped five years forward
        t.wall, t.synced = t.wall + YEARS_5, True
        store = SessionStore(tmp_path / "state")  # the kiosk was restarted meanwhile
        assert await Syncer(store, client).drain()

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
        asked = len(server.requests)
        assert await Syncer(store, client).drain()
        assert [p for _, p in list(server.requests)[asked:] if p != "/api/sessions/batch"] == []
        store.close()
