"""Keep a background task alive: a crash is logged once with its context and the task restarted
with capped backoff, never left dead.

Why: a kiosk runs for months with nobody watching. A sync task that died on one odd record would
leave every later lesson on the kiosk forever ("Task exception was never retrieved", and nothing
else); a supervisor turns that into one logged traceback and a retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from appliance.common.backoff import backoff_delay

log = logging.getLogger(__name__)


async def supervise(name: str, start: Callable[[], Coroutine[Any, Any, Any]], *,
                    base_s: float = 1.0, max_s: float = 60.0, healthy_after_s: float = 60.0) -> None:
    """Run ``start()`` until cancelled; restart it after a crash or an unexpected return.

    The first crash of a streak is logged with its traceback, later ones in one line each, so a
    task that fails on every try does not flood the journal. A run that lasted ``healthy_after_s``
    resets the streak (and the backoff).
    """
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        started = loop.time()
        try:
            await start()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            problem: str | BaseException = exc
        else:
            problem = "returned unexpectedly"
        if loop.time() - started >= healthy_after_s:
            failures = 0
        failures += 1
        delay = backoff_delay(failures, base_s, max_s)
        if failures == 1 and isinstance(problem, BaseException):
            log.error("background task %s crashed; restarting in %.1f s", name, delay, exc_info=problem)
        else:
            log.error("background task %s %s (%d in a row); restarting in %.1f s", name,
                      f"crashed: {problem!r}" if isinstance(problem, BaseException) else problem, failures, delay)
        await asyncio.sleep(delay)
