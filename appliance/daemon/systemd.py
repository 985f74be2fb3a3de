"""systemd notify protocol: READY, STATUS, WATCHDOG, STOPPING — silent no-ops outside systemd.

On the kiosk, messages go through libsystemd's ``sd_notify`` (``systemd.daemon.notify`` from
systemd-python, Debian's python3-systemd): it follows the protocol as systemd extends it (abstract and
vsock addresses, the caller's credentials) instead of this module tracking it. A hand-written datagram
remains the fallback because a developer's machine or the companion's host may lack systemd-python (it
is the kiosk extra's compiled dependency); the protocol's core is one datagram on a Unix socket, which
the standard library sends. Either way a missing ``NOTIFY_SOCKET`` path only warns once, never raises.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable

log = logging.getLogger(__name__)


def _libsystemd_notify() -> Callable[[str], bool] | None:
    """systemd-python's ``notify`` if installed (an unrelated PyPI ``systemd`` package lacks it)."""
    try:
        from systemd import daemon
    except ImportError:
        return None
    notify = getattr(daemon, "notify", None)
    return notify if callable(notify) else None


class Notifier:
    """Sends state to the service manager named by ``$NOTIFY_SOCKET`` (if any)."""

    def __init__(self, use_libsystemd: bool = True) -> None:
        self._address = os.environ.get("NOTIFY_SOCKET") or None
        if self._address and self._address.startswith("@"):
            self._address = "\0" + self._address[1:]
        self._warned = False
        self._sd_notify = _libsystemd_notify() if use_libsystemd else None

    @property
    def backend(self) -> str:
        """``libsystemd`` or ``socket``: which one sends (logged at start-up, checked by tests)."""
        return "libsystemd" if self._sd_notify is not None else "socket"

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *fields: str) -> None:
        if not self._address:
            return
        message = "\n".join(fields)
        try:
            if self._sd_notify is not None:
                # libsystemd reads NOTIFY_SOCKET itself; it raises OSError when sending fails.
                self._sd_notify(message)
                return
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._address)
                sock.sendall(message.encode())
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


class HeldReady(Notifier):
    """Passes every message to ``notifier`` except READY, which the daemon sends itself (:meth:`send_ready`).

    Why: READY=1 tells systemd, and whoever waits on `systemctl start`, that the kiosk can be used. The
    kiosk's own start-up ends before the daemon has opened the control socket, so a `status` sent at
    the kiosk's READY was refused. The daemon gives the kiosk this notifier and says READY once the
    kiosk is ready *and* its socket accepts connections. STATUS, WATCHDOG and STOPPING go through at once.
    """

    def __init__(self, notifier: Notifier) -> None:  # no super().__init__: every message goes to ``notifier``
        self._notifier = notifier
        self.last_status: str | None = None
        """The newest STATUS= text, sent again with READY so that READY never carries a stale state."""

    @property
    def backend(self) -> str:
        return self._notifier.backend

    @property
    def enabled(self) -> bool:
        return self._notifier.enabled

    def notify(self, *fields: str) -> None:
        for field in fields:
            if field.startswith("STATUS="):
                self.last_status = field.removeprefix("STATUS=")
        self._notifier.notify(*fields)

    def ready(self, status: str) -> None:
        self.last_status = status  # held: the daemon sends READY when it can be reached

    def send_ready(self) -> None:
        self._notifier.ready(self.last_status or "ready")
