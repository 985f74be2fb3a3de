"""The real daemon process under a fake service manager: READY, STATUS, WATCHDOG, STOPPING, the
control socket, and a graceful SIGTERM that saves the lesson in progress."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from appliance.daemon.control import send_command
from appliance.store.sessions import SessionStore
from tests.harness import lesson_stack

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


def write_daemon_config(path: Path, stack: Any, state_dir: Path, sock_path: Path) -> Path:
    """A kiosk.toml for a real daemon process against the test stack (mock pins, WAV mic, no speaker)."""
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


async def test_daemon_notifies_and_saves_on_sigterm(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:
        config = stack.config()  # writes device.key
        state_dir = tmp_path / "state"
        sock_path = tmp_path / "control.sock"
        assert config.kiosk.id == "kiosk-test"
        toml = write_daemon_config(tmp_path / "kiosk.toml", stack, state_dir, sock_path)
        async with running_daemon(toml, tmp_path) as daemon:
            systemd = daemon.systemd
            ready = await daemon.ready()
            assert "STATUS=idle" in ready
            assert "state:   idle" in await control_ok(sock_path, "status")  # at once: READY means reachable
            await systemd.until(lambda m: m == "WATCHDOG=1")
            await control_ok(sock_path, "press")
            await systemd.until(lambda m: m.startswith("STATUS=connected"))
            await control_ok(sock_path, "say", "Hello from the teacher")
            out = await control_ok(sock_path, "status")
            assert "state:   connected" in out and "lesson:" in out
            daemon.proc.send_signal(signal.SIGTERM)
            await systemd.until(lambda m: "STOPPING=1" in m)
            assert await asyncio.wait_for(daemon.proc.wait(), 30) == 0
        stderr = daemon.stderr
        assert "Traceback" not in stderr, stderr
        assert stack.device_key not in stderr
        records = list(SessionStore(state_dir).records())
        assert [r["end_reason"] for r in records] == ["shutdown"]
        assert any(t["text"] == "Hello from the teacher" for t in records[0]["turns"])
        assert not sock_path.exists()
        code, _, err = await control(sock_path, "status")
        assert code == 1 and "no kiosk is running" in err


async def test_run_speaks_input_wavs_one_after_each_tutor_turn(tmp_path: Path) -> None:
    """`audio.input_wavs` was documented but `run` never spoke the clips (only the demo did), so an
    admin could not try a kiosk end to end without a microphone."""
    from tests.harness import LEARNER_LINES, espeak

    clips = [espeak(LEARNER_LINES[0], tmp_path / "hello.wav"), espeak(LEARNER_LINES[1], tmp_path / "stop.wav")]
    async with lesson_stack(tmp_path) as stack:
        stack.config()  # writes device.key
        state_dir = tmp_path / "state"
        sock_path = tmp_path / "control.sock"
        toml = write_daemon_config(tmp_path / "kiosk.toml", stack, state_dir, sock_path)
        wavs = ", ".join(f'"{clip}"' for clip in clips)
        toml.write_text(toml.read_text().replace('output = "null"', f'output = "null"\ninput_wavs = [{wavs}]'))
        async with running_daemon(toml, tmp_path, watchdog_usec=None) as daemon:
            systemd = daemon.systemd
            await daemon.ready()
            await control_ok(sock_path, "press")
            await systemd.until(lambda m: m.startswith("STATUS=connected"))
            systemd.messages.clear()  # from here on, only what follows the lesson's start
            await systemd.until(lambda m: m.startswith("STATUS=idle"), timeout=60)
            assert await daemon.stop() == 0
        assert "Traceback" not in daemon.stderr, daemon.stderr
    records = list(SessionStore(state_dir).records())
    assert [r["end_reason"] for r in records] == ["voice_stop"]
    spoken = [t["text"] for t in records[0]["turns"] if t["role"] == "learner"]
    assert spoken == list(LEARNER_LINES)
    assert all(t["source"] == "voice" for t in records[0]["turns"])


async def test_a_second_kiosk_on_the_same_socket_leaves_the_first_reachable(tmp_path: Path) -> None:
    """Two kiosks with their own state directories but one control_socket: the second refuses the
    socket while the first serves it, and stopping the second must leave the first one's socket alone
    (it used to unlink it on exit, and `status` then said no kiosk was running)."""
    async with lesson_stack(tmp_path) as stack:
        stack.config()  # writes device.key
        sock_path = tmp_path / "control.sock"
        first_toml = write_daemon_config(tmp_path / "first.toml", stack, tmp_path / "first", sock_path)
        second_toml = write_daemon_config(tmp_path / "second.toml", stack, tmp_path / "second", sock_path)
        second_toml.write_text(second_toml.read_text().replace('id = "kiosk-test"', 'id = "kiosk-two"'))
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        async with running_daemon(first_toml, tmp_path / "a", watchdog_usec=None) as first:
            await first.ready()
            assert "(kiosk kiosk-test)" in await control_ok(sock_path, "status")
            async with running_daemon(second_toml, tmp_path / "b", watchdog_usec=None) as second:
                await second.ready()
                assert "(kiosk kiosk-test)" in await control_ok(sock_path, "status")  # still the first one
                assert await second.stop() == 0
            assert "control socket" in second.stderr and str(sock_path) in second.stderr, second.stderr
            assert "(kiosk kiosk-test)" in await control_ok(sock_path, "status")
            assert await first.stop() == 0
        assert not sock_path.exists()  # the first kiosk removes the socket it made


async def test_ready_means_the_control_socket_answers(tmp_path: Path) -> None:
    """READY=1 tells systemd (and scripts after `systemctl start`) that the kiosk can be used. Before, it
    was sent before the control socket existed: a `status` sent the instant READY=1 arrived was refused
    ("no kiosk is running here") 4 times out of 4. Now it is answered every time."""
    async with lesson_stack(tmp_path) as stack:
        stack.config()  # writes device.key
        for attempt in range(5):
            work = tmp_path / f"start-{attempt}"
            work.mkdir()
            sock_path = work / "control.sock"
            toml = write_daemon_config(tmp_path / f"kiosk-{attempt}.toml", stack, work / "state", sock_path)
            async with running_daemon(toml, work, watchdog_usec=None) as daemon:
                await daemon.ready()
                try:
                    reply = await send_command(sock_path, {"command": "status"})
                except ConnectionError as exc:
                    raise AssertionError(f"start {attempt + 1}: READY=1 came before the socket answered: "
                                         f"{exc}") from None
                assert reply["ok"] and reply["status"]["state"] == "idle", reply
                assert await daemon.stop() == 0
