"""When the outbox is sent, measured on the wire: a companion on 127.0.0.1 records the arrival time of
every batch, so the capped exponential backoff, its jitter and the periodic sync are checked by the
kiosk's real timing behaviour, not by a log line."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.common.backoff import backoff_delay
from appliance.common.httpserve import start_http
from appliance.store.sessions import SessionStore
from appliance.uplink.client import CompanionClient
from appliance.uplink.sync import Syncer
from tests.harness import KIOSK_ID, numbered_lesson

SLACK_S = 0.3
"""A request on loopback plus a busy 2-core CI machine's scheduling delay stay well under this."""


class ClockedCompanion:
    """The companion's batch endpoint on 127.0.0.1: notes when each batch arrives and answers as told
    (``down``: 503, as a companion behind a restarting proxy; otherwise every lesson stored)."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.received: list[str] = []
        self.down = True
        self._arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/api/sessions/batch", self._batch)
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
        self.arrivals.append(time.monotonic())
        self._arrived.set()
        if self.down:
            return web.json_response({"error": {"code": "unavailable", "message": "restarting"}}, status=503)
        sessions = (await request.json())["sessions"]
        self.received.extend(s["session_id"] for s in sessions)
        return web.json_response({"results": [{"session_id": s["session_id"], "stored": True} for s in sessions]})

    async def until_arrivals(self, count: int, timeout: float) -> list[float]:
        async with asyncio.timeout(timeout):
            while len(self.arrivals) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return list(self.arrivals)


@asynccontextmanager
async def syncing(tmp_path: Path, jitter: Callable[[], float], waiting: int = 1,
                  **options: Any) -> AsyncIterator[tuple[ClockedCompanion, Syncer]]:
    """A Syncer over a real store holding ``waiting`` lessons, sending to a :class:`ClockedCompanion`."""
    companion = ClockedCompanion()
    await companion.start()
    store = SessionStore(tmp_path / "state")
    for i in range(waiting):
        store.save(numbered_lesson(i))
    client = CompanionClient(companion.url, "device-key-0123456789abcdef", KIOSK_ID, timeout_s=2)
    syncer = Syncer(store, client, jitter=jitter, **options)
    task = asyncio.create_task(syncer.run())
    try:
        yield companion, syncer
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        await companion.stop()
        store.close()


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 3) for a, b in itertools.pairwise(times)]


async def test_sync_retries_back_off_exponentially_up_to_the_cap(tmp_path: Path) -> None:
    """Retries against a companion that stays down double from the base delay and then stay at the cap.
    Mutations seen failing: no doubling (base·n), no cap, the cap applied to the base only."""
    async with syncing(tmp_path, jitter=lambda: 1.0, base_backoff_s=0.2, max_backoff_s=0.8) as (companion, syncer):
        syncer.kick()
        arrivals = await companion.until_arrivals(6, timeout=15)
    expected = [0.2, 0.4, 0.8, 0.8, 0.8]  # by hand: 0.2·2^(n-1), capped at 0.8
    for gap, delay in zip(gaps(arrivals), expected, strict=True):
        assert delay <= gap < delay + SLACK_S, (gaps(arrivals), expected)


async def test_sync_jitter_waits_between_half_and_all_of_the_step(tmp_path: Path) -> None:
    """With the smallest jitter draw a retry comes after half the step, not before it and not at the full
    step, so kiosks that failed together spread out. Mutation seen failing: jitter ignored."""
    async with syncing(tmp_path, jitter=lambda: 0.0, base_backoff_s=0.4, max_backoff_s=1.6) as (companion, syncer):
        syncer.kick()
        arrivals = await companion.until_arrivals(4, timeout=15)
    steps = [0.4, 0.8, 1.6]
    for gap, step in zip(gaps(arrivals), steps, strict=True):
        assert step / 2 <= gap < step / 2 + SLACK_S, (gaps(arrivals), steps)


async def test_a_successful_sync_resets_the_backoff(tmp_path: Path) -> None:
    """After the companion is back and takes the lessons, the next outage starts again at the base delay
    (not where the last streak left off). Mutation seen failing: failures not reset on success."""
    async with syncing(tmp_path, jitter=lambda: 1.0, base_backoff_s=0.2, max_backoff_s=3.2) as (companion, syncer):
        syncer.kick()
        await companion.until_arrivals(4, timeout=15)  # 0.2, 0.4, 0.8: the next wait would be 1.6 s
        companion.down = False
        syncer.idle.clear()
        await asyncio.wait_for(syncer.idle.wait(), 10)
        assert len(companion.received) == 1 and syncer.failures == 0
        companion.down = True
        await syncer.store.run("save", numbered_lesson(7))
        before = len(companion.arrivals)
        syncer.kick()
        arrivals = await companion.until_arrivals(before + 2, timeout=15)
    assert 0.2 <= arrivals[-1] - arrivals[-2] < 0.2 + SLACK_S, gaps(arrivals)


async def test_waiting_lessons_are_sent_every_interval_without_a_kick(tmp_path: Path) -> None:
    """Lessons that reach the store without a kick (an import, a save retried later) are sent on the
    period, once per period. Mutation seen failing: the period ignored (the first wait is a backoff)."""
    period = 0.6
    started = time.monotonic()
    async with syncing(tmp_path, jitter=lambda: 1.0, period_s=period, waiting=0) as (companion, syncer):
        companion.down = False
        await asyncio.wait_for(syncer.round_done.wait(), 10)  # the first look, at start: nothing waiting
        started = time.monotonic()
        await syncer.store.run("save", numbered_lesson(10))
        for n in range(1, 4):
            syncer.round_done.clear()
            arrivals = await companion.until_arrivals(n, timeout=10)
            await asyncio.wait_for(syncer.round_done.wait(), 10)  # that round is over: the next one is timed
            await syncer.store.run("save", numbered_lesson(10 + n))
    assert period <= arrivals[0] - started < period + SLACK_S
    for gap in gaps(arrivals):
        assert period <= gap < period + SLACK_S, gaps(arrivals)
    assert len(companion.received) == 3 and syncer.failures == 0


async def test_a_sync_restarted_after_a_crash_sends_at_once(tmp_path: Path) -> None:
    """The sync task crashing mid-drain (a bug, a broken record) is restarted by its supervisor, and the
    restarted task sends the waiting lesson at once, not a whole period later. Mutation seen failing:
    the first look after a (re)start waiting for the period."""
    from appliance.common.supervise import supervise

    companion = ClockedCompanion()
    await companion.start()
    companion.down = False
    store = SessionStore(tmp_path / "state")
    store.save(numbered_lesson(1))
    client = CompanionClient(companion.url, "device-key-0123456789abcdef", KIOSK_ID, timeout_s=2)
    syncer = Syncer(store, client, period_s=300)
    real_drain = syncer.drain
    crashes = []

    async def drain_crashing_once() -> bool:
        if not crashes:
            crashes.append(time.monotonic())
            raise RuntimeError("a bug on one odd record")
        return await real_drain()

    syncer.drain = drain_crashing_once  # type: ignore[method-assign]
    task = asyncio.create_task(supervise("sync", syncer.run, base_s=0.2, max_s=0.2))
    syncer.kick()  # as the kiosk does when it starts the task
    try:
        arrived = (await companion.until_arrivals(1, timeout=10))[0]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        await companion.stop()
        store.close()
    assert 0.1 <= arrived - crashes[0] < 0.2 + SLACK_S and len(companion.received) == 1


@settings(max_examples=200, deadline=None)
@given(failures=st.integers(1, 40), base=st.floats(0.01, 30), cap=st.floats(0.01, 3600), draw=st.floats(0, 1))
def test_backoff_delay_bounds(failures: int, base: float, cap: float, draw: float) -> None:
    """Every delay lies in [half, all] of the capped step base·2^(n-1), never above the cap, and a later
    failure never waits less than an earlier one at the same draw."""
    step = min(cap, base * 2.0 ** (failures - 1))
    delay = backoff_delay(failures, base, cap, jitter=lambda: draw)
    assert step / 2 - 1e-9 <= delay <= step + 1e-9
    assert delay <= cap + 1e-9
    assert backoff_delay(failures + 1, base, cap, jitter=lambda: draw) >= delay - 1e-9


def test_default_jitter_spreads_a_room_of_kiosks() -> None:
    """Thirty kiosks failing together with the real random jitter do not retry in lockstep."""
    rng = random.Random(7)
    delays = [backoff_delay(3, 2.0, 300.0, jitter=rng.random) for _ in range(30)]
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert max(delays) - min(delays) > 2.0
    assert len({backoff_delay(3, 2.0, 300.0) for _ in range(10)}) > 1  # the default draw is random too


@pytest.mark.parametrize("seconds", [0.0, -1.0, 86401.0])
def test_sync_interval_out_of_range_is_a_config_error(tmp_path: Path, seconds: float) -> None:
    from appliance.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError) as info:
        config_from_dict({"companion": {"sync_interval_s": seconds}}, source="kiosk.toml")
    assert "companion.sync_interval_s" in str(info.value) and "out of range" in str(info.value)


async def test_kiosk_honours_the_configured_sync_interval(tmp_path: Path) -> None:
    """`companion.sync_interval_s` reaches the kiosk's sync: a lesson that lands in the store without a
    kick is at the companion (read back over its HTTP API) one interval later, each round one interval
    apart. Mutation seen failing: the kiosk building its Syncer with the 300 s default."""
    from tests.harness import lesson_stack

    interval = 0.5
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(companion={"sync_interval_s": interval, "prefetch": False})
        async with stack.kiosk(config) as (kiosk, _rec, _mic):
            # the start-up round found nothing to send
            await asyncio.wait_for(kiosk.parts.keeper.syncer.idle.wait(), 10)
            rounds: list[float] = []
            for n in range(3):
                lesson = numbered_lesson(20 + n)
                await kiosk.parts.keeper.store.run("save", lesson)
                kiosk.parts.keeper.syncer.round_done.clear()
                await asyncio.wait_for(kiosk.parts.keeper.syncer.round_done.wait(), 10 * interval)
                rounds.append(time.monotonic())
                stored = await kiosk.parts.opener.companion.sessions()
                assert lesson["session_id"] in [s.get("session_id") for s in stored]
    for gap in gaps(rounds):
        assert interval - 0.05 <= gap < interval + SLACK_S, gaps(rounds)


def test_defaults_are_the_figures_the_readme_gives(tmp_path: Path) -> None:
    """README: "every 5 minutes", backoff "2 s, doubling up to 5 minutes"."""
    from appliance.config import Config

    assert Config().companion.sync_interval_s == 5 * 60
    store = SessionStore(tmp_path / "state")
    try:
        syncer = Syncer(store, CompanionClient("http://127.0.0.1:9", "k" * 20, KIOSK_ID))
        delays = [backoff_delay(n, syncer.base_backoff_s, syncer.max_backoff_s, jitter=lambda: 1.0) for n in (1, 2, 10)]
    finally:
        store.close()
    assert delays == [2.0, 4.0, 5 * 60]
