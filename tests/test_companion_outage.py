"""PostgreSQL restarted or down under a running companion: 503 with Retry-After while it is down, and the
first request after it is back is answered (the pool checks each connection it hands out). Runs on a
private cluster of its own, since it stops and starts it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from appliance.companion.console import accounts
from appliance.companion.server import CompanionConfig, CompanionServer
from tests.companion_helpers import SK, FakeOpenAI
from tests.console_helpers import ADMIN, ADMIN_PASSWORD, Browser
from tests.pg_cluster import PgCluster, create_database, pg_bin, private_cluster

KEY = "key-a-0123456789abcdef"
KIOSK = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    bindir = pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (scripts/setup.sh installs postgresql)")
    with private_cluster(bindir) as running:
        yield running


@pytest.fixture
async def companion(cluster: PgCluster) -> AsyncIterator[str]:
    upstream = FakeOpenAI()
    url = await upstream.start()
    server = CompanionServer(CompanionConfig(db_path=create_database(cluster.dsn), openai_base_url=url,
                                             openai_api_key=SK))
    await server.start()
    await server.provision("kiosk-a", KEY)
    await accounts.add_user(server.storage.db, ADMIN, ADMIN_PASSWORD, "admin")
    try:
        yield server.base_url
    finally:
        await server.stop()
        await upstream.runner.cleanup()


async def class_change(http: httpx.AsyncClient, kiosks: int = 8) -> list[int]:
    """Health and token requests at once, as at a class change: several pooled connections in use."""
    answers = await asyncio.gather(*(http.post("/api/realtime-token", json={}, headers=KIOSK) if i % 2 else
                                     http.get("/api/health") for i in range(kiosks)))
    return [a.status_code for a in answers]


async def test_the_first_request_after_a_restart_is_answered(cluster: PgCluster, companion: str) -> None:
    """Every pooled connection dies in a restart; each used to fail one request (8 consecutive 500s)."""
    async with httpx.AsyncClient(base_url=companion, timeout=30) as http:
        assert await class_change(http) == [200] * 8
        await asyncio.to_thread(cluster.stop)
        await asyncio.to_thread(cluster.start)
        health = await http.get("/api/health")
        assert health.status_code == 200, health.text
        assert await class_change(http) == [200] * 8


async def test_while_the_database_is_down_the_answer_is_503_with_retry_after(cluster: PgCluster,
                                                                            companion: str) -> None:
    browser = Browser(companion)
    async with httpx.AsyncClient(base_url=companion, timeout=30) as http:
        assert (await browser.login(ADMIN, ADMIN_PASSWORD)).status_code == 303
        assert await class_change(http) == [200] * 8
        await asyncio.to_thread(cluster.stop)
        for answer in (await http.get("/api/health"),
                       await http.post("/api/realtime-token", json={}, headers=KIOSK),
                       await browser.get("/console/lessons")):
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["Retry-After"]) > 0
            assert "Traceback" not in answer.text
        await asyncio.to_thread(cluster.start)
        assert (await http.get("/api/health")).status_code == 200
        assert await class_change(http) == [200] * 8
        assert (await browser.get("/console/lessons")).status_code == 200
    await browser.aclose()
