"""The daemon's side of a switch between lessons: the updater's hold over the control socket (a real
`stella-kiosk run` process, mock pins, a real lesson against the simulator)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from appliance.core.update_hold import UpdateHold
from appliance.daemon.control import send_command
from appliance.store.sessions import SessionStore
from tests.daemon_helpers import control_ok, running_daemon, write_daemon_config
from tests.harness import lesson_stack


async def hold(sock: Path, seconds: float = 30) -> dict[str, Any]:
    reply = await send_command(sock, {"command": "update-hold", "seconds": seconds})
    assert reply.get("ok"), reply
    return reply


async def status(sock: Path) -> dict[str, Any]:
    reply = await send_command(sock, {"command": "status"})
    return reply["status"]


async def until(check: Any, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def test_a_hold_waits_for_the_lesson_to_be_saved_then_refuses_new_lessons(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:
        stack.config()  # writes device.key
        state_dir, sock = tmp_path / "state", tmp_path / "control.sock"
        toml = write_daemon_config(tmp_path / "kiosk.toml", stack, state_dir, sock)
        async with running_daemon(toml, tmp_path) as daemon:
            await daemon.ready()
            assert (await status(sock))["version"] == "0.1.0"
            await control_ok(sock, "press")
            await daemon.systemd.until(lambda m: m.startswith("STATUS=connected"))
            assert (await hold(sock))["idle"] is False  # a learner is mid-lesson: the update waits
            assert (await hold(sock))["idle"] is False
            await control_ok(sock, "stop")

            async def idle() -> bool:
                return bool((await hold(sock))["idle"])

            await until(idle)
            # Idle means the lesson is on disk.
            assert [r["end_reason"] for r in SessionStore(state_dir).records()] == ["stop_command"]
            await control_ok(sock, "press")  # refused while held
            await until(lambda: asyncio.sleep(0, "an update is being installed" in daemon.stderr))
            now = await status(sock)
            assert now["state"] == "idle" and now["lesson"] is None and now["update_hold"] is True
            reply = await send_command(sock, {"command": "update-release"})
            assert reply == {"ok": True}
            await control_ok(sock, "press")  # released: lessons start again
            await daemon.systemd.until(lambda m: m.startswith("STATUS=connected"))
            assert await daemon.stop() == 0


async def test_a_hold_needs_a_bounded_lease(tmp_path: Path) -> None:
    from tests.daemon_helpers import FakeKiosk

    class Held(FakeKiosk):
        def hold_for_update(self, lease_s: float) -> dict[str, Any]:
            self.calls.append(("hold", lease_s))
            return {"idle": True, "state": "idle"}

        def release_update_hold(self) -> None:
            self.calls.append(("release", None))

    from appliance.daemon.control import ControlServer

    kiosk = Held()
    server = ControlServer(tmp_path / "c.sock", kiosk)
    for bad in (b'{"command": "update-hold"}', b'{"command": "update-hold", "seconds": 0}',
                b'{"command": "update-hold", "seconds": 601}', b'{"command": "update-hold", "seconds": true}'):
        reply = server.handle(bad)
        assert reply["ok"] is False and "lease in seconds" in reply["error"]
    assert server.handle(b'{"command": "update-hold", "seconds": 60}') == {"ok": True, "idle": True, "state": "idle"}
    assert kiosk.calls == [("hold", 60.0)]


def test_a_hold_runs_out_by_itself_when_the_updater_is_gone() -> None:
    held = UpdateHold()
    held.hold(60, now=1000.0)
    assert held.active(1059.9) and not held.active(1060.0)
    held.hold(10_000, now=0.0)  # capped: a hold can never wedge a classroom's kiosk
    assert not held.active(601.0)
    held.release()
    assert not held.active(0.0)
