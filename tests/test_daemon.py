"""The real daemon process under a fake service manager: READY, STATUS, WATCHDOG, STOPPING, the
control socket, and a graceful SIGTERM that saves the lesson in progress."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from appliance.daemon.control import send_command
from appliance.store.sessions import SessionStore
from tests.daemon_helpers import control, control_ok, running_daemon, write_daemon_config
from tests.harness import lesson_stack


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
        toml = write_daemon_config(tmp_path / "kiosk.toml", stack, state_dir, sock_path, clips)
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
