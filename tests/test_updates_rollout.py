"""End to end with real processes: a companion serving a signed repository, a running kiosk daemon (mock
pins, WAV audio) from release 0.2.0's own venv, and the updater taking 0.3.0 between lessons, then
rolling back a 0.4.0 that exits at start and a 0.5.0 that fails the doctor, each marked bad."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.companion.console.accounts import add_user
from appliance.config import load_config
from appliance.daemon.control import send_command
from appliance.store.sessions import SessionStore
from appliance.updates import progress as saved
from appliance.updates.updater import Updater
from appliance.updates.wiring import kiosk_parts
from tests.console_helpers import Browser
from tests.daemon_helpers import control_ok, write_daemon_config
from tests.harness import KIOSK_ID
from tests.update_helpers import (
    SITE,
    DaemonProcess,
    ReleaseBuilds,
    builds,
    district,
    first_release,
    install_first,
    pip_from,
)

__all__ = ["builds", "first_release"]  # session fixtures used below

# Builds four release venvs and restarts a real daemon six times: minutes on a busy machine.
pytestmark = pytest.mark.timeout(900)

HEALTH_TIMEOUT_S = 60.0


async def status(sock: Path) -> dict[str, Any]:
    reply = await send_command(sock, {"command": "status"})
    assert reply.get("ok"), reply
    return reply["status"]


async def until(check: Any, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


async def test_a_running_kiosk_updates_between_lessons_and_rolls_back_broken_releases(
        tmp_path: Path, builds: ReleaseBuilds, first_release: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with district(tmp_path, builds) as d:
        d.stack.config()  # writes device.key
        layout = install_first(tmp_path / "opt", first_release)
        state_dir, sock = tmp_path / "state", tmp_path / "control.sock"
        toml = write_daemon_config(tmp_path / "kiosk.toml", d.stack, state_dir, sock)
        with toml.open("a") as f:
            f.write(f'[updates]\nenabled = true\ntrusted_root = "{d.root_file}"\nprefix = "{layout.prefix}"\n'
                    f"health_timeout_s = {HEALTH_TIMEOUT_S}\n")
        config = load_config(toml)
        work = tmp_path / "service"
        work.mkdir()
        service = DaemonProcess(layout, toml, work)
        parts = kiosk_parts(config, service=service, python=sys.executable, extra_site=(SITE,))
        reports: list[tuple[str, str | None, str]] = []
        send_report = parts.report

        def report(progress: saved.Progress, version: str) -> None:
            reports.append((progress.state, progress.error, version))
            send_report(progress, version)  # the real heartbeat to the real companion

        parts.report = report
        try:
            with pip_from(builds.wheelhouse):
                await asyncio.to_thread(service.restart)
                await asyncio.to_thread(service.wait_ready)
                assert (await status(sock))["version"] == "0.2.0"

                # N+1, while a learner is mid-lesson: built beside, switched only once the lesson is saved.
                d.publish("0.3.0")
                await d.roll_out("0.3.0")
                await control_ok(sock, "press")
                await until(lambda: _state_is(sock, "connected"))
                round_1 = asyncio.create_task(asyncio.to_thread(Updater(parts).run_once))

                async def waiting() -> bool:
                    if round_1.done():  # it should be waiting for the lesson: say how it ended instead
                        raise AssertionError(f"the round ended early: {round_1.result()!r}, "
                                             f"{saved.load(layout.state_file)!r}")
                    return saved.load(layout.state_file).step == "waiting-for-idle"

                await until(waiting, timeout=240)
                assert layout.is_complete("0.3.0") and layout.version_of(layout.current) == "0.2.0"
                assert service.starts == 1  # never restarted during the lesson
                assert (await status(sock))["lesson"] is not None
                await control_ok(sock, "stop")
                assert await asyncio.wait_for(round_1, 240) == "updated to 0.3.0"
                now = await status(sock)
                assert now["version"] == "0.3.0" and service.versions == ["0.2.0", "0.3.0"]
                assert layout.version_of(layout.previous) == "0.2.0"
                assert [r["end_reason"] for r in SessionStore(state_dir).records()] == ["stop_command"]
                assert ("waiting-for-idle", None, "0.2.0") in reports and reports[-1] == ("idle", None, "0.3.0")

                # N+2 exits at start: rolled back to N+1 within the bound, marked bad, reported.
                d.publish("0.4.0", "exits-at-start")
                await d.roll_out("0.4.0")
                started = time.monotonic()
                assert await asyncio.to_thread(Updater(parts).run_once) == "rolled back to 0.3.0"
                assert time.monotonic() - started < HEALTH_TIMEOUT_S * 2 + 60
                assert service.versions[-2:] == ["0.4.0", "0.3.0"]
                assert (await status(sock))["version"] == "0.3.0"
                progress = saved.load(layout.state_file)
                assert progress.bad == ("0.4.0",) and progress.state == "rolled-back"
                assert progress.error is not None and "exited" in progress.error
                assert reports[-1][:1] == ("rolled-back",) and "0.4.0" in (reports[-1][1] or "")

                # Another N+2 that starts but fails the doctor's local checks: rolled back too.
                d.publish("0.5.0", "fails-doctor")
                await d.roll_out("0.5.0")
                assert await asyncio.to_thread(Updater(parts).run_once) == "rolled back to 0.3.0"
                progress = saved.load(layout.state_file)
                assert progress.bad == ("0.4.0", "0.5.0") and "doctor" in (progress.error or "")
                assert (await status(sock))["version"] == "0.3.0"

                # Bad versions are never retried; the lesson is still there and readable.
                starts = service.starts
                # (still assigned by the companion: refused by name, never built again)
                assert await asyncio.to_thread(Updater(parts).run_once) == (
                    "refused: release 0.5.0 failed on this kiosk and was rolled back; it is never retried")
                assert service.starts == starts
                assert [r["end_reason"] for r in SessionStore(state_dir).records()] == ["stop_command"]
                assert sorted(layout.installed()) == ["0.2.0", "0.3.0"]  # the bad builds were removed
        finally:
            await asyncio.to_thread(service.stop)
        # The console's fleet shows what the kiosk reported: the version it runs and its update state.
        db = d.stack.companion.storage.db
        await add_user(db, "ada", "a-long-admin-password-1", "admin")
        reported = await db.fetchone("SELECT version, update_state FROM kiosk_status WHERE kiosk_id = ?", (KIOSK_ID,))
        assert reported is not None and reported[0] == "0.3.0"
        browser = Browser(d.stack.companion.base_url)
        try:
            assert (await browser.login("ada", "a-long-admin-password-1")).status_code == 303
            fleet = (await browser.get("/console/fleet")).text
        finally:
            await browser.aclose()
        row = fleet[fleet.index(f'id="kiosk-{KIOSK_ID}"'):]
        row = row[:row.index("</tr>")]
        assert "0.3.0" in row and reported[1] in row, row
        assert "Traceback" not in service.log(), service.log()
        assert "could not report" not in caplog.text  # every heartbeat was accepted by the companion
        assert "update: 0.4.0 is not healthy" in caplog.text and "marked bad and never retried" in caplog.text


async def _state_is(sock: Path, state: str) -> bool:
    return (await status(sock))["state"] == state
