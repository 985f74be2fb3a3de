"""Wait, through the daemon's control socket, until no lesson is in progress, and keep new ones from starting.

Why through the daemon: only it knows whether a learner is mid-lesson. The updater asks for a hold
with a short lease (``update-hold``) and renews it while it waits; the daemon answers ``idle`` once
the lesson in progress has ended and been saved. A daemon that is not running holds no lesson. A
daemon too old to know the verb is asked for its status instead (idle, no lesson) — there is then a
short window in which a press could start a lesson, which the restart would end and save.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from appliance.daemon.control import send_command

log = logging.getLogger(__name__)

LEASE_S = 60.0
POLL_S = 1.0


class DaemonHold:
    def __init__(self, socket_path: Path, lease_s: float = LEASE_S, poll_s: float = POLL_S) -> None:
        self.socket_path = socket_path
        self.lease_s = lease_s
        self.poll_s = poll_s

    def _ask(self, request: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return asyncio.run(send_command(self.socket_path, request, timeout_s=10))
        except ConnectionError:
            return None

    def idle(self) -> bool:
        """One request: hold (renewing the lease) and say whether the kiosk is between lessons."""
        reply = self._ask({"command": "update-hold", "seconds": self.lease_s})
        if reply is None:
            return True  # not running: no lesson to wait for
        if reply.get("ok"):
            return bool(reply.get("idle"))
        status = self._ask({"command": "status"})
        state = (status or {}).get("status") or {}
        return isinstance(state, dict) and state.get("lesson") is None and state.get("state") in ("idle", "error")

    def until_idle(self, bound_s: float) -> bool:
        """True once the kiosk is between lessons (and held there); False when ``bound_s`` passed first."""
        give_up = time.monotonic() + bound_s
        waited = False
        while not self.idle():
            if not waited:
                log.info("update: waiting for the lesson in progress to end (at most %.0f s)", bound_s)
                waited = True
            if time.monotonic() > give_up:
                return False
            time.sleep(self.poll_s)
        return True

    def release(self) -> None:
        """Take presses again (the update was abandoned before the restart)."""
        self._ask({"command": "update-release"})
