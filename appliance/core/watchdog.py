"""Ping systemd's watchdog only while the kiosk's owner task keeps handling messages.

Each round posts a heartbeat through the owner's own queue and pings once it has been handled. A
wedged owner task (an await that never returns, a loop spinning in a handler) handles nothing, so
the pings stop and systemd restarts the kiosk; the checkpointed lesson is then recovered as
``interrupted``. A thread that pinged blindly would hide exactly that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from appliance.core.messages import Heartbeat

log = logging.getLogger(__name__)


class _Pinger(Protocol):
    def watchdog_interval_s(self) -> float | None: ...
    def watchdog(self) -> None: ...


class Watchdog:
    def __init__(self, post: Callable[[object], None], notifier: _Pinger) -> None:
        self._post = post
        self._notifier = notifier
        self._handled = 0
        self._changed = asyncio.Event()

    @property
    def last_handled(self) -> int:
        return self._handled

    def handled(self, seq: int) -> None:
        """The owner task handled heartbeat ``seq``."""
        self._handled = max(self._handled, seq)
        self._changed.set()

    async def run(self) -> None:
        interval_s = self._notifier.watchdog_interval_s()
        if interval_s is None:
            return
        sent = 0
        while True:
            sent += 1
            self._changed.clear()
            self._post(Heartbeat(sent))
            try:
                async with asyncio.timeout(interval_s):
                    while self._handled < sent:
                        await self._changed.wait()
                        self._changed.clear()
            except TimeoutError:
                log.error("the kiosk did not handle its heartbeat within %.1f s; not pinging the watchdog",
                          interval_s)
                continue  # no ping: if this persists, systemd restarts the kiosk
            self._notifier.watchdog()
            await asyncio.sleep(interval_s)
