"""What is kept: the kiosk core's :class:`~appliance.core.ports.Keeper` on the local store and the syncer.

A finished lesson is written durably (journal + index, on the store's own thread), counted for the
syncer and synced in the background; one the disk refuses is held in memory and retried, and at exit
sent to the companion or written to the system journal as a last resort. Retention runs after each
save and at start-up. The syncer's heartbeats carry the kiosk's last published status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.common.supervise import supervise
from appliance.config import Config
from appliance.contract.record import SessionRecord, UncheckedRecord
from appliance.core.lesson import Lesson
from appliance.core.messages import FirstSync
from appliance.store.sessions import SessionStore, StoreError
from appliance.store.unsaved import UnsavedLessons
from appliance.store.worker import AsyncStore
from appliance.updates.layout import Layout
from appliance.uplink.client import CompanionClient
from appliance.uplink.fleet_report import kiosk_report
from appliance.uplink.sync import Syncer

log = logging.getLogger(__name__)

SAVE_TIMEOUT_S = 10.0
"""A save the disk has not finished by then is treated as failed (kept in memory, retried)."""
MAX_AWAITING_FIRST_SYNC = 100


class StoreKeeper:
    def __init__(self, config: Config, store: SessionStore, companion: CompanionClient) -> None:
        self.config = config
        self.store = AsyncStore(store, timeout_s=SAVE_TIMEOUT_S)
        self._post: Callable[[object], None] | None = None
        self.problems: list[str] = list(getattr(store, "problems", []) or [])
        self.unsaved = UnsavedLessons(self.store, companion)
        self._status: dict[str, Any] = {}
        self._awaiting_first_sync: dict[str, SessionRecord] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.syncer = Syncer(self.store, companion, on_attempt=self._sync_attempted,
                             period_s=config.companion.sync_interval_s, heartbeat_s=config.sync.heartbeat_s,
                             report=self._report)

    def _report(self) -> dict[str, Any]:
        """The heartbeat: the kiosk's last published state with this keeper's own figures as they are now."""
        status = {**self._status, **self.summary()}
        return kiosk_report(status, Path(self.config.kiosk.state_dir), status.get("last_error"),
                            Layout(self.config.updates.prefix).state_file)

    def publish(self, status: dict[str, Any]) -> None:
        self._status = status

    def internals(self) -> dict[str, Any]:
        """Sizes that could grow over months (the soak benchmark watches them stay flat)."""
        return {"awaiting_first_sync": len(self._awaiting_first_sync), "checkpoint_ms": self.store.checkpoint_stats()}

    def summary(self) -> dict[str, Any]:
        return {"outbox": self.syncer.waiting, "held_in_memory": len(self.unsaved),
                "store_problems": list(self.problems)}

    async def start(self, post: Callable[[object], None]) -> None:
        self._post = post
        for problem in self.problems:
            log.critical("session store: %s", problem)
        await self._apply_retention()
        try:
            recovered: list[UncheckedRecord] = await self.store.run("recover_interrupted")
            for record in recovered:
                log.warning("lesson %s was interrupted (power cut or crash); kept with %d turns",
                            record.get("session_id"), len(record.get("turns") or []))
        except StoreError as exc:
            log.error("cannot recover interrupted lessons: %s", exc)
        if not self._stopping:  # a stop that came while this start awaited the store: no sync task then
            self._tasks.append(asyncio.create_task(supervise("sync", self.syncer.run), name="sync"))

    def checkpoint(self, lesson: Lesson) -> None:
        """Queued to the store thread: a power cut loses at most the turn being spoken."""
        try:
            self.store.checkpoint_soon(lesson.to_record("interrupted"))
        except Exception:
            log.exception("checkpoint failed (the lesson continues, kept in memory)")

    async def keep(self, record: SessionRecord) -> str | None:
        self.store.drop_checkpoint(record["session_id"])
        try:
            await self.store.save(record)
        except StoreError as exc:
            self.unsaved.hold(record)
            return str(exc)
        self._queue_for_sync(record)
        await self._apply_retention()
        return None

    async def retry_held(self) -> bool:
        return await self.unsaved.write(self._queue_for_sync)

    async def sync_now(self, timeout_s: float) -> int:
        self.syncer.round_done.clear()
        self.syncer.kick()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.syncer.round_done.wait()
        try:
            return await self.store.run("count_unsynced")
        except StoreError:
            return -1

    async def stop(self, budget_s: float) -> None:
        self._stopping = True
        await self.unsaved.keep_at_exit(budget_s, self._queue_for_sync)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self.store.close)

    def _queue_for_sync(self, record: SessionRecord) -> None:
        """A lesson is on disk: tell the syncer and wake it (its first attempt is reported to observers)."""
        self.syncer.lesson_waiting()
        if len(self._awaiting_first_sync) < MAX_AWAITING_FIRST_SYNC:
            self._awaiting_first_sync[record["session_id"]] = record
        self.syncer.kick()

    def _sync_attempted(self, session_id: str, synced: bool) -> None:
        record = self._awaiting_first_sync.pop(session_id, None)
        if record is not None and self._post is not None:
            self._post(FirstSync(dict(record), synced))

    async def _apply_retention(self) -> None:
        settings = self.config.kiosk
        try:
            await self.store.run("apply_retention", settings.keep_synced_days, settings.max_stored_lessons)
        except StoreError as exc:
            log.error("retention: %s", exc)
