"""Keep the next lesson's plan and ephemeral token ready while the kiosk is idle.

Why: a press should go straight to the WebRTC call. Fetching a plan (an LLM call upstream) and a
token on the press adds a second or more; fetched ahead, press → connected is only the call itself.
A token expires (it limits *starting* a call), so the pair is refreshed before that, and each pair
serves one lesson only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from appliance.common.backoff import backoff_delay
from appliance.uplink.client import CompanionClient, CompanionError, LessonPlan, RealtimeToken

log = logging.getLogger(__name__)

Materials = tuple[LessonPlan, RealtimeToken]


class Prefetcher:
    """One plan + token kept fresh; ``take()`` hands it out and starts fetching the next."""

    def __init__(
        self,
        companion: CompanionClient,
        level: str,
        *,
        refresh_margin_s: float = 120.0,
        usable_margin_s: float = 20.0,
        retry_base_s: float = 2.0,
        retry_max_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.companion = companion
        self.level = level
        self.refresh_margin_s = refresh_margin_s
        self.usable_margin_s = usable_margin_s
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self._clock = clock
        self._ready: Materials | None = None
        self._wake = asyncio.Event()
        self.failures = 0
        self._paused = False
        self._retry_wait_s = 0.0
        self.filled = asyncio.Event()
        """Set while a fresh pair is ready."""

    def take(self) -> Materials | None:
        """The prefetched pair if its token is still good for starting a call, else None.

        The next pair is fetched when the kiosk calls :meth:`kick` after the lesson, so nothing
        competes with the call for the network while it starts.
        """
        ready, self._ready = self._ready, None
        self.filled.clear()
        self._paused = True
        if ready is None:
            return None
        if ready[1].expires_at - self._clock() < self.usable_margin_s:
            log.info("prefetched token about to expire; fetching on demand")
            return None
        return ready

    def kick(self) -> None:
        """Fetch the next pair now (a lesson ended)."""
        self._paused = False
        self._wake.set()

    async def run(self) -> None:
        while True:
            wait_s = self._next_wait_s()
            if wait_s > 0:
                with contextlib.suppress(TimeoutError):  # asyncio.timeout: see Syncer.run
                    async with asyncio.timeout(wait_s):
                        await self._wake.wait()
                self._wake.clear()
                # Woken or timed out: fetch unless paused for a lesson or the pair is still fresh.
                if self._paused or (self._ready is not None and self._next_wait_s() > 0):
                    continue
            try:
                plan = await self.companion.plan(level=self.level)
                token = await self.companion.token(plan_id=plan.plan_id)
            except CompanionError as exc:
                self.failures += 1
                self._retry_wait_s = backoff_delay(self.failures, self.retry_base_s, self.retry_max_s)
                log.info("prefetch failed (%s); retrying in %.1f s", exc.message, self._retry_wait_s)
                continue
            self.failures = 0
            self._ready = (plan, token)
            self.filled.set()
            log.debug("next lesson ready: plan %s, token valid %.0f s", plan.plan_id,
                      token.expires_at - self._clock())

    def _next_wait_s(self) -> float:
        """0 when a fetch is due now; otherwise how long until it is."""
        if self._paused:
            return 3600.0
        if self._ready is None:
            return self._retry_wait_s if self.failures else 0.0
        remaining = self._ready[1].expires_at - self._clock() - self.refresh_margin_s
        return max(0.0, remaining)
