"""The prefetched token is judged by the companion's clock, never the kiosk's own wall clock.

A Pi without a battery-backed clock boots with a stale date (behind), and one whose date was set by
hand may be ahead. The companion answers ``expires_at`` on its own (and OpenAI's) clock, so comparing
it with the kiosk's ``time.time()`` is wrong by the kiosk's whole error: ahead, every fresh token looks
expired and the prefetcher mints until the hourly limit; behind, an expired token looks fresh and the
press fails with ``401 expired_ephemeral_key``. The kiosk side runs here in a real process whose wall
clock libfaketime shifts (its monotonic clock untouched, as on a real board), against a real companion
and simulator on 127.0.0.1 that keep the true time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.simulator.server import RealtimeSimulator, SimulatorConfig
from appliance.uplink.client import MAX_TOKEN_LIFETIME_S, CompanionClient, token_lifetime_s
from appliance.uplink.prefetch import Prefetcher
from tests.clock_helpers import FAKETIME_KEEP_MONOTONIC, libfaketime
from tests.harness import API_KEY, KIOSK_ID

ROOT = Path(__file__).resolve().parents[1]
TOKEN_PATH = "/api/realtime-token"
PLANNER_PATH = "/api/planner"


@dataclass
class Served:
    """What the companion answered, seen from inside it (path, status, body, when on the true clock)."""

    answers: list[tuple[str, int, dict[str, Any], float]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def hook(self, request: web.Request, response: web.StreamResponse) -> None:
        body: dict[str, Any] = {}
        if isinstance(response, web.Response) and response.content_type == "application/json":
            with contextlib.suppress(ValueError, TypeError):
                body = json.loads(bytes(response.body))  # type: ignore[arg-type]
        self.answers.append((request.path, response.status, body, time.time()))
        self.changed.set()

    def tokens(self) -> list[tuple[dict[str, Any], float]]:
        return [(body, at) for path, status, body, at in self.answers if path == TOKEN_PATH and status == 200]

    def count(self, path: str) -> int:
        return sum(1 for p, *_ in self.answers if p == path)

    async def until(self, predicate: Any, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


class SlowPlanner(CompanionServer):
    """A real companion whose planner waits for the test's go (an upstream planner call taking long)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.planning = asyncio.Event()
        self.go = asyncio.Event()

    async def planner(self, request: web.Request) -> web.Response:  # type: ignore[override]
        self.planning.set()
        await self.go.wait()
        return await super().planner(request)


@dataclass
class Companion:
    server: CompanionServer
    served: Served
    key: str

    def client(self) -> CompanionClient:
        return CompanionClient(self.server.base_url, self.key, KIOSK_ID, timeout_s=10)


@contextlib.asynccontextmanager
async def companion(tmp_path: Path, cls: type[CompanionServer] = CompanionServer,
                    **config: Any) -> AsyncIterator[Companion]:
    """A simulator and a companion on 127.0.0.1 keeping the true time; every answer is noted."""
    simulator = RealtimeSimulator(SimulatorConfig(api_keys=frozenset({API_KEY})))
    await simulator.start()
    server = cls(CompanionConfig(db_path=tmp_path / "companion.db", openai_base_url=simulator.base_url,
                                 openai_api_key=API_KEY, **config))
    served = Served()
    server.app.on_response_prepare.append(served.hook)
    await server.start()
    key = secrets.token_urlsafe(24)
    await server.provision(KIOSK_ID, key)
    try:
        yield Companion(server, served, key)
    finally:
        if isinstance(server, SlowPlanner):
            server.go.set()  # a request held in the planner would hold up the shutdown
        await server.stop()
        await simulator.stop()


PREFETCH_SCRIPT = """
import asyncio, json, sys
from appliance.uplink.client import MAX_TOKEN_LIFETIME_S, CompanionClient, token_lifetime_s
from appliance.uplink.prefetch import Prefetcher

async def main() -> None:
    url, key, kiosk, refresh, usable = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
    client = CompanionClient(url, key, kiosk, timeout_s=10)
    prefetcher = Prefetcher(client, "A2", refresh_margin_s=refresh, usable_margin_s=usable, retry_base_s=0.5,
                            retry_max_s=2.0)
    task = asyncio.create_task(prefetcher.run())
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if line != "take":
            break
        ready = prefetcher.take()
        print(json.dumps(None if ready is None else {"token": ready[1].token}), flush=True)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await client.aclose()

asyncio.run(main())
"""


class SkewedKiosk:
    """The kiosk's prefetcher in a real process whose wall clock is ``offset`` away from the truth
    (libfaketime), monotonic clock left alone (``FAKETIME_DONT_FAKE_MONOTONIC``)."""

    def __init__(self, tmp_path: Path, offset: str, url: str, key: str, refresh_margin_s: float = 120.0,
                 usable_margin_s: float = 20.0) -> None:
        rc = tmp_path / "faketime.rc"
        rc.write_text(offset + "\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LD_PRELOAD": libfaketime(),
               "FAKETIME_TIMESTAMP_FILE": str(rc), **FAKETIME_KEEP_MONOTONIC}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PREFETCH_SCRIPT, url, key, KIOSK_ID, str(refresh_margin_s), str(usable_margin_s)],
            env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    async def take(self) -> dict[str, Any] | None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("take\n")
        self.proc.stdin.flush()
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 10)
        assert line, f"the kiosk process died: {self.stop()}"
        return json.loads(line)  # type: ignore[no-any-return]

    def stop(self) -> str:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.stderr.read() if self.proc.stderr else ""


async def test_kiosk_clock_ahead_mints_a_handful_of_tokens_not_the_hourly_limit(tmp_path: Path) -> None:
    """Guards against the kiosk comparing the companion's expires_at with its own wall clock: one hour
    ahead, every fresh 10-minute token looked expired and the idle prefetcher minted tokens in a loop
    until the companion's hourly limit answered 429 to every press."""
    async with companion(tmp_path) as comp:
        kiosk = SkewedKiosk(tmp_path, "+1h", comp.server.base_url, comp.key)
        try:
            await comp.served.until(lambda: len(comp.served.tokens()) >= 1, timeout=30)
            with contextlib.suppress(TimeoutError):  # a bounded look: a loop mints dozens in this time
                await comp.served.until(lambda: comp.served.count(TOKEN_PATH) > 3, timeout=3)
            minted = comp.served.count(TOKEN_PATH)
            assert minted <= 2, f"an idle kiosk one hour ahead asked for {minted} tokens in 3 s"
            taken = await kiosk.take()
            assert taken is not None and taken["token"] == comp.served.tokens()[-1][0]["token"]
        finally:
            kiosk.stop()


async def test_kiosk_clock_behind_refreshes_the_token_before_it_expires(tmp_path: Path) -> None:
    """Guards against a stale boot date (a day behind) making an expiring token look fresh: the idle
    prefetcher must fetch a new one before the old one expires, so a press after a long idle spell
    gets a token the Realtime API still accepts."""
    async with companion(tmp_path, token_ttl_s=10) as comp:
        kiosk = SkewedKiosk(tmp_path, "-1d", comp.server.base_url, comp.key, refresh_margin_s=4,
                            usable_margin_s=2)
        try:
            await comp.served.until(lambda: len(comp.served.tokens()) >= 1, timeout=30)
            [(first, _)] = comp.served.tokens()
            try:
                await comp.served.until(lambda: len(comp.served.tokens()) >= 2,
                                        timeout=max(0.1, first["expires_at"] - time.time() + 1))
            except TimeoutError:
                raise AssertionError("the token expired and the kiosk one day behind never refreshed it") from None
            second, refreshed_at = comp.served.tokens()[1]
            assert refreshed_at < first["expires_at"], "refreshed only after the token had expired"
            await asyncio.sleep(max(0.0, first["expires_at"] - time.time() + 0.2))  # the first token is dead now
            taken = await kiosk.take()
            assert taken is not None, "no token ready after the first one expired"
            assert taken["token"] != first["token"] and time.time() < second["expires_at"]
        finally:
            kiosk.stop()


async def test_token_answer_carries_a_lifetime_relative_to_the_companion_clock(tmp_path: Path) -> None:
    """The companion says how long its token lives (``expires_in``), so no kiosk needs its own wall clock
    to judge it; ``expires_at`` stays for older kiosks."""
    async with companion(tmp_path, token_ttl_s=600) as comp:
        client = comp.client()
        try:
            plan = await client.plan(level="A2")
            before = time.monotonic()
            token = await client.token(plan_id=plan.plan_id)
            after = time.monotonic()
        finally:
            await client.aclose()
        [(body, answered)] = comp.served.tokens()
        assert 598 <= body["expires_in"] <= 600
        assert body["expires_at"] == pytest.approx(answered + body["expires_in"], abs=1.5)
        assert before + body["expires_in"] - 0.01 <= token.deadline <= after + body["expires_in"] + 0.01
        assert 590 < token.remaining_s() <= 600


async def older_companion(expires_at: float) -> tuple[web.AppRunner, str]:
    """A companion from before ``expires_in``: expires_at only (and the HTTP Date header aiohttp sends)."""
    from appliance.common.httpserve import start_http

    async def planner(request: web.Request) -> web.Response:
        return web.json_response({"plan_id": "plan_1", "title": "t", "targets": [], "warmup": ""})

    async def token(request: web.Request) -> web.Response:
        return web.json_response({"token": "ek_old", "expires_at": expires_at, "model": "m", "voice": "v"})

    app = web.Application()
    app.router.add_post(PLANNER_PATH, planner)
    app.router.add_post(TOKEN_PATH, token)
    runner, port = await start_http(app, "127.0.0.1", 0)
    return runner, f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("skew_s", [-5 * 365 * 86400.0, -86400.0, 3600.0, 86400.0])
async def test_older_companion_is_judged_by_its_date_header(skew_s: float) -> None:
    """Without ``expires_in`` the kiosk takes the companion's clock from the HTTP Date header, so its own
    wall clock (here ``skew_s`` off) still does not count."""
    runner, url = await older_companion(time.time() + 600)
    client = CompanionClient(url, "key", KIOSK_ID, wall=lambda: time.time() + skew_s)
    try:
        token = await client.token()
    finally:
        await client.aclose()
        await runner.cleanup()
    assert 597 <= token.remaining_s() <= 600


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                        st.text(max_size=20))


@settings(max_examples=300, deadline=None)
@given(expires_in=json_scalars, expires_at=json_scalars, date=st.one_of(st.none(), st.text(max_size=40)),
       wall=st.floats(-1e12, 1e12))
def test_any_token_answer_gives_a_bounded_lifetime(expires_in: Any, expires_at: Any, date: str | None,
                                                   wall: float) -> None:
    """Whatever a companion (or a proxy in front of it) says, the lifetime is a number in 0 … 7200 s."""
    body = {k: v for k, v in (("expires_in", expires_in), ("expires_at", expires_at)) if v is not None}
    lifetime = token_lifetime_s(body, date, wall)
    assert 0.0 <= lifetime <= MAX_TOKEN_LIFETIME_S


@settings(max_examples=200, deadline=None)
@given(companion_now=st.integers(0, 4_000_000_000), left=st.integers(-100, 8000), kiosk_skew=st.floats(-1e10, 1e10))
def test_date_header_lifetime_ignores_the_kiosk_wall_clock(companion_now: int, left: int, kiosk_skew: float) -> None:
    """With a Date header the kiosk's own wall clock has no say, however far off it is."""
    from email.utils import formatdate

    date = formatdate(companion_now, usegmt=True)
    lifetime = token_lifetime_s({"expires_at": companion_now + left}, date, companion_now + kiosk_skew)
    assert lifetime == max(0.0, min(MAX_TOKEN_LIFETIME_S, left - 1.0))


# -- a prefetch in flight at the press is reused ----------------------------------------------------

async def test_take_during_the_prefetch_gets_that_fetch_and_asks_the_companion_once(tmp_path: Path) -> None:
    """Guards against a press during the idle prefetch fetching a second plan and token: the press waits
    for the fetch already on its way (bounded) and the companion sees one planner and one token request."""
    async with companion(tmp_path, cls=SlowPlanner) as comp:
        server = comp.server
        assert isinstance(server, SlowPlanner)
        client = comp.client()
        prefetcher = Prefetcher(client, "A2")
        task = asyncio.create_task(prefetcher.run())
        try:
            await asyncio.wait_for(server.planning.wait(), 10)  # the prefetch is in flight, held upstream
            press = asyncio.create_task(prefetcher.take_or_wait(timeout_s=10))
            await asyncio.sleep(0)  # the press is waiting now
            assert not press.done()
            server.go.set()
            ready = await asyncio.wait_for(press, 10)
            assert ready is not None
            plan, token = ready
            [(served_token, _)] = comp.served.tokens()
            [planned] = [body for path, status, body, _ in comp.served.answers if path == PLANNER_PATH]
            assert plan.plan_id == planned["plan_id"] and token.token == served_token["token"]
            assert comp.served.count(PLANNER_PATH) == 1 and comp.served.count(TOKEN_PATH) == 1
            # Nothing ready and nothing in flight: an answer at once, so the caller fetches itself.
            started = time.monotonic()
            assert await prefetcher.take_or_wait(timeout_s=10) is None
            assert time.monotonic() - started < 1.0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()


async def test_take_waits_for_the_prefetch_no_longer_than_told(tmp_path: Path) -> None:
    """A fetch stuck upstream costs the press at most the timeout; its pair, when it lands, serves the
    next press instead of being fetched again."""
    async with companion(tmp_path, cls=SlowPlanner) as comp:
        server = comp.server
        assert isinstance(server, SlowPlanner)
        client = comp.client()
        prefetcher = Prefetcher(client, "A2")
        task = asyncio.create_task(prefetcher.run())
        try:
            await asyncio.wait_for(server.planning.wait(), 10)
            started = time.monotonic()
            assert await prefetcher.take_or_wait(timeout_s=0.3) is None
            assert 0.3 <= time.monotonic() - started < 2.0
            server.go.set()
            await asyncio.wait_for(prefetcher.filled.wait(), 10)
            ready = await prefetcher.take_or_wait(timeout_s=0.3)
            assert ready is not None and comp.served.count(TOKEN_PATH) == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()


async def test_take_during_a_failing_prefetch_returns_at_once(tmp_path: Path) -> None:
    """A fetch that fails wakes the waiting press straight away (it then fetches and shows the error)."""
    async with companion(tmp_path, cls=SlowPlanner) as comp:
        server = comp.server
        assert isinstance(server, SlowPlanner)
        client = CompanionClient(server.base_url, "not-the-key", KIOSK_ID, timeout_s=10)
        prefetcher = Prefetcher(client, "A2", retry_base_s=30, retry_max_s=30)
        task = asyncio.create_task(prefetcher.run())
        try:
            await asyncio.wait_for(server.planning.wait(), 10)
            press = asyncio.create_task(prefetcher.take_or_wait(timeout_s=10))
            await asyncio.sleep(0)
            server.go.set()  # the companion now refuses the wrong key
            started = time.monotonic()
            assert await asyncio.wait_for(press, 10) is None
            assert time.monotonic() - started < 2.0 and prefetcher.failures == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()


async def test_tokens_too_short_lived_to_prefetch_are_not_minted_in_a_loop(tmp_path: Path) -> None:
    """A companion configured with 10-second tokens: one such token cannot wait for a press, so the kiosk
    stops prefetching until the next lesson instead of minting one after another."""
    async with companion(tmp_path, token_ttl_s=10) as comp:
        client = comp.client()
        prefetcher = Prefetcher(client, "A2", usable_margin_s=20)
        task = asyncio.create_task(prefetcher.run())
        try:
            await comp.served.until(lambda: comp.served.count(TOKEN_PATH) >= 1, timeout=10)
            with contextlib.suppress(TimeoutError):  # a bounded look: a loop mints several in this time
                await comp.served.until(lambda: comp.served.count(TOKEN_PATH) > 1, timeout=2)
            assert comp.served.count(TOKEN_PATH) == 1
            assert await prefetcher.take_or_wait(timeout_s=1) is None  # the press fetches its own
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()
