"""No single request stalls the companion: compressed and oversized bodies are refused before they are read
(or inflated), and never drained on the event loop. The companion runs as its own process
(`stella-kiosk companion serve`), so what is measured is what every other kiosk would wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from appliance.daemon.preflight import write_key_file
from appliance.daemon.services import ChildServer
from tests.bomb_helpers import MB, BombSender, gzip_bomb
from tests.companion_helpers import SK, FakeOpenAI

KEY = "key-a-0123456789abcdef"
MAX_STALL_S = 1.0
"""Generous for a health or token answer (milliseconds normally); the old companion stalled for seconds."""
BOMB_MB = 4096
"""4 GB of zeros in 4 MB of gzip: the old companion spent 3.5 s inflating it here, in stalls of up to 0.9 s."""


@pytest.fixture
async def companion(tmp_path: Path) -> AsyncIterator[str]:
    upstream = FakeOpenAI()
    upstream_url = await upstream.start()
    kiosks = tmp_path / "kiosks.txt"
    write_key_file(kiosks, f"kiosk-a={KEY}\n")
    child = ChildServer("companion", ["companion", "serve", "--port", "0", "--db", str(tmp_path / "c.db"),
                                      "--openai-base-url", upstream_url, "--provision-file", str(kiosks)],
                        tmp_path / "companion.log", env={"OPENAI_API_KEY": SK})
    try:
        yield await child.start(timeout_s=60)
    finally:
        await child.stop()
        await upstream.runner.cleanup()


async def worst_latency_while(url: str, sender: BombSender) -> tuple[float, int]:
    """Health and token requests from another client, one after another, from the moment the bomb is on
    the wire until its sender is done: the slowest answer, and how many were answered."""
    await asyncio.to_thread(sender.started.wait, 60)
    worst, answered = 0.0, 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while not sender.done.is_set() or answered < 4:
            begun = time.perf_counter()
            if answered % 2:
                response = await http.post("/api/realtime-token", json={},
                                           headers={"Authorization": f"Bearer {KEY}"})
            else:
                response = await http.get("/api/health")
            assert response.status_code == 200, response.text
            worst = max(worst, time.perf_counter() - begun)
            answered += 1
    return worst, answered


@pytest.mark.parametrize("path", ["/api/planner", "/api/sessions/batch", "/console/login"])
async def test_a_gzip_bomb_does_not_stall_other_requests(companion: str, path: str) -> None:
    """4 GB of zeros in ~4 MB of gzip, unauthenticated: refused with 415 before it is read, and every other
    kiosk's health and token requests meanwhile answer well within a second (the old companion inflated it
    on its event loop while draining it, and stalled them for seconds)."""
    sender = BombSender(companion, path, gzip_bomb(BOMB_MB))
    sender.start()
    worst, answered = await worst_latency_while(companion, sender)
    assert sender.busy_s < MAX_STALL_S, f"the companion spent {sender.busy_s:.2f} s on the bomb"
    assert worst < MAX_STALL_S, f"a request waited {worst:.2f} s while the bomb was sent ({answered} answered)"
    assert sender.status in (415, 0), sender.status


async def test_a_300_mb_body_is_refused_without_being_drained(companion: str) -> None:
    """A plain body far over the limit: 413 from its Content-Length, the connection closed instead of
    reading 300 MB on the event loop."""
    sender = BombSender(companion, "/api/planner", bytes(300 * MB), encoding="")
    sender.start()
    worst, answered = await worst_latency_while(companion, sender)
    assert sender.busy_s < MAX_STALL_S, f"the companion spent {sender.busy_s:.2f} s on the refused body"
    assert worst < MAX_STALL_S, f"a request waited {worst:.2f} s while the body was sent ({answered} answered)"
    assert sender.status in (413, 0), sender.status
    assert sender.sent < 300 * MB, "the companion read the whole refused body"


async def test_a_huge_body_of_unknown_length_is_not_drained_after_its_answer(companion: str) -> None:
    """300 MB sent chunked (no Content-Length to refuse it by) without a key: answered 401 and the
    connection closed, instead of reading the rest on the event loop for up to 10 s."""
    sender = BombSender(companion, "/api/planner", bytes(300 * MB), encoding="", chunked=True)
    sender.start()
    worst, answered = await worst_latency_while(companion, sender)
    assert sender.busy_s < MAX_STALL_S, f"the companion spent {sender.busy_s:.2f} s on the unread body"
    assert worst < MAX_STALL_S, f"a request waited {worst:.2f} s while the body was sent ({answered} answered)"
    assert sender.sent < 300 * MB, "the companion read the whole body it had refused"


async def test_compressed_bodies_are_refused_with_415_and_small_refused_bodies_still_answer(companion: str) -> None:
    """A kiosk's client reads the refusal it is given: 415 naming the encoding, 413 for a declared size over
    the limit, and the usual 401 for a small body sent without a key."""
    async with httpx.AsyncClient(base_url=companion, timeout=30) as http:
        refused = await http.post("/api/summarize", content=gzip_bomb(1)[:2000],
                                  headers={"Content-Encoding": "gzip", "Authorization": f"Bearer {KEY}"})
        assert refused.status_code == 415 and refused.json()["error"]["code"] == "unsupported_encoding"
        plain = await http.post("/api/planner", json={"learner": {"level": "A2"}})
        assert plain.status_code == 401
        big = await http.post("/api/summarize", content=bytes(2 * MB), headers={"Authorization": f"Bearer {KEY}"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
        assert (await http.get("/api/health")).status_code == 200
