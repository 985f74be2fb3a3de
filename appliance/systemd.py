"""systemd notify protocol: READY, STATUS, WATCHDOG, STOPPING — silent no-ops outside systemd.

Why our own ``sd_notify``: it is one datagram; doing it with the socket module lets the daemon run
(and be tested) with or without systemd-python, and a missing ``NOTIFY_SOCKET`` path never raises.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    """Sends state to the service manager named by ``$NOTIFY_SOCKET`` (if any)."""

    def __init__(self) -> None:
        self._address = os.environ.get("NOTIFY_SOCKET") or None
        if self._address and self._address.startswith("@"):
            self._address = "\0" + self._address[1:]
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall("\n".join(fields).encode())
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at NOTIFY_SOCKET (%s); continuing", exc)
                self._warned = True

    def ready(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.notify(f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    @staticmethod
    def watchdog_interval_s() -> float | None:
        """Half the watchdog timeout systemd asked for, or None when there is no watchdog."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1e6 / 2
        except ValueError:
            return None
