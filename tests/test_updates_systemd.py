"""The updater's view of `stella-kiosk.service` through systemctl: restarted without blocking, *active*
is ready, and a crash loop (systemd restarting it, or its start limit hit) fails the health check at
once, so the rollback does not wait for the bound. systemctl is a stand-in script here that answers
from a file the test writes, as systemd would answer `systemctl show`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from appliance.updates.health import Unhealthy, check_health
from appliance.updates.service import SystemdService

FAKE_SYSTEMCTL = """#!/bin/sh
echo "$@" >> "{log}"
if [ "$1" = show ]; then cat "{state}"; fi
"""


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    bin_dir, state, log = tmp_path / "bin", tmp_path / "unit-state", tmp_path / "systemctl.log"
    bin_dir.mkdir()
    (bin_dir / "systemctl").write_text(FAKE_SYSTEMCTL.format(log=log, state=state))
    (bin_dir / "systemctl").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return state, log


def show(state: Path, active: str, sub: str, restarts: int, result: str = "success") -> None:
    state.write_text(f"ActiveState={active}\nSubState={sub}\nNRestarts={restarts}\nResult={result}\n")


def test_a_restart_does_not_block_and_active_means_ready(systemd: tuple[Path, Path]) -> None:
    state, log = systemd
    show(state, "active", "running", 2)
    service = SystemdService()
    service.restart()
    assert "restart --no-block stella-kiosk.service" in log.read_text()
    assert service.ready() and service.failed() is None
    show(state, "activating", "start", 2)
    assert not service.ready() and service.failed() is None  # still coming up


def test_a_crash_loop_or_the_start_limit_fails_the_health_check_at_once(systemd: tuple[Path, Path],
                                                                         tmp_path: Path) -> None:
    state, _ = systemd
    show(state, "active", "running", 0)
    service = SystemdService()
    service.restart()
    show(state, "activating", "auto-restart", 1, "exit-code")  # exited; systemd will start it again
    started = time.monotonic()
    with pytest.raises(Unhealthy, match="crash loop"):
        check_health(service, tmp_path / "none.sock", "0.3.0", tmp_path / "python", tmp_path / "k.toml", 60)
    assert time.monotonic() - started < 5  # at once, not at the 60 s bound
    show(state, "failed", "failed", 5, "start-limit-hit")
    assert "start-limit-hit" in (service.failed() or "")
