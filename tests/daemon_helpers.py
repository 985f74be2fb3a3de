"""A real `stella-kiosk run` process under a fake service manager, and talking to it as an admin does.

Shared by every test that starts the daemon (tests/test_daemon.py, test_unattended.py, test_offline.py,
test_running_store.py) and by the control-socket tests (:class:`FakeKiosk`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


class FakeSystemd:
    """A bound NOTIFY_SOCKET that collects every datagram the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    async def until(self, predicate, timeout: float = 20.0) -> str:
        loop = asyncio.get_running_loop()
        for message in self.messages:
            if predicate(message):
                return message
        async with asyncio.timeout(timeout):
            while True:
                data = await loop.sock_recv(self.sock, 4096)
                message = data.decode()
                self.messages.append(message)
                if predicate(message):
                    return message

    def close(self) -> None:
        self.sock.close()


def write_daemon_config(path: Path, stack: Any, state_dir: Path, sock_path: Path,
                        input_wavs: Sequence[Path] = ()) -> Path:
    """A kiosk.toml for a real daemon process against the test stack (mock pins, WAV mic, no speaker);
    ``input_wavs``: the scripted learner's clips."""
    wavs = ", ".join(f'"{clip}"' for clip in input_wavs)
    path.write_text(f"""
[kiosk]
id = "kiosk-test"
state_dir = "{state_dir}"
control_socket = "{sock_path}"
[companion]
url = "{stack.companion.base_url}"
device_key_file = "{path.parent / 'device.key'}"
[realtime]
base_url = "{stack.simulator.base_url}"
allow_loopback_ice = true
[audio]
input = "wav"
output = "null"
input_wavs = [{wavs}]
[gpio]
pin_factory = "mock"
""")
    return path


async def control(path: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appliance.cli", args[0], "--socket", str(path), *args[1:],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def control_ok(path: Path, *args: str) -> str:
    """A control command that must be answered: its output, or a failure that says what the kiosk said."""
    code, out, err = await control(path, *args)
    assert code == 0, f"`stella-kiosk {' '.join(args)}` exited {code}: {err.strip()}"
    return out


class Daemon:
    """A real `stella-kiosk run` process under a fake service manager (see :func:`running_daemon`).

    Its stderr is read all along (a full pipe would block the daemon) and kept in :attr:`stderr`.
    """

    def __init__(self, proc: asyncio.subprocess.Process, systemd: FakeSystemd) -> None:
        self.proc = proc
        self.systemd = systemd
        self._stderr = bytearray()
        self._reader = asyncio.create_task(self._read_stderr())

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self._stderr += chunk

    @property
    def stderr(self) -> str:
        return self._stderr.decode(errors="replace")

    async def ready(self, timeout: float = 30.0) -> str:
        """Wait for READY=1; fail at once, with the daemon's stderr, if it exits first."""
        ready = asyncio.ensure_future(self.systemd.until(lambda m: "READY=1" in m, timeout))
        exited = asyncio.ensure_future(self.proc.wait())
        try:
            await asyncio.wait({ready, exited}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            exited.cancel()
        if not ready.done():
            ready.cancel()
            await asyncio.wait_for(asyncio.shield(self._reader), 10)
            raise AssertionError(f"the daemon exited {self.proc.returncode} before READY=1:\n{self.stderr}")
        return ready.result()

    async def stop(self, timeout: float = 30) -> int:
        """SIGTERM, as systemd stops it; returns the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.proc.wait(), timeout)


@asynccontextmanager
async def running_daemon(toml: Path, tmp_path: Path, watchdog_usec: int | None = 1_000_000
                         ) -> AsyncIterator[Daemon]:
    """Start the daemon on ``toml`` with NOTIFY_SOCKET (in ``tmp_path``) and WATCHDOG_USEC set. However
    the body ends (a failed assertion, a timeout), the daemon is killed if it still runs, and its
    stderr stays readable in ``daemon.stderr``."""
    systemd = FakeSystemd(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(systemd.path), "PYTHONPATH": str(ROOT)}
    env.pop("WATCHDOG_PID", None)
    env.pop("WATCHDOG_USEC", None)
    if watchdog_usec is not None:
        env["WATCHDOG_USEC"] = str(watchdog_usec)
    try:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "appliance.cli", "run", "--config",
                                                    str(toml), env=env, stderr=asyncio.subprocess.PIPE)
    except BaseException:
        systemd.close()
        raise
    daemon = Daemon(proc, systemd)
    try:
        yield daemon
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.shield(proc.wait())
        await asyncio.wait_for(asyncio.shield(daemon._reader), 10)
        systemd.close()


class FakeKiosk:
    """What a control server needs of a kiosk, recording each call (the control socket tested alone)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def press(self, at: float | None = None) -> None:
        self.calls.append(("press", None))

    def release(self, at: float | None = None) -> None:
        self.calls.append(("release", at))

    def say(self, text: str) -> None:
        self.calls.append(("say", text))

    def request_stop(self) -> None:
        self.calls.append(("stop", None))

    def status(self) -> dict[str, Any]:
        return {"state": "idle"}

    async def sync_now(self, timeout_s: float) -> int:
        return 0
