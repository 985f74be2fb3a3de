"""Local control socket: `stella-kiosk status | press | hold SECONDS | stop | say "text"` talk to the
running kiosk.

One JSON object per line in each direction over a UNIX stream socket. The socket is created mode
0660, so only root and the service's group can use it (a teacher's account added to that group can
type to the tutor; learners cannot). Requests are handed to the kiosk's owner task like any other
message; the socket code never touches kiosk state itself.

``update-hold`` (the updater's, with a lease in ``seconds``) refuses new lessons until the lease runs
out or ``update-release``, and answers ``idle: true`` once no lesson is in progress and every finished
one is saved: only then does the updater switch versions and restart the kiosk.

``press`` is a click (press then release), as a learner's quick press is: a press that never released
would turn into a long press and end the lesson. ``hold`` keeps the button down for some seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
MAX_HOLD_S = 60.0
MAX_LEASE_S = 600.0


class Controllable(Protocol):
    def press(self, at: float | None = None) -> None: ...
    def release(self, at: float | None = None) -> None: ...
    def say(self, text: str) -> None: ...
    def request_stop(self) -> None: ...
    def status(self) -> dict[str, Any]: ...
    async def sync_now(self, timeout_s: float) -> int: ...
    def hold_for_update(self, lease_s: float) -> dict[str, Any]: ...
    def release_update_hold(self) -> None: ...


class ControlServer:
    """Serves control requests for one kiosk on a UNIX socket."""

    def __init__(self, path: Path, kiosk: Controllable) -> None:
        self.path = path
        self.kiosk = kiosk
        self._server: asyncio.AbstractServer | None = None
        self._bound: tuple[int, int] | None = None
        """(device, inode) of the socket file this process made: the only one :meth:`stop` removes."""

    async def start(self) -> None:
        """Serve on ``path``; OSError if that cannot be done (e.g. another kiosk already serves it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if await answers(self.path):
            raise OSError(f"another kiosk is already serving {self.path}; not taking it over")
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise OSError(f"{self.path} exists and is not a socket; not replacing it")
            self.path.unlink()  # a stale socket from a killed run
        old_umask = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                           limit=MAX_REQUEST)
        finally:
            os.umask(old_umask)
        self._bound = _identity(self.path)
        os.chmod(self.path, 0o660)

    async def stop(self) -> None:
        """Stop serving and remove the socket file, but only the one this process bound.

        Why the check: a kiosk that refused the socket (another kiosk serves it), or whose file was
        replaced since, would otherwise unlink a live socket of another process on its way out, and
        that kiosk would become unreachable.
        """
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        bound, self._bound = self._bound, None
        if bound is not None and _identity(self.path) == bound:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        reply: dict[str, Any]
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            if not line:  # connected and left without a request (a probe): nobody to answer
                writer.close()
                return
            if _is_sync(line):
                reply = {"ok": True, "outbox": await self.kiosk.sync_now(timeout_s=50)}
            else:
                reply = self.handle(line)
        except (TimeoutError, ValueError, asyncio.LimitOverrunError):
            reply = {"ok": False, "error": "send one JSON request per line"}
        writer.write((json.dumps(reply) + "\n").encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "not JSON"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "a request is a JSON object"}
        command = request.get("command")
        if command == "status":
            return {"ok": True, "status": self.kiosk.status()}
        if command == "press":
            self.kiosk.press()
            self.kiosk.release()
            return {"ok": True}
        if command == "hold":
            seconds = request.get("seconds")
            if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not 0 < seconds <= MAX_HOLD_S:
                return {"ok": False, "error": f"hold needs a number of seconds (more than 0, at most {MAX_HOLD_S:g})"}
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return {"ok": False, "error": "hold works only over the control socket"}
            self.kiosk.press()
            loop.call_later(float(seconds), self.kiosk.release)
            return {"ok": True}
        if command == "update-hold":
            lease = request.get("seconds")
            if not isinstance(lease, int | float) or isinstance(lease, bool) or not 0 < lease <= MAX_LEASE_S:
                return {"ok": False,
                        "error": f"update-hold needs a lease in seconds (more than 0, at most {MAX_LEASE_S:g})"}
            return {"ok": True, **self.kiosk.hold_for_update(float(lease))}
        if command == "update-release":
            self.kiosk.release_update_hold()
            return {"ok": True}
        if command == "stop":
            self.kiosk.request_stop()
            return {"ok": True}
        if command == "say":
            text = request.get("text")
            if not isinstance(text, str) or not text.strip():
                return {"ok": False, "error": "say needs some text"}
            if len(text) > 2000:
                return {"ok": False, "error": "text too long (2000 characters at most)"}
            self.kiosk.say(text.strip())
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {command!r}; use status, press, hold, stop or say"}


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino)


async def answers(path: Path) -> bool:
    """True when a live process accepts connections on ``path`` (a stale socket file refuses)."""
    if not path.exists():
        return False
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def _is_sync(line: bytes) -> bool:
    try:
        request = json.loads(line)
    except ValueError:
        return False
    return isinstance(request, dict) and request.get("command") == "sync"


async def send_command(path: Path, request: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Client side: one request, one reply. Raises ConnectionError with a readable message."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout_s)
    except FileNotFoundError:
        raise ConnectionError(f"no kiosk is running here ({path} does not exist)") from None
    except PermissionError:
        raise ConnectionError(f"permission denied on {path}: run as root or a member of the "
                              "kiosk's group") from None
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"cannot reach the kiosk at {path}: {exc}") from None
    try:
        writer.write((json.dumps(request) + "\n").encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
    finally:
        writer.close()
    try:
        reply = json.loads(line)
    except ValueError:
        raise ConnectionError("the kiosk sent an unreadable reply") from None
    return reply if isinstance(reply, dict) else {"ok": False, "error": "unreadable reply"}
