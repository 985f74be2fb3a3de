"""The kiosk's keyed timers: replaced by key, cancelled per lesson, gone from the map once fired."""

from __future__ import annotations

import asyncio
import logging

import pytest

from appliance.core.timers import Timers


async def test_a_keyed_timer_replaces_the_pending_one_and_leaves_when_it_fires() -> None:
    timers, fired, done = Timers(), [], asyncio.Event()
    timers.later(30.0, fired.append, "old", key="idle")
    timers.later(0.01, lambda: (fired.append("new"), done.set()), key="idle")
    assert len(timers) == 1 and "idle" in timers
    async with asyncio.timeout(5):
        await done.wait()
    assert fired == ["new"] and len(timers) == 0


async def test_lesson_timers_are_cancelled_together_and_others_kept() -> None:
    timers, fired = Timers(), []
    timers.later(30.0, fired.append, 1, per_lesson=True)
    timers.later(30.0, fired.append, 2, key="greet", per_lesson=True)
    timers.later(30.0, fired.append, 3, key="retry_save")
    timers.cancel_lesson()
    assert list(timers) == ["retry_save"]
    timers.cancel_all()
    assert len(timers) == 0 and fired == []


async def test_a_failing_callback_is_logged_and_the_timer_still_leaves(caplog: pytest.LogCaptureFixture) -> None:
    timers, done = Timers(), asyncio.Event()

    def broken() -> None:
        done.set()
        raise ValueError("a bug in a callback")

    timers.later(0.0, broken, key="broken")
    async with asyncio.timeout(5):
        await done.wait()
    assert "broken" not in timers
    assert any("timer broken failed" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_timers_are_armed_only_from_the_loop() -> None:
    """A thread (a gpiozero or PortAudio callback) must post to the owner, not arm a timer itself."""
    with pytest.raises(RuntimeError):
        Timers().later(1.0, print)
