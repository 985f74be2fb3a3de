"""Keep the next lesson's plan and ephemeral token ready while the kiosk is idle.

Why: a press should go straight to the WebRTC call. Fetching a plan (an LLM call upstream) and a
token on the press adds a second or more; fetched ahead, press → connected is only the call itself.
A token expires (it limits *starting* a call), so the pair is refreshed before that, and each pair
serves one lesson only.

Freshness is judged on the kiosk's monotonic clock only (:attr:`RealtimeToken.deadline`), never by
comparing the companion's ``expires_at`` with the kiosk's wall clock: a board that booted with a stale
date, or whose date was set wrong, would otherwise keep an expired token (the press fails with
``expired_ephemeral_key``) or throw away every fresh one (minting until the companion's hourly limit).
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
    """One plan + token kept fresh; ``take()`` / ``take_or_wait()`` hand it out, ``kick()`` fetches the next."""

    def __init__(
        self,
        companion: CompanionClient,
        level: str,
        *,
        refresh_margin_s: float = 120.0,
        usable_margin_s: float = 20.0,
        retry_base_s: float = 2.0,
        retry_max_s: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.companion = companion
        self.level = level
        self.refresh_margin_s = refresh_margin_s
        """Refresh this long before the token's deadline (or at half its lifetime, if that comes later)."""
        self.usable_margin_s = usable_margin_s
        """A token with less left than this is not handed out: the call might not start in time."""
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self._monotonic = monotonic
        """The clock token deadlines are on (the companion client's; ``time.monotonic`` in the kiosk)."""
        self._ready: Materials | None = None
        self._refresh_at = 0.0
        self._wake = asyncio.Event()
        self.failures = 0
        self._paused = False
        self._retry_wait_s = 0.0
        self._in_flight: asyncio.Future[None] | None = None
        """Resolved when the fetch under way ends, whatever its outcome (None: no fetch under way)."""
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
        if ready[1].remaining_s(self._monotonic()) < self.usable_margin_s:
            log.info("prefetched token about to expire; fetching on demand")
            return None
        return ready

    async def take_or_wait(self, timeout_s: float) -> Materials | None:
        """For a press: the ready pair; else the pair of the fetch already under way, waited for at most
        ``timeout_s``; else None at once (nothing ready, nothing under way: the caller fetches).

        Why: a press during the idle fetch would otherwise fetch a second plan and token, costing an
        upstream planner call and a token of the hourly allowance. Like :meth:`take`, it pauses the
        prefetching until :meth:`kick`. A fetch still under way after the timeout carries on; its pair then
        serves the next press. None also when that fetch fails (the caller's own fetch reports why)."""
        ready = self.take()
        if ready is not None:
            return ready
        in_flight = self._in_flight
        if in_flight is None:
            return None
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.shield(in_flight)  # the wait may be cancelled; the fetch goes on
        except TimeoutError:
            log.info("the prefetch under way did not finish within %.1f s; fetching on demand", timeout_s)
            return None
        return self.take()

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
            await self._fetch()

    async def _fetch(self) -> None:
        """One plan + token; a failure backs off. Whoever waits in :meth:`take_or_wait` is woken either way."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight = done
        try:
            try:
                plan = await self.companion.plan(level=self.level)
                token = await self.companion.token(plan_id=plan.plan_id)
            except CompanionError as exc:
                self._failed(exc.message)
                return
            lifetime = token.remaining_s(self._monotonic())
            if lifetime < self.usable_margin_s:
                # Another fetch would mint another such token (each one counts against the kiosk's hourly
                # allowance): prefetch nothing until the next lesson; the press fetches its own.
                log.warning("the companion's tokens live only %.0f s, less than the %.0f s a call needs to start; "
                            "not prefetching them (check the companion's token_ttl_s)", lifetime,
                            self.usable_margin_s)
                self._paused = True
                return
            self.failures = 0
            self._ready = (plan, token)
            # Refresh `refresh_margin_s` before the deadline, but never in the token's first half-life: a short
            # token lifetime must not turn into a fetch loop.
            self._refresh_at = token.deadline - min(self.refresh_margin_s, lifetime / 2)
            self.filled.set()
            log.debug("next lesson ready: plan %s, token valid %.0f s", plan.plan_id, lifetime)
        finally:
            self._in_flight = None
            done.set_result(None)

    def _failed(self, why: str) -> None:
        self.failures += 1
        self._retry_wait_s = backoff_delay(self.failures, self.retry_base_s, self.retry_max_s)
        log.info("prefetch failed (%s); retrying in %.1f s", why, self._retry_wait_s)

    def _next_wait_s(self) -> float:
        """0 when a fetch is due now; otherwise how long until it is."""
        if self._paused:
            return 3600.0
        if self._ready is None:
            return self._retry_wait_s if self.failures else 0.0
        return max(0.0, self._refresh_at - self._monotonic())
