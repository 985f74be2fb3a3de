"""One kiosk per store: an exclusive lock file in the state directory, held for the process's life.

Why: two daemons started on the same config would both write the same lessons and the second would
take over the first one's control socket. ``flock`` is released by the kernel when the process dies
(even by SIGKILL), so a crashed kiosk never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_NAME = "kiosk.lock"


class AlreadyRunning(Exception):
    """Another kiosk process holds the lock on this state directory (``pid``: its process id, or "")."""

    def __init__(self, message: str, pid: str = "") -> None:
        super().__init__(message)
        self.pid = pid


class InstanceLock:
    """Hold ``<state_dir>/kiosk.lock``; :meth:`acquire` raises AlreadyRunning if another process has it."""

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise AlreadyRunning(f"another stella-kiosk is already running on {self.path.parent}{who}; "
                                 "stop it first (systemctl stop stella-kiosk)", holder) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing drops the flock
            self._fd = None


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        return os.pread(fd, 32, 0).decode().strip()
    return ""
