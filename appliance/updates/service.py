"""The kiosk daemon as the updater sees it: something to restart and to watch come up (or not).

Why a port: on a kiosk it is systemd's ``stella-kiosk.service`` (Type=notify: *active* means the
daemon said READY=1); in tests a real daemon process is killed and started again. The updater only
asks three things: restart it, is it ready, has it failed since (exited at start, a crash loop, or
systemd's start limit hit).
"""

from __future__ import annotations

import subprocess
from typing import Protocol

UNIT = "stella-kiosk.service"


class KioskService(Protocol):
    def restart(self) -> None:
        """Stop the running daemon (a lesson in progress was saved before) and start the current version."""

    def ready(self) -> bool:
        """The daemon started since the last restart said READY and still runs."""

    def failed(self) -> str | None:
        """Why the daemon is not coming up (it exited, or restarts in a loop), or None while it may still."""


class SystemdService:
    """``stella-kiosk.service`` through systemctl (the updater runs as root)."""

    def __init__(self, unit: str = UNIT) -> None:
        self.unit = unit
        self._restarts_before = 0

    def _show(self) -> dict[str, str]:
        done = subprocess.run(["systemctl", "show", self.unit, "-p", "ActiveState,SubState,NRestarts,Result"],
                              capture_output=True, text=True, timeout=30)
        return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)

    def restart(self) -> None:
        self._restarts_before = int(self._show().get("NRestarts") or 0)
        # --no-block: the health check watches it come up with its own bound instead of systemctl's.
        subprocess.run(["systemctl", "reset-failed", self.unit], capture_output=True, timeout=30)
        subprocess.run(["systemctl", "restart", "--no-block", self.unit], check=True, capture_output=True,
                       timeout=30)

    def ready(self) -> bool:
        return self._show().get("ActiveState") == "active"

    def failed(self) -> str | None:
        shown = self._show()
        if shown.get("ActiveState") == "failed":
            return f"{self.unit} failed ({shown.get('Result', 'unknown')}; start limit or exit at start)"
        if shown.get("SubState") == "auto-restart" or int(shown.get("NRestarts") or 0) > self._restarts_before:
            return f"{self.unit} exited after the switch and is being restarted (a crash loop)"
        return None
