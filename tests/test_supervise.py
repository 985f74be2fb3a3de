"""Background work is restarted after a crash, with backoff, and the crash is logged once with its
traceback (README, "Never losing a lesson")."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest

from appliance.common.supervise import supervise


async def test_crashing_task_is_restarted_with_backoff_and_logged_once_with_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    """Four crashes in a row: each restart waits longer (within the jitter bounds), only the first crash
    carries a traceback, and the fifth run keeps going. Mutations seen failing: no backoff between
    restarts; a traceback on every crash."""
    caplog.set_level(logging.ERROR, logger="appliance.common.supervise")
    starts: list[float] = []
    healthy = asyncio.Event()

    async def flaky() -> None:
        starts.append(time.monotonic())
        if len(starts) <= 4:
            raise RuntimeError(f"odd record {len(starts)}")
        healthy.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervise("sync", flaky, base_s=0.2, max_s=0.4))
    try:
        await asyncio.wait_for(healthy.wait(), 10)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    steps = [0.2, 0.4, 0.4, 0.4]  # 0.2·2^(n-1) capped at 0.4; each wait is 50-100 % of its step
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    for gap, step in zip(gaps, steps, strict=True):
        assert step / 2 <= gap < step + 0.3, (gaps, steps)
    records = [r for r in caplog.records if "background task sync" in r.getMessage()]
    assert len(records) == 4
    assert records[0].exc_info is not None and "odd record 1" in caplog.text
    assert all(r.exc_info is None for r in records[1:])
    assert "(4 in a row)" in records[3].getMessage()
    assert task.cancelled()


async def test_a_task_that_returns_is_restarted_too() -> None:
    runs = 0
    again = asyncio.Event()

    async def returns() -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            again.set()

    task = asyncio.create_task(supervise("prefetch", returns, base_s=0.05, max_s=0.05))
    try:
        await asyncio.wait_for(again.wait(), 5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert runs >= 2
