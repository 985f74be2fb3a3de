"""A call to an ICE-lite peer that ignores non-nominating consent checks lasts well past 30 s
with the kiosk's consent fix, and drops without it (aioice gives up after ~30 s)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from appliance.realtime import events
from appliance.realtime.call import RealtimeCall
from appliance.realtime.events import ServerEvent
from tests.harness import API_KEY, lesson_stack

HOLD_S = 45.0


async def mint_token(base_url: str) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{base_url}/v1/realtime/client_secrets",
                                   headers={"Authorization": f"Bearer {API_KEY}"},
                                   json={"session": {"type": "realtime", "model": "gpt-realtime-2.1-mini"}})
    response.raise_for_status()
    return response.json()["value"]


class ProbeCall:
    """A RealtimeCall plus events that record when it dropped and what it received."""

    def __init__(self, base_url: str, token: str, consent_fix: bool) -> None:
        self.dropped = asyncio.Event()
        self.dropped_at: float | None = None
        self.responses_done = asyncio.Event()
        self.call = RealtimeCall(base_url, token, lambda n: np.zeros(n, np.int16), consent_fix=consent_fix,
                                 on_event=self._event, on_remote_track=self._drain, on_closed=self._closed)
        self._drain_tasks: list[asyncio.Task[None]] = []

    def _event(self, event: ServerEvent) -> None:
        if event.type == "response.done":
            self.responses_done.set()

    def _drain(self, track: object) -> None:
        async def drain() -> None:
            while True:
                await track.recv()  # type: ignore[attr-defined]
        self._drain_tasks.append(asyncio.ensure_future(drain()))

    def _closed(self, reason: str) -> None:
        self.dropped_at = time.monotonic()
        self.dropped.set()

    async def close(self) -> None:
        for task in self._drain_tasks:
            task.cancel()
        await self.call.close()


@pytest.mark.slow
async def test_consent_fix_keeps_ice_lite_call_alive(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path, consent_emulation=True) as stack:
        base = stack.simulator.base_url
        fixed = ProbeCall(base, await mint_token(base), consent_fix=True)
        unfixed = ProbeCall(base, await mint_token(base), consent_fix=False)
        await asyncio.gather(fixed.call.open(10), unfixed.call.open(10))
        assert fixed.call.remote_is_lite and unfixed.call.remote_is_lite
        started = time.monotonic()
        try:
            # Without the fix aioice's unanswered consent checks kill the call at ~30 s.
            await asyncio.wait_for(unfixed.dropped.wait(), HOLD_S)
            assert unfixed.dropped_at is not None and 20 < unfixed.dropped_at - started < HOLD_S
            # With the fix the call is still up when HOLD_S has passed.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(fixed.dropped.wait(), HOLD_S - (time.monotonic() - started))
            assert time.monotonic() - started >= HOLD_S - 0.5
            assert fixed.call.connected
            # …and still carries events both ways.
            fixed.call.send(events.user_text("Are you still there?"))
            fixed.call.send(events.response_create())
            await asyncio.wait_for(fixed.responses_done.wait(), 15)
        finally:
            await fixed.close()
            await unfixed.close()
