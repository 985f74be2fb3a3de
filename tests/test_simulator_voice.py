"""The simulator's speech: a lesson torn down mid-sentence leaves no espeak-ng pipe behind."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import sys
from pathlib import Path

import pytest

from appliance.simulator.voice import espeak_available, synthesize


def _children() -> set[str]:
    """Names of this process's child processes (from /proc)."""
    names = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        with contextlib.suppress(OSError):
            for pid in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    names.add(Path(f"/proc/{pid}/comm").read_text().strip())
    return names


@pytest.mark.skipif(not espeak_available(), reason="needs espeak-ng")
def test_speech_cancelled_mid_sentence_leaves_nothing_for_a_closed_loop() -> None:
    """Guards against a reply cancelled mid-synthesis (the call ended) leaving espeak-ng blocked on a pipe
    nobody reads, its transport alive past the loop's end (the old code failed the last assert; when such
    a transport was finally collected it raised "Event loop is closed" in whichever test ran then)."""
    unraisable: list[str] = []
    previous = sys.unraisablehook
    sys.unraisablehook = lambda u: unraisable.append(f"{u.exc_type.__name__}: {u.exc_value}")
    try:
        loop = asyncio.new_event_loop()

        async def main() -> None:
            task = asyncio.ensure_future(synthesize("This is a long reply from the tutor. " * 200))
            async with asyncio.timeout(10):
                while "espeak-ng" not in _children():
                    await asyncio.sleep(0.005)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        loop.run_until_complete(main())
        loop.close()
        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert unraisable == []
    assert "espeak-ng" not in _children()
