"""Run every session-store operation on one worker thread, with a deadline.

Why: the store writes and fsyncs files. On the event loop that paces the microphone and the
speaker, even a few tens of milliseconds of disk I/O is heard as a glitch, and a stuck disk would
wedge the whole kiosk. One dedicated thread keeps the operations in the order they were asked (a
checkpoint never overtakes the save that follows it) and needs no locking in the store, because
only that thread ever touches it. Every await is bounded: a store that does not answer in time
raises :class:`StoreError` like a store that failed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from appliance.contract.record import SessionRecord
from appliance.store.sessions import SessionStore, StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TIMEOUT_S = 10.0


class AsyncStore:
    """The kiosk's handle on its :class:`SessionStore`: awaitable, ordered, bounded."""

    def __init__(self, store: SessionStore, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.store = store
        self.timeout_s = timeout_s
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._pending_checkpoints: dict[str, SessionRecord] = {}
        self._checkpoint_ms: deque[float] = deque(maxlen=500)
        self._lock = threading.Lock()  # the pending map is shared by the loop and the store thread

    async def run(self, function: Callable[..., T] | str, *args: Any, timeout_s: float | None = None) -> T:
        """``store.<function>(*args)`` (a method name) or ``function(store, *args)`` on the store thread;
        StoreError on any failure or timeout."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._call, function, args)
        try:
            async with asyncio.timeout(self.timeout_s if timeout_s is None else timeout_s):
                return await asyncio.shield(future)
        except TimeoutError:
            raise StoreError(f"the session store did not answer within {self.timeout_s:g} s "
                             "(disk stalled?)") from None

    def _call(self, function: Callable[..., T] | str, args: tuple[Any, ...]) -> T:
        try:
            if isinstance(function, str):
                # A method named at run time: its result type is the caller's to state.
                return getattr(self.store, function)(*args)  # type: ignore[no-any-return]
            return function(self.store, *args)
        except StoreError:
            raise
        except Exception as exc:  # a bug or odd data in the store must read as a store failure
            log.exception("session store operation %s failed", getattr(function, "__name__", function))
            raise StoreError(f"session store failure: {type(exc).__name__}: {exc}") from None

    def checkpoint_soon(self, record: SessionRecord) -> None:
        """Queue a checkpoint without waiting for it (per-turn; must never stall the loop).

        Checkpoints of one lesson coalesce: if the thread is still busy, only the newest record is
        written, so a slow disk makes checkpoints rarer, never a growing queue.
        """
        session_id = record["session_id"]
        with self._lock:
            first = session_id not in self._pending_checkpoints
            self._pending_checkpoints[session_id] = record
        if first:
            self._executor.submit(self._write_checkpoint, session_id)

    def _write_checkpoint(self, session_id: str) -> None:
        with self._lock:
            record = self._pending_checkpoints.pop(session_id, None)
        if record is None:
            return
        started = time.perf_counter()
        try:
            self.store.checkpoint(record)
        except Exception as exc:  # logged here: nobody awaits a checkpoint
            log.error("checkpoint failed (the lesson continues, kept in memory): %s", exc)
        else:
            self._checkpoint_ms.append((time.perf_counter() - started) * 1000)

    def checkpoint_stats(self) -> dict[str, float]:
        """Latency of the recent checkpoints on the store thread (ms): count, p50, p99, max."""
        recent = sorted(self._checkpoint_ms)
        if not recent:
            return {"count": 0}
        return {"count": len(recent), "p50": round(recent[len(recent) // 2], 2),
                "p99": round(recent[min(len(recent) - 1, int(len(recent) * 0.99))], 2), "max": round(recent[-1], 2)}

    def drop_checkpoint(self, session_id: str) -> None:
        """A lesson is being saved: a checkpoint still queued for it must not overwrite the save."""
        with self._lock:
            self._pending_checkpoints.pop(session_id, None)

    async def save(self, record: SessionRecord) -> None:
        self.drop_checkpoint(record["session_id"])
        await self.run("save", record)

    def close(self) -> None:
        """Finish queued work, then close the store (called once, at exit)."""
        self._executor.shutdown(wait=True)
        self.store.close()
