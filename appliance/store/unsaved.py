"""Finished lessons the disk refused (full or read-only storage), held in memory until they are written.

Why a module of its own: this is the last line of "nothing is lost". While the kiosk runs, its owner task
retries the write on a timer. At exit the kiosk retries until its stop budget, then sends what is left to
the companion, and as a last resort writes each lesson into the journal as one line that
``stella-kiosk sessions import`` reads back. Nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from appliance.contract.record import SessionRecord
from appliance.store.journal import LOST_LESSON_MARKER
from appliance.store.sessions import StoreError
from appliance.store.worker import AsyncStore
from appliance.uplink.client import CompanionClient

log = logging.getLogger(__name__)

Record = SessionRecord
"""Held lessons are the ones this kiosk has just built (nothing here was read back from disk)."""


class UnsavedLessons:
    def __init__(self, store: AsyncStore, companion: CompanionClient) -> None:
        self.store = store
        self.companion = companion
        self._records: list[Record] = []

    def __len__(self) -> int:
        return len(self._records)

    def hold(self, record: Record) -> None:
        self._records.append(record)

    async def write(self, saved: Callable[[Record], None]) -> bool:
        """Write the held lessons in order, calling ``saved`` after each; False (logged) when the store
        still refuses, with the rest kept for the next try."""
        while self._records:
            record = self._records[0]
            try:
                await self.store.save(record)
            except StoreError as exc:
                log.error("still cannot save %d lesson(s): %s", len(self._records), exc)
                return False
            self._records.pop(0)
            log.info("lesson %s saved after a retry", record["session_id"])
            saved(record)
        return True

    async def keep_at_exit(self, budget_s: float, saved: Callable[[Record], None]) -> None:
        """Stopping with lessons held: retry the disk until ``budget_s``, then the companion, then the journal."""
        if not self._records:
            return
        deadline = time.monotonic() + budget_s
        delay = 0.5
        while self._records and time.monotonic() < deadline:
            if await self.write(saved):
                return
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 4.0)
        delivered: set[str] = set()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(max(1.0, min(5.0, deadline - time.monotonic() + 3.0))):
                results = await self.companion.send_batch(list(self._records))
                delivered = {r["session_id"] for r in results
                             if r.get("stored") is True and isinstance(r.get("session_id"), str)}
        for record in self._records:
            if record["session_id"] in delivered:
                log.warning("lesson %s could not be written to disk but the companion has it",
                            record["session_id"], extra={"SESSION_ID": record["session_id"]})
                continue
            line = json.dumps(record, ensure_ascii=True, separators=(",", ":"))
            log.critical("%s %s", LOST_LESSON_MARKER, line,
                         extra={"SESSION_ID": record["session_id"], "LESSON_RECORD": line})
            log.critical("lesson %s could not be written to disk nor sent; it is in the journal: restore it "
                         "with `journalctl -u stella-kiosk -o cat | stella-kiosk sessions import -`",
                         record["session_id"])
        self._records.clear()
