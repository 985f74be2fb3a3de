"""Drain finished lessons from the local store to the companion, whenever it can be reached.

Runs as one task beside the kiosk: woken after every lesson (``kick``), on a period, and retried
with capped exponential backoff and jitter while the companion is unreachable. Sending is
idempotent (the companion keys records by ``session_id``), so a batch interrupted half-way is
simply sent again. A record the companion rejects as invalid is *parked* with its reason instead
of being retried forever; ``stella-kiosk sessions`` shows it.

Lessons delivered while the kiosk's clock was not yet synchronized carry stale dates. Once the clock is
synchronized (same boot), their corrected dates follow (``POST /api/sessions/corrections``); the store
remembers which delivered lessons still wait for that, across restarts.

Beside the lessons it sends a *heartbeat* (the kiosk's state, see ``appliance.uplink.fleet_report``) after every
sync round and every ``heartbeat_s`` while idle, so the school sees a kiosk that is up but unused. A
companion too old to know heartbeats answers 404: that is logged once, at debug, and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

from appliance.common.backoff import backoff_delay
from appliance.common.clock import Clock, system_clock
from appliance.common.redate import correct_dates, correctable_here
from appliance.contract.record import UncheckedRecord
from appliance.store.sessions import SessionStore, StoreError
from appliance.store.worker import AsyncStore
from appliance.uplink.client import CompanionClient, CompanionError

log = logging.getLogger(__name__)

#: Batch result error codes that will never succeed on a retry. ``conflict``: another kiosk already stored a
#: lesson under this session id (the companion keeps the first); ``forbidden``: the record names another kiosk.
PERMANENT_CODES = frozenset({"invalid_record", "bad_request", "too_large", "payload_too_large", "conflict",
                             "forbidden"})


class Syncer:
    """The outbox drainer. ``on_attempt(session_id, synced)`` reports each record's outcome."""

    def __init__(
        self,
        store: SessionStore | AsyncStore,
        companion: CompanionClient,
        *,
        batch_size: int = 20,
        period_s: float = 300.0,
        base_backoff_s: float = 2.0,
        max_backoff_s: float = 300.0,
        on_attempt: Callable[[str, bool], None] | None = None,
        jitter: Callable[[], float] = random.random,
        report: Callable[[], dict[str, Any]] | None = None,
        heartbeat_s: float = 300.0,
        clock: Clock | None = None,
    ) -> None:
        self.store = store if isinstance(store, AsyncStore) else AsyncStore(store)
        self.clock = clock if clock is not None else system_clock()
        """Decides when dates read before network time can be corrected (the process's clock by default)."""
        self._corrections_unknown_logged = False
        self.companion = companion
        self.batch_size = batch_size
        self.period_s = period_s
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.on_attempt = on_attempt
        self._jitter = jitter
        self._wake = asyncio.Event()
        self.failures = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.idle = asyncio.Event()
        """Set whenever the outbox was last found empty (tests wait on it)."""
        self.round_done = asyncio.Event()
        """Set after every drain attempt, successful or not (`sync --now` waits on it)."""
        self.waiting = 0
        """Lessons found waiting at the last look (for `status`, without touching the disk)."""
        self.report = report
        """The heartbeat body, read on the loop when one is sent (None: no heartbeats)."""
        self.heartbeat_s = heartbeat_s
        self._beat = asyncio.Event()
        self._heartbeat_unknown_logged = False
        self.heartbeats_sent = 0
        self.heartbeat_delivered = asyncio.Event()
        """Set after each heartbeat the companion took (tests clear it and wait)."""

    def lesson_waiting(self) -> None:
        """A lesson was just saved: count it until the next look at the store corrects the figure."""
        self.waiting += 1

    def kick(self) -> None:
        """Try now (a lesson just ended, or the network is back)."""
        self._wake.set()

    async def run(self) -> None:
        """Drain at once, then on every kick, period and backoff, with heartbeats alongside. At once: a
        (re)start is a reason to look, and a sync restarted after a crash mid-drain must not sit on its
        lessons for a period."""
        self._wake.set()
        beats = asyncio.create_task(self._heartbeats(), name="heartbeats") if self.report is not None else None
        try:
            await self._drain_rounds()
        finally:
            if beats is not None:
                beats.cancel()
                await asyncio.gather(beats, return_exceptions=True)

    async def _drain_rounds(self) -> None:
        wait_s = self.period_s
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # races with the event being set, and the task would then never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()
            self._wake.clear()
            if await self.drain():
                self.failures = 0
                wait_s = self.period_s
            else:
                self.failures += 1
                wait_s = backoff_delay(self.failures, self.base_backoff_s, self.max_backoff_s, self._jitter)
                log.warning("sync: will retry in %.1f s (attempt %d failed)", wait_s, self.failures)
            self._beat.set()
            self.round_done.set()

    async def _heartbeats(self) -> None:
        """One heartbeat at start, after each sync round, and every ``heartbeat_s`` in between."""
        while True:
            # Cleared before sending, not after: a round that ends while this heartbeat is on its way
            # sets it again, and its own heartbeat follows instead of waiting ``heartbeat_s``.
            self._beat.clear()
            await self.send_heartbeat()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.heartbeat_s):
                    await self._beat.wait()

    async def send_heartbeat(self) -> bool:
        """Send the kiosk's state now; True when the companion took it. Never raises: a heartbeat is
        best-effort (the sync itself reports an unreachable companion)."""
        if self.report is None:
            return False
        try:
            body = self.report()
            delivered = await self.companion.heartbeat(body)
        except CompanionError as exc:
            log.debug("sync: heartbeat not delivered (%s): %s", exc.code, exc.message)
            return False
        except Exception as exc:  # a broken status snapshot must not end the heartbeats, nor the kiosk
            log.warning("sync: could not build or send the heartbeat: %s", exc)
            return False
        if not delivered:
            if not self._heartbeat_unknown_logged:
                log.debug("sync: the companion does not know heartbeats (an older version); lessons still sync")
                self._heartbeat_unknown_logged = True
            return False
        self.heartbeats_sent += 1
        self.heartbeat_delivered.set()
        return True

    async def drain(self) -> bool:
        """Send everything pending, oldest first; True when the outbox is empty afterwards."""
        self._loop = asyncio.get_running_loop()
        sent_ids: set[str] = set()
        while True:
            try:
                waiting: list[UncheckedRecord] = await self.store.run("unsynced")
            except StoreError as exc:
                log.error("sync: cannot read the store: %s", exc)
                return False
            self.waiting = len(waiting)
            batch = [r for r in waiting if r["session_id"] not in sent_ids][: self.batch_size]
            try:
                batch = await self.store.run(self._redate, batch)
            except StoreError as exc:
                log.warning("sync: could not re-date lessons saved before the clock was set: %s", exc)
            if not batch:
                corrected = await self.send_corrections()
                self.idle.set()
                return corrected
            self.idle.clear()
            try:
                results = await self.companion.send_batch(batch)
            except CompanionError as exc:
                level = logging.WARNING if exc.retryable else logging.ERROR
                log.log(level, "sync: companion unreachable or refusing (%s): %s; %d lesson(s) waiting",
                        exc.code, exc.message, self.waiting)
                for record in batch:
                    self._report(record["session_id"], False)
                return False
            try:
                retry_later = await self.store.run(self._apply, batch, results)
            except StoreError as exc:
                log.error("sync: cannot record what the companion stored: %s", exc)
                return False
            sent_ids.update(r["session_id"] for r in batch)
            if retry_later:
                return False

    def _redate(self, store: SessionStore, batch: list[UncheckedRecord]) -> list[UncheckedRecord]:
        """Lessons saved before network time set the clock get their true dates (same boot only)
        before they leave the kiosk; the corrected record is saved too. Runs on the store thread."""
        out = []
        for record in batch:
            fixed = correct_dates(record, self.clock)
            if fixed is not None:
                store.save(fixed)
                log.info("sync: lesson %s re-dated by %.0f s now that the clock is synchronized",
                         record["session_id"], fixed["metrics"].get("clock_corrected_s", 0))
                record = fixed
            out.append(record)
        return out

    async def send_corrections(self) -> bool:
        """Send the corrected dates of lessons delivered before the clock was synchronized; False when the
        companion could not be asked (retried with the next round). Nothing to do, and no disk read, while
        the clock is still unsynchronized."""
        if not self.clock.synchronized():
            return True
        try:
            corrections = await self.store.run(self._corrections)
        except StoreError as exc:
            log.warning("sync: cannot read the lessons awaiting corrected dates: %s", exc)
            return False
        for start in range(0, len(corrections), self.batch_size):
            batch = corrections[start:start + self.batch_size]
            try:
                results = await self.companion.send_corrections(batch)
            except CompanionError as exc:
                if exc.status == 404:  # a companion from before corrections: its dates stay as delivered
                    if not self._corrections_unknown_logged:
                        log.info("sync: the companion does not take corrected dates (an older version); "
                                 "lessons delivered before the clock was set keep their dates there")
                        self._corrections_unknown_logged = True
                    await self._store_quietly("drop_redates", self._drop_redates, [r["session_id"] for r in batch])
                    continue
                log.warning("sync: could not send corrected dates (%s): %s", exc.code, exc.message)
                return False
            await self._store_quietly("corrections", self._apply_corrections, batch, results)
        return True

    async def _store_quietly(self, what: str, function: Callable[..., Any], *args: Any) -> None:
        try:
            await self.store.run(function, *args)
        except StoreError as exc:  # the flags stay: the correction is sent again, which is harmless
            log.warning("sync: could not record the %s: %s", what, exc)

    def _corrections(self, store: SessionStore) -> list[dict[str, Any]]:
        """The corrected records of delivered lessons still awaiting them; a lesson that cannot be corrected
        any more (recorded in an earlier boot) is no longer asked about. Runs on the store thread."""
        out = []
        for record in store.awaiting_redate():
            fixed = correct_dates(record, self.clock)
            if fixed is None:
                if "clock_anchor" in record:  # else: corrected already (a stop cut off the bookkeeping)
                    log.info("sync: lesson %s was delivered before the clock was set, in an earlier boot; its "
                             "dates cannot be corrected", record.get("session_id"))
                store.drop_redate(record["session_id"])
                continue
            out.append(fixed)
        return out

    @staticmethod
    def _drop_redates(store: SessionStore, session_ids: list[str]) -> None:
        for session_id in session_ids:
            store.drop_redate(session_id)

    @staticmethod
    def _apply_corrections(store: SessionStore, batch: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
        """Keep what the companion corrected; stop asking about what it refused (a refusal is for good: the
        same correction would be refused again). A lesson without a result is asked about again later."""
        by_id = {r["session_id"]: r for r in results if isinstance(r.get("session_id"), str)}
        for record in batch:
            session_id = record["session_id"]
            result = by_id.get(session_id)
            if result is None:
                continue
            if result.get("corrected") is True:
                store.redated(record)
                log.info("sync: lesson %s re-dated at the companion by %.0f s", session_id,
                         record["metrics"].get("clock_corrected_s", 0))
                continue
            error = result["error"] if isinstance(result.get("error"), dict) else {}
            log.warning("sync: the companion refused the corrected dates of lesson %s (%s: %s); it keeps the "
                        "dates it has", session_id, error.get("code", "refused"), error.get("message", ""))
            store.drop_redate(session_id)

    def _apply(self, store: SessionStore, batch: list[UncheckedRecord], results: list[dict[str, Any]]) -> bool:
        """Mark what the companion stored, park what it rejected for good; True if some must retry.

        Runs on the store thread; outcomes are reported back on the loop."""
        by_id = {r["session_id"]: r for r in results if isinstance(r, dict) and isinstance(r.get("session_id"), str)}
        retry_later = False
        for record in batch:
            session_id = record["session_id"]
            result = by_id.get(session_id)
            if result is not None and result.get("stored") is True:
                store.mark_synced(session_id, redate=correctable_here(record))
                self._report(session_id, True)
                continue
            error = (result or {}).get("error")
            error = error if isinstance(error, dict) else {}
            code = str(error.get("code", "missing_result"))
            if code in PERMANENT_CODES:
                reason = f"{code}: {error.get('message', '')}".strip()
                log.error("sync: companion rejected lesson %s for good (%s); parked", session_id, reason)
                store.park(session_id, reason)
            else:
                retry_later = True
            self._report(session_id, False)
        if retry_later:
            log.warning("sync: companion did not store every lesson of the batch; retrying later")
        else:
            log.info("sync: %d lesson(s) delivered", len(batch))
        return retry_later

    def _report(self, session_id: str, synced: bool) -> None:
        if self.on_attempt is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # on the store thread: hand the outcome to the loop
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self.on_attempt, session_id, synced)
        else:
            loop.call_soon(self.on_attempt, session_id, synced)
