"""The companion at fleet scale, over real HTTP on SQLite and on a private PostgreSQL: limits that hold
across concurrent requests, instances and restarts; budgets from the day's counter; strict records;
no 5xx for hostile bodies; cross-kiosk conflicts; throttled key guessing; retention; heartbeats."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.common.httpserve import start_http
from appliance.companion import limits
from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.companion.storage import open_storage
from appliance.uplink.client import CompanionClient, CompanionError
from tests.companion_helpers import SK, FakeOpenAI, record

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
async def test_sliding_window_reserve_and_release_exactly(db) -> None:
    """The window's edges, the Retry-After figure and a given-back slot, on both engines: PostgreSQL
    reserves in its stored function, SQLite in a BEGIN IMMEDIATE transaction, and the two must agree
    (an off-by-one in either, ``<`` for ``<=`` or a missing prune, fails here)."""
    storage = await open_storage(db)
    try:
        t0 = 1_800_000_000.0
        taken = [await limits.reserve(storage.db, "token:k", 3, 100.0, t0 + offset) for offset in (0, 10, 20)]
        assert all(v.allowed and v.event_id is not None for v in taken)
        assert len({v.event_id for v in taken}) == 3
        refused = await limits.reserve(storage.db, "token:k", 3, 100.0, t0 + 30)
        assert not refused.allowed and refused.event_id is None
        assert refused.retry_after_s == pytest.approx(70.0)  # the slot taken at t0 frees at t0 + 100
        assert (await limits.reserve(storage.db, "token:other", 3, 100.0, t0 + 30)).allowed  # its own bucket
        assert (await limits.reserve(storage.db, "token:k", 3, 100.0, t0 + 99.9)).allowed is False
        assert (await limits.reserve(storage.db, "token:k", 3, 100.0, t0 + 100)).allowed  # t0's slot left
        await limits.release(storage.db, taken[1].event_id)  # its mint failed: the slot is given back
        again = await limits.reserve(storage.db, "token:k", 3, 100.0, t0 + 101)
        assert again.allowed
        last = await limits.reserve(storage.db, "token:k", 3, 100.0, t0 + 102)
        assert not last.allowed and last.retry_after_s == pytest.approx(18.0)  # t0 + 20 frees at t0 + 120
    finally:
        await storage.close()


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
        twice = record()
        r = await http.post(f"{server.base_url}/api/sessions/batch", headers=A, json={"sessions": [twice, twice]})
        assert [x["duplicate"] for x in r.json()["results"]] == [False, True]
        assert (await server.storage.fleet())[0]["lessons_today"] == 2  # counted once
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
        # A right key from that address still works (kiosks share the school's address with the guesser);
        # wrong keys are refused until the window passes.
        assert (await burst(urls, "/api/realtime-token", 1, A))[0].status_code == 200
        assert (await burst(urls, "/api/planner", 1, wrong))[0].status_code == 429
        clock.now += 601
        assert (await burst(urls, "/api/planner", 1, wrong))[0].status_code == 401


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
            assert r.status_code == 200  # a right key is never locked out
            await server.storage.db.execute("DELETE FROM rate_events")


# -- kiosk side of conflicts ------------------------------------------------------------------------
async def test_the_kiosk_parks_a_conflicting_lesson_instead_of_retrying(db, upstream, tmp_path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Guards against a lesson refused as a conflict being sent again on every sync, forever."""
    from appliance.store.sessions import SessionStore
    from appliance.uplink.sync import Syncer

    caplog.set_level(logging.INFO, logger="appliance.uplink.sync")
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


# -- 5 (property): arbitrary JSON never gives a 5xx -------------------------------------------------
#: Text with lone surrogates and control characters too (hypothesis leaves surrogates out by default).
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | st.floats() | any_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=20)
record_fields = st.sampled_from(["schema", "session_id", "kiosk_id", "started_at", "ended_at", "end_reason", "plan_id",
                                 "turns", "metrics", "targets", "errors", "clock_anchor", "level"])
near_records = st.builds(
    lambda overrides, metrics: {**record(metrics={"duration_s": 1.0, **metrics}), **overrides},
    st.dictionaries(record_fields, json_values, max_size=3),
    st.dictionaries(st.sampled_from(["duration_s", "est_cost_usd", "usage", "connect_ms", "clock_synced",
                                     "learner_turns", "clock_corrected_s"]), json_values, max_size=2))
bodies = st.one_of(
    json_values,
    near_records,
    st.lists(near_records, max_size=3).map(lambda sessions: {"sessions": sessions}),
    st.dictionaries(st.sampled_from(["plan_id", "learner", "recent_targets", "kiosk_id", "version", "state",
                                     "unsynced", "disk_free_mb", "last_error", "devices", "store_problems"]),
                    json_values, max_size=4),
    # Raw bytes: nesting deeper than json.dumps itself could write.
    st.integers(min_value=30, max_value=5000).map(lambda depth: b'{"plan_id": ' + b"[" * depth + b"]" * depth + b"}"),
)
ENDPOINTS = ("/api/planner", "/api/realtime-token", "/api/summarize", "/api/sessions/batch", "/api/heartbeat")


@pytest.fixture(params=["sqlite", "postgres"])
def live_companion(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A companion (and fake upstream) on an event loop of its own thread, for synchronous property tests."""
    spec = str(tmp_path / "c.db") if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[FakeOpenAI, CompanionServer]:
        fake = FakeOpenAI()
        url = await fake.start()
        server = CompanionServer(CompanionConfig(db_path=spec, openai_base_url=url, openai_api_key=SK))
        await server.start()
        await server.provision("kiosk-a", KEY_A)
        return fake, server

    fake, server = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    try:
        yield server.base_url
    finally:
        async def stop() -> None:
            await server.stop()
            await fake.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(ENDPOINTS), body=bodies)
def test_arbitrary_json_bodies_never_give_a_server_error(live_companion: str, path: str, body: Any) -> None:
    """Whatever JSON a kiosk (or anyone holding a device key) posts, the answer is a 2xx or a 4xx with a
    JSON error: lone surrogates, NULs, NaN, huge integers and odd types included."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{live_companion}{path}", headers=A, content=content, timeout=30)
    assert response.status_code < 500, (path, response.status_code, response.text)
    if response.status_code >= 400:
        assert isinstance(response.json()["error"]["message"], str)


# -- 8: keys never on a command line ---------------------------------------------------------------
def test_provisioning_reads_an_owner_only_file_never_the_command_line(tmp_path: Path) -> None:
    """Guards against device keys in `ps` (--provision NAME=KEY) and against a key file others can read."""
    import os
    import subprocess
    import sys

    db = tmp_path / "c.db"
    env = {"OPENAI_API_KEY": SK, "PATH": "/usr/bin:/bin"}
    serve = [sys.executable, "-m", "appliance.cli", "companion", "serve", "--port", "0", "--db", str(db)]
    refused = subprocess.run([*serve, "--provision", f"room-1={KEY_A}"], capture_output=True, text=True, timeout=60,
                             env=env)
    assert refused.returncode == 2 and "--provision-file" in refused.stderr and "ps" in refused.stderr
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# kiosks of room 1\nroom-1={KEY_A}\n\nroom-2 = {KEY_B}\n")
    os.chmod(keys, 0o644)
    loose = subprocess.run([*serve, "--provision-file", str(keys)], capture_output=True, text=True, timeout=60, env=env)
    assert loose.returncode == 2 and "chmod 600" in loose.stderr
    os.chmod(keys, 0o600)
    proc = subprocess.Popen([*serve, "--provision-file", str(keys)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:"), proc.stderr.read() if proc.poll() is not None else line
        url = line.split()[1]
        for key in (KEY_A, KEY_B):
            r = httpx.get(f"{url}/api/sessions", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)
    assert KEY_A not in proc.stderr.read()
    stdin = subprocess.run([*serve, "--provision-file", "-"], input="not a line\n", capture_output=True, text=True,
                           timeout=60, env=env)
    assert stdin.returncode == 2 and "line 1" in stdin.stderr


def test_set_budget_command(tmp_path: Path) -> None:
    """`companion set-budget NAME MINUTES|default` writes the kiosk's own budget; bad input is a clear error."""
    import subprocess
    import sys

    db = str(tmp_path / "c.db")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "appliance.cli", "companion", *args, "--db", db],
                              capture_output=True, text=True, timeout=60)

    assert run("add-kiosk", "room-1").returncode == 0
    assert run("set-budget", "room-1", "45").returncode == 0
    assert run("set-budget", "room-9", "45").returncode == 1
    bad = run("set-budget", "room-1", "lots")
    assert bad.returncode == 2 and "'default'" in bad.stderr

    async def budget() -> Any:
        from appliance.companion.storage import open_storage

        storage = await open_storage(db)
        try:
            return {row["kiosk_id"]: row["daily_minutes"] for row in await storage.fleet()}["room-1"]
        finally:
            await storage.close()

    assert asyncio.run(budget()) == 45.0
    assert run("set-budget", "room-1", "default").returncode == 0
    assert asyncio.run(budget()) is None


# -- 9: retention -------------------------------------------------------------------------------------
async def test_old_transcripts_are_reduced_to_their_metrics(db, upstream) -> None:
    """Children's words are kept only `transcript_days`: older lessons keep their numbers, lose their turns
    and text; newer ones are untouched; health states the policy."""
    _fake, url = upstream
    clock = FakeClock()
    async with companions(db, url, clock=clock, transcript_days=30) as [server]:
        old = record(errors=[{"code": "x", "message": "learner said her address"}],
                     targets=[{"id": "t1", "kind": "vocab", "text": "hamster"}],
                     metrics={"duration_s": 120.0, "learner_turns": 1, "usage": {"input_tokens": 5}})
        await server.storage.store_sessions([old])
        clock.now += 20 * 86400
        recent = record()
        await server.storage.store_sessions([recent])
        clock.now += 11 * 86400  # old is now 31 days old, recent 11
        server.maintained.clear()
        await server.maintain()
        stored = {s["session_id"]: s for s in await server.storage.sessions("kiosk-a")}
        reduced = stored[old["session_id"]]
        assert reduced["turns"] == [] and reduced["errors"] == [] and reduced["targets"] == []
        assert reduced["metrics"] == old["metrics"] and reduced["end_reason"] == "button"
        assert "hamster" not in json.dumps(reduced) and "address" not in json.dumps(reduced)
        assert stored[recent["session_id"]] == recent
        row = await server.storage.db.fetchone("SELECT reduced_at FROM sessions WHERE session_id = ?",
                                               (old["session_id"],))
        assert row[0] == clock.now
        assert await server.storage.reduce_old_transcripts() == 0  # once only
        async with httpx.AsyncClient() as http:
            health = (await http.get(f"{server.base_url}/api/health")).json()
        assert health["retention"]["transcript_days"] == 30 and health["retention"]["reduced_lessons"] == 1
        assert "30 days" in health["retention"]["policy"]
        # Budgets and day totals still add up after the reduction.
        assert [d["lessons"] for d in await server.storage.day_totals("2000-01-01")] == [1, 1]


async def test_retention_runs_at_start_and_zero_keeps_everything(db, upstream) -> None:
    _fake, url = upstream
    clock = FakeClock()
    async with companions(db, url, clock=clock, transcript_days=0) as [server]:
        await server.storage.store_sessions([record()])
        clock.now += 5000 * 86400
        await server.maintain()
        assert (await server.storage.sessions("kiosk-a"))[0]["turns"] != []
        assert "until deleted" in (await server.storage.retention_policy())["policy"]
    async with companions(db, url, clock=clock, transcript_days=365) as [server]:
        await asyncio.wait_for(server.maintained.wait(), 30)  # the start-up round
        assert (await server.storage.sessions("kiosk-a"))[0]["turns"] == []


# -- 10: heartbeats and the fleet ----------------------------------------------------------------------
async def test_heartbeats_feed_the_fleet_view(db, upstream) -> None:
    """Every kiosk (revoked too) with its latest heartbeat, stamped by the companion's clock, and today's
    lessons; bad heartbeats are 400 with the field named."""
    _fake, url = upstream
    clock = FakeClock()
    async with companions(db, url, clock=clock, daily_minutes=30) as [server], httpx.AsyncClient() as http:
        base = server.base_url
        beat = {"version": "0.9.1", "state": "idle", "unsynced": 2, "disk_free_mb": 812.5,
                "last_error": "microphone: gone", "devices": {"microphone": "gone"}, "store_problems": [],
                "future_field": {"ignored": True}}
        r = await http.post(f"{base}/api/heartbeat", headers=A, json=beat)
        assert r.status_code == 200
        await server.storage.store_sessions([record(metrics={"duration_s": 90.0, "est_cost_usd": 0.25})])
        await server.storage.set_daily_minutes("kiosk-b", 10)
        await server.storage.revoke_kiosk("kiosk-b")
        fleet = {k["kiosk_id"]: k for k in await server.storage.fleet()}
        a = fleet["kiosk-a"]
        assert (a["version"], a["state"], a["unsynced"], a["disk_free_mb"], a["last_error"]) == \
            ("0.9.1", "idle", 2, 812.5, "microphone: gone")
        assert a["seen_at"] == clock.now and a["lessons_today"] == 1 and a["minutes_today"] == 1.5
        b = fleet["kiosk-b"]
        assert b["revoked_at"] is not None and b["daily_minutes"] == 10 and b["seen_at"] is None
        assert b["lessons_today"] == 0
        totals = await server.storage.day_totals("2000-01-01")
        assert totals == [{"kiosk_id": "kiosk-a", "day": totals[0]["day"], "lessons": 1, "minutes": 1.5,
                           "cost_usd": 0.25}]
        for bad, field in (({"unsynced": -1}, "unsynced"), ({"unsynced": True}, "unsynced"),
                           ({"version": "x" * 65}, "version"), ({"disk_free_mb": "lots"}, "disk_free_mb"),
                           ({"devices": ["mic"]}, "devices"), ({"last_error": 5}, "last_error")):
            r = await http.post(f"{base}/api/heartbeat", headers=A, json=bad)
            assert r.status_code == 400 and field in r.json()["error"]["message"], (bad, r.text)
        r = await http.post(f"{base}/api/heartbeat", headers={"Authorization": "Bearer nope-0000000000000000"},
                            json=beat)
        assert r.status_code == 401


async def test_a_kiosk_without_heartbeats_at_its_companion_still_syncs(tmp_path, caplog) -> None:
    """A companion from before heartbeats answers 404: the kiosk logs it once at debug and syncs on."""
    from aiohttp import web

    from appliance.store.sessions import SessionStore
    from appliance.uplink.sync import Syncer

    caplog.set_level(logging.DEBUG, logger="appliance.uplink.sync")
    stored: list[str] = []

    async def batch(request: web.Request) -> web.Response:
        sessions = (await request.json())["sessions"]
        stored.extend(s["session_id"] for s in sessions)
        return web.json_response({"results": [{"session_id": s["session_id"], "stored": True} for s in sessions]})

    app = web.Application()
    app.router.add_post("/api/sessions/batch", batch)
    runner, port = await start_http(app, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    store = SessionStore(tmp_path / "state")
    lesson = record()
    store.save(lesson)
    client = CompanionClient(base, KEY_A, "kiosk-a")
    syncer = Syncer(store, client, report=lambda: {"state": "idle"}, heartbeat_s=3600)
    try:
        assert not await syncer.send_heartbeat()
        assert not await syncer.send_heartbeat()
        assert await syncer.drain() and stored == [lesson["session_id"]]
    finally:
        await client.aclose()
        await runner.cleanup()
    notes = [r for r in caplog.records if "does not know heartbeats" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.DEBUG


async def test_a_real_kiosk_appears_in_the_fleet_after_a_lesson(tmp_path: Path) -> None:
    """End to end: a kiosk's lesson over WebRTC, its sync, then its heartbeat: the fleet view shows the
    kiosk's version and state and the lesson counted today."""
    from appliance import __version__
    from appliance.core.state import State
    from tests.harness import KIOSK_ID, lesson_stack

    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        kiosk.press()
        await rec.until(lambda: State.CONNECTED in rec.states, what="connected")
        kiosk.press()
        await rec.until(lambda: bool(rec.saved) and rec.saved[0][1], what="lesson saved and synced")
        kiosk.parts.keeper.syncer.heartbeat_delivered.clear()
        kiosk.parts.keeper.syncer.kick()  # a sync round, then a heartbeat after it
        await asyncio.wait_for(kiosk.parts.keeper.syncer.heartbeat_delivered.wait(), 20)
        fleet = {k["kiosk_id"]: k for k in await stack.companion.storage.fleet()}
    mine = fleet[KIOSK_ID]
    assert mine["version"] == __version__ and mine["state"] == "idle" and mine["unsynced"] == 0
    assert mine["lessons_today"] == 1 and mine["disk_free_mb"] > 0 and mine["seen_at"] is not None


def _parse(parse: Any, raw: bytes | str) -> Any:
    try:
        return parse(raw)
    except (ValueError, RecursionError) as exc:
        return type(exc).__name__ if isinstance(exc, RecursionError) else "refused"


@settings(max_examples=300, deadline=None)
@given(value=json_values, ascii_only=st.booleans(), depth=st.integers(min_value=0, max_value=40))
def test_the_body_parsers_fast_path_agrees_with_the_full_cleaning(value: Any, ascii_only: bool, depth: int) -> None:
    """Request bodies and Realtime messages skip the string-by-string cleaning when their text cannot hold a
    surrogate or control character: the result must be exactly what the full walk gives (or both refuse),
    whatever the escapes, raw UTF-8 (surrogate bytes included) or nesting."""
    from appliance.common.safe_text import clean_json, loads_clean

    for _ in range(depth):
        value = [value]
    text = json.dumps(value, ensure_ascii=ascii_only)
    raw = text.encode("utf-8", "surrogatepass")
    assert _parse(loads_clean, raw) == _parse(lambda r: clean_json(json.loads(r)), raw)
    # A data-channel message arrives decoded (a str, raw surrogates and all): the same must hold.
    assert _parse(loads_clean, text) == _parse(lambda r: clean_json(json.loads(r)), text)


async def test_a_lesson_takes_the_level_of_the_plan_it_was_given(db, upstream) -> None:
    """Guards against the teachers' level filter finding nothing: kiosks do not send a level, so the
    companion must take it from the plan it gave (another kiosk's plan id gives nothing)."""
    _fake, url = upstream
    async with companions(db, url) as [server], httpx.AsyncClient() as http:
        plan = (await http.post(f"{server.base_url}/api/planner", headers=A,
                                json={"learner": {"level": "B1"}})).json()
        assert plan["level"] == "B1"
        mine, theirs, none = record(plan_id=plan["plan_id"]), record("kiosk-b", plan_id=plan["plan_id"]), record()
        await http.post(f"{server.base_url}/api/sessions/batch", headers=A, json={"sessions": [mine, none]})
        await http.post(f"{server.base_url}/api/sessions/batch", headers=B, json={"sessions": [theirs]})
        levels = dict(await server.storage.db.fetchall("SELECT session_id, level FROM sessions"))
        assert levels == {mine["session_id"]: "B1", none["session_id"]: None, theirs["session_id"]: None}
