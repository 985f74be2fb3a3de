"""Is the version just switched to healthy? Three answers within one bound, or it is rolled back.

1. the service comes up: the daemon said READY (systemd: the unit is *active*) and did not exit or
   restart in a loop meanwhile;
2. its control socket answers ``status`` and reports the version switched to (not the old one still
   running, not another);
3. ``stella-kiosk doctor --local`` of the new version passes (config, device key, state directory and
   store: the checks that need no network and no hardware the running daemon holds).

Why all three: READY alone says the process started, not that it runs the new code or can keep its
lessons; the doctor alone says nothing about the daemon. Every step shares one deadline
(``[updates] health_timeout_s``, default 120 s), so a version that hangs is rolled back on time.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

from appliance.daemon.control import send_command
from appliance.updates.service import KioskService

POLL_S = 0.25


class Unhealthy(Exception):
    """Why the new version is not healthy (one line for the journal and the companion)."""


def check_health(service: KioskService, socket_path: Path, version: str, python: Path, config_path: Path,
                 timeout_s: float) -> None:
    """Return once the version is healthy; raise Unhealthy (with why) at the first failure or the bound.
    ``python``: the new version's interpreter (its venv's), which runs its own doctor."""
    deadline = time.monotonic() + timeout_s
    while not service.ready():
        if (why := service.failed()) is not None:
            raise Unhealthy(why)
        if time.monotonic() > deadline:
            raise Unhealthy(f"the kiosk did not become ready within {timeout_s:.0f} s")
        time.sleep(POLL_S)
    running = _answered_version(socket_path, deadline, timeout_s)
    if running != version:
        raise Unhealthy(f"the control socket reports version {running}, not {version}")
    left = max(1.0, deadline - time.monotonic())
    try:
        doctor = subprocess.run([str(python), "-m", "appliance.cli", "doctor", "--local", "--config", str(config_path)],
                                capture_output=True, text=True, timeout=left, cwd="/",
                                env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    except subprocess.TimeoutExpired:
        raise Unhealthy(f"the doctor's local checks took longer than the {timeout_s:.0f} s bound") from None
    except OSError as exc:
        raise Unhealthy(f"the new version's doctor could not be run: {exc}") from None
    if doctor.returncode != 0:
        failures = [line.strip() for line in (doctor.stdout + doctor.stderr).splitlines()
                    if "FAIL" in line or "error" in line.lower()]
        raise Unhealthy(f"the doctor's local checks failed: {' | '.join(failures[:3]) or doctor.returncode}")
    if (why := service.failed()) is not None or not service.ready():
        raise Unhealthy(why or "the kiosk stopped during its health check")


def _answered_version(socket_path: Path, deadline: float, timeout_s: float) -> str:
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            reply = asyncio.run(send_command(socket_path, {"command": "status"}, timeout_s=5))
        except ConnectionError as exc:
            last = str(exc)
        else:
            status = reply.get("status")
            if reply.get("ok") and isinstance(status, dict):
                return str(status.get("version"))
            last = str(reply.get("error"))
        time.sleep(POLL_S)
    raise Unhealthy(f"the control socket did not answer within {timeout_s:.0f} s ({last})")
