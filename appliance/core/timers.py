"""Keyed one-shot timers for the kiosk's owner task.

Why a class of its own: a kiosk runs for months, so a timer that outlived its purpose would pile up. Here a
keyed timer replaces the pending one with the same key (only the latest idle check or long-press check
matters), timers marked per-lesson are cancelled together when the lesson ends, and a timer leaves the map
when it fires or is cancelled: the map is exactly what is pending.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)


class Timers:
    def __init__(self) -> None:
        self._handles: dict[object, asyncio.TimerHandle] = {}
        self._per_lesson: set[object] = set()
        self._ids = itertools.count()

    def __len__(self) -> int:
        return len(self._handles)

    def __contains__(self, key: object) -> bool:
        return key in self._handles

    def __iter__(self) -> Iterator[object]:
        return iter(list(self._handles))

    def later(self, delay_s: float, callback: Callable[..., None], *args: Any,
              key: object = None, per_lesson: bool = False) -> None:
        """Run ``callback(*args)`` on the running loop after ``delay_s`` (called from the loop only: a
        thread that needs a timer posts a message to the owner instead)."""
        loop = asyncio.get_running_loop()
        if key is None:
            key = next(self._ids)
        self.cancel(key)
        self._handles[key] = loop.call_later(delay_s, self._fire, key, callback, args)
        if per_lesson:
            self._per_lesson.add(key)

    def cancel(self, key: object) -> None:
        handle = self._handles.pop(key, None)
        self._per_lesson.discard(key)
        if handle is not None:
            handle.cancel()

    def cancel_prefix(self, prefix: str) -> None:
        """Cancel every timer whose key is a string starting with ``prefix`` (e.g. one call's timers)."""
        for key in [k for k in self._handles if isinstance(k, str) and k.startswith(prefix)]:
            self.cancel(key)

    def cancel_lesson(self) -> None:
        """Cancel every timer that belongs to the lesson that just ended."""
        for key in list(self._per_lesson):
            self.cancel(key)

    def cancel_all(self) -> None:
        for key in list(self._handles):
            self.cancel(key)

    def _fire(self, key: object, callback: Callable[..., None], args: tuple[Any, ...]) -> None:
        self._handles.pop(key, None)
        self._per_lesson.discard(key)
        try:
            callback(*args)
        except Exception:
            log.exception("timer %s failed", key)
