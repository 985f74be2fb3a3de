"""The companion at fleet scale, over real HTTP on SQLite and on a private PostgreSQL: limits that hold
across concurrent requests, instances and restarts; budgets from the day's counter; strict records;
no 5xx for hostile bodies; cross-kiosk conflicts; throttled key guessing; retention; heartbeats."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.companion.client import CompanionClient, CompanionError
from appliance.companion.server import CompanionConfig, CompanionServer
from tests.test_companion import SK, FakeOpenAI, record

KEY_A, KEY_B = "key-a-0123456789abcdef", "key-b-0123456789abcdef"
A = {"Authorization": f"Bearer {KEY_A}"}
B = {"Authorization": f"Bearer {KEY_B}"}


class FakeClock:
    """Wall time the test moves forward (windows and days pass without waiting)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "c.db") if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[FakeOpenAI, str]]:
    fake = FakeOpenAI()
    url = await fake.start()
    yield fake, url
    await fake.runner.cleanup()


@asynccontextmanager
async def companions(db: str, upstream_url: str, count: int = 1, clock: FakeClock | None = None,
                     **options: Any) -> AsyncIterator[list[CompanionServer]]:
    """``count`` companion instances on one database (as behind a load balancer), kiosks a and b provisioned."""
    servers = []
    try:
        for _ in range(count):
            config = CompanionConfig(db_path=db, openai_base_url=upstream_url, openai_api_key=SK, **options)
            server = CompanionServer(config, clock=clock) if clock else CompanionServer(config)
            await server.start()
            servers.append(server)
        await servers[0].provision("kiosk-a", KEY_A)
        await servers[0].provision("kiosk-b", KEY_B)
        yield servers
    finally:
        for server in servers:
            await server.stop()


def mints(fake: FakeOpenAI) -> int:
    return sum(1 for path, _, _ in fake.requests if path == "/v1/realtime/client_secrets")


async def burst(urls: list[str], path: str, count: int, headers: dict[str, str],
                body: Any = None) -> list[httpx.Response]:
    """``count`` simultaneous POSTs, spread round-robin over the instances."""
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=count)) as http:
        return await asyncio.gather(*(http.post(f"{urls[i % len(urls)]}{path}", headers=headers,
                                                json=body if body is not None else {}) for i in range(count)))


# -- 1, 2: rate limits in the database --------------------------------------------------------------
@pytest.mark.parametrize("instances", [1, 2])
async def test_token_limit_holds_for_concurrent_requests_across_instances(db, upstream, instances) -> None:
    """Guards against a per-process limit checked before any request was recorded: 150 simultaneous token
    requests from one kiosk (spread over two companions on one database) all got 200 against 60/hour."""
    fake, url = upstream
    async with companions(db, url, instances, tokens_per_hour=60) as servers:
        responses = await burst([s.base_url for s in servers], "/api/realtime-token", 150, A)
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) == 60 and statuses.count(429) == 90, statuses
        assert mints(fake) == 60
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.json()["error"]["code"] == "rate_limited" and int(refused.headers["Retry-After"]) > 0
        # Another kiosk has its own bucket.
        assert (await burst([servers[-1].base_url], "/api/realtime-token", 1, B))[0].status_code == 200


async def test_token_limit_survives_a_restart_and_failed_mints_give_the_slot_back(db, upstream) -> None:
    """Guards against a limit forgotten on restart, and against failed upstream mints using up the hour."""
    fake, url = upstream
    clock = FakeClock()
    async with companions(db, url, clock=clock, tokens_per_hour=3) as [server]:
        fake.secrets_status = 500
        for _ in range(5):  # one at a time: a slot is held while its mint is in flight
            assert (await burst([server.base_url], "/api/realtime-token", 1, A))[0].status_code == 502
        fake.secrets_status = 200
        assert [r.status_code for r in await burst([server.base_url], "/api/realtime-token", 2, A)] == [200, 200]
    async with companions(db, url, clock=clock, tokens_per_hour=3) as [server]:
        statuses = sorted(r.status_code for r in await burst([server.base_url], "/api/realtime-token", 3, A))
        assert statuses == [200, 429, 429]
        clock.now += 3601  # the sliding hour has passed
        assert (await burst([server.base_url], "/api/realtime-token", 1, A))[0].status_code == 200


async def test_planner_is_limited_before_the_upstream_call(db, upstream) -> None:
    """Guards against 200 simultaneous plan requests becoming 200 upstream planner calls."""
    fake, url = upstream
    async with companions(db, url, 2, plans_per_hour=5) as servers:
        responses = await burst([s.base_url for s in servers], "/api/planner", 40, A)
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) == 5 and statuses.count(429) == 35
        assert sum(1 for path, _, _ in fake.requests if path == "/v1/chat/completions") == 5


# -- 3: daily budgets from the counter ------------------------------------------------------------
async def test_budget_counts_lessons_by_the_companions_day_and_per_kiosk_overrides(db, upstream) -> None:
    """Guards against the budget following the kiosk's clock (a record dated 2020 was not counted today)
    and against one budget for every kiosk."""
    _fake, url = upstream
    clock = FakeClock()
    async with companions(db, url, clock=clock, daily_minutes=2.0) as [server]:
        a = CompanionClient(server.base_url, KEY_A, "kiosk-a")
        b = CompanionClient(server.base_url, KEY_B, "kiosk-b")
        try:
            await a.summarize(record(started_at="2020-01-01T10:00:00.000Z", ended_at="2020-01-01T10:02:30.000Z",
                                     metrics={"duration_s": 150.0}))
            with pytest.raises(CompanionError) as info:
                await a.token()
            assert info.value.status == 429 and info.value.code == "daily_budget_exhausted"
            await b.token()  # b has its own minutes
            assert await server.storage.set_daily_minutes("kiosk-a", 5.0)
            await a.token()  # a's own budget is larger
            assert await server.storage.set_daily_minutes("kiosk-b", 1.0)
            await b.summarize(record("kiosk-b", metrics={"duration_s": 61.0}))
            with pytest.raises(CompanionError, match="1 lesson minutes"):
                await b.token()
            assert await server.storage.set_daily_minutes("kiosk-b", None)  # back to the default (2)
            await b.token()
            assert not await server.storage.set_daily_minutes("kiosk-nobody", 3.0)
            server.config = CompanionConfig(**{**server.config.__dict__, "daily_minutes": 0.0, "tokens_per_hour": 99})
            await server.storage.set_daily_minutes("kiosk-a", 2.0)
            with pytest.raises(CompanionError, match="daily_budget_exhausted"):
                await a.token()
            clock.now += 86400  # a new day on the companion's clock
            await a.token()
        finally:
            await a.aclose()
            await b.aclose()


# -- 4: records type-checked ----------------------------------------------------------------------
BAD_RECORDS = {
    "string duration": {"metrics": {"duration_s": "abc"}},
    "negative duration": {"metrics": {"duration_s": -1e9}},
    "negative cost": {"metrics": {"duration_s": 1.0, "est_cost_usd": -5}},
    "bool as count": {"metrics": {"learner_turns": True}},
    "negative token count": {"metrics": {"usage": {"input_tokens": -3}}},
    "dashes as id": {"session_id": "--------"},
    "upper-case uuid": {"session_id": str(uuid.uuid4()).upper()},
    "schema true": {"schema": True},
    "schema 1.0": {"schema": 1.0},
}


@pytest.mark.parametrize("name", list(BAD_RECORDS))
async def test_records_with_wrong_types_are_refused_and_do_not_break_the_kiosk(db, upstream, name) -> None:
    """Guards against `duration_s: "abc"` being stored (every later token request of the kiosk was a 500),
    `-1e9` bypassing the budget, `--------` as a session id and `schema: true` passing as 1."""
    _fake, url = upstream
    async with companions(db, url, daily_minutes=1.0) as [server], httpx.AsyncClient() as http:
        r = await http.post(f"{server.base_url}/api/summarize", headers=A, json=record(**BAD_RECORDS[name]))
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_record", r.text
        r = await http.post(f"{server.base_url}/api/sessions/batch", headers=A,
                            json={"sessions": [record(**BAD_RECORDS[name])]})
        assert r.json()["results"][0]["error"]["code"] == "invalid_record"
        r = await http.post(f"{server.base_url}/api/realtime-token", headers=A, json={})
        assert r.status_code == 200


async def test_non_finite_numbers_are_refused(db, upstream) -> None:
    """Python's JSON parser accepts NaN and Infinity: neither may reach a budget sum."""
    _fake, url = upstream
    async with companions(db, url) as [server], httpx.AsyncClient() as http:
        for number in ("NaN", "Infinity", "-Infinity"):
            body = json.dumps(record()).replace('"duration_s": 180.0', f'"duration_s": {number}')
            r = await http.post(f"{server.base_url}/api/summarize", headers=A, content=body.encode())
            assert r.status_code == 400 and "duration_s" in r.json()["error"]["message"]


# -- 5: no 5xx for hostile bodies ------------------------------------------------------------------
async def test_deep_nesting_and_lone_surrogates_are_client_errors(db, upstream) -> None:
    """Guards against a RecursionError in body parsing and a UnicodeEncodeError in the database driver
    (both answered 500)."""
    _fake, url = upstream
    async with companions(db, url) as [server], httpx.AsyncClient() as http:
        base = server.base_url
        for path in ("/api/planner", "/api/realtime-token", "/api/summarize", "/api/sessions/batch", "/api/heartbeat"):
            r = await http.post(f"{base}{path}", headers=A, content=b"[" * 100_000 + b"]" * 100_000)
            assert r.status_code == 400, (path, r.status_code)
            r = await http.post(f"{base}{path}", headers=A, content=b'{"a": ' * 40 + b"1" + b"}" * 40)
            assert r.status_code == 400, (path, r.status_code)
        r = await http.post(f"{base}/api/realtime-token", headers=A, content=b'{"plan_id": "plan_\\ud800"}')
        assert r.status_code == 404
        rec = json.dumps(record(plan_id="p\x00")).replace('"text": "hi"', '"text": "hi \\udfff there\\u0000"')
        r = await http.post(f"{base}/api/summarize", headers=A, content=rec.encode())
        assert r.status_code == 200, r.text
        [stored] = await server.storage.sessions("kiosk-a")
        assert stored["turns"][0]["text"] == "hi \ufffd there" and stored["plan_id"] == "p"
        r = await http.get(f"{base}/api/sessions", headers=A, params={"since": "2026\x00"})
        assert r.status_code == 400


# -- 6: cross-kiosk session ids ---------------------------------------------------------------------
async def test_a_session_id_owned_by_another_kiosk_is_a_conflict(db, upstream) -> None:
    """Guards against kiosk b getting `stored: true` for a session id kiosk a already stored (b's lesson
    was silently dropped)."""
    _fake, url = upstream
    async with companions(db, url) as [server], httpx.AsyncClient() as http:
        mine = record()
        assert (await http.post(f"{server.base_url}/api/summarize", headers=A, json=mine)).status_code == 200
        theirs = record("kiosk-b", session_id=mine["session_id"], end_reason="voice_stop")
        r = await http.post(f"{server.base_url}/api/summarize", headers=B, json=theirs)
        assert r.status_code == 409 and r.json()["error"]["code"] == "conflict"
        r = await http.post(f"{server.base_url}/api/sessions/batch", headers=B,
                            json={"sessions": [theirs, record("kiosk-b")]})
        results = r.json()["results"]
        assert results[0]["error"]["code"] == "conflict" and "stored" not in results[0]
        assert results[1]["stored"] is True
        again = await http.post(f"{server.base_url}/api/sessions/batch", headers=A, json={"sessions": [mine]})
        assert again.json()["results"][0] == {"session_id": mine["session_id"], "stored": True, "duplicate": True}
        [kept] = [s for s in await server.storage.sessions(None) if s["session_id"] == mine["session_id"]]
        assert kept["kiosk_id"] == "kiosk-a" and kept["end_reason"] == "button"


# -- 7: throttled key guessing ----------------------------------------------------------------------
async def test_wrong_key_guesses_are_throttled_per_address(db, upstream) -> None:
    """Guards against unlimited device-key guessing (300 wrong keys were all answered 401)."""
    _fake, url = upstream
    clock = FakeClock()
    async with companions(db, url, 2, clock=clock, auth_failures=20, auth_window_s=600) as servers:
        urls = [s.base_url for s in servers]
        wrong = {"Authorization": "Bearer wrong-key-0000000000000"}
        responses = await burst(urls, "/api/planner", 300, wrong)
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(401) == 20 and statuses.count(429) == 280, statuses
        refused = next(r for r in responses if r.status_code == 429)
        assert 0 < int(refused.headers["Retry-After"]) <= 600
        # Even the right key is refused from that address until the window passes.
        assert (await burst(urls, "/api/realtime-token", 1, A))[0].status_code == 429
        clock.now += 601
        assert (await burst(urls, "/api/realtime-token", 1, A))[0].status_code == 200


async def test_forwarded_addresses_count_only_behind_a_trusted_proxy(db, upstream) -> None:
    """X-Forwarded-For is ignored unless trust_proxy is set: otherwise a guesser could pick a new address
    for every try; with it, one classroom's mistakes do not lock out another's."""
    _fake, url = upstream
    wrong = "Bearer wrong-key-0000000000000"
    for trusted in (False, True):
        async with companions(db, url, auth_failures=3, trust_proxy=trusted) as [server], httpx.AsyncClient() as http:
            for i in range(6):
                headers = {"Authorization": wrong, "X-Forwarded-For": f"10.0.0.{i}"}
                r = await http.post(f"{server.base_url}/api/planner", headers=headers, json={})
                assert r.status_code == (401 if trusted or i < 3 else 429), (trusted, i)
            r = await http.post(f"{server.base_url}/api/planner", json={},
                                headers={**A, "X-Forwarded-For": "spoofed, 10.0.0.9"})
            assert r.status_code == (200 if trusted else 429)
            await server.storage.db.execute("DELETE FROM rate_events")


# -- kiosk side of conflicts ------------------------------------------------------------------------
async def test_the_kiosk_parks_a_conflicting_lesson_instead_of_retrying(db, upstream, tmp_path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Guards against a lesson refused as a conflict being sent again on every sync, forever."""
    from appliance.store import SessionStore
    from appliance.sync import Syncer

    caplog.set_level(logging.INFO, logger="appliance.sync")
    _fake, url = upstream
    async with companions(db, url) as [server]:
        taken = record("kiosk-b")
        await server.storage.store_session(taken)
        store = SessionStore(tmp_path / "state")
        mine = record("kiosk-a", session_id=taken["session_id"])
        fine = record("kiosk-a")
        store.save(mine)
        store.save(fine)
        client = CompanionClient(server.base_url, KEY_A, "kiosk-a")
        try:
            assert await Syncer(store, client).drain()
        finally:
            await client.aclose()
        assert store.state_of(fine["session_id"]) == "synced"
        assert store.state_of(mine["session_id"]) == "parked"
        assert "conflict" in store.parked()[0][1]
        assert "rejected lesson" in caplog.text and "conflict" in caplog.text
