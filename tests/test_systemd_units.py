"""The systemd units: `systemd-analyze verify` says nothing, and the hardening keeps exposure low."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNITS = ["stella-kiosk.service", "stella-companion.service", "stella-companion@.service"]
MAX_EXPOSURE = 1.7
"""The exposure the README promises for the hardened units."""

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def installed_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's console script (as the installer does)."""
    exe = Path(sys.executable).parent / "stella-kiosk"
    text = (ROOT / "systemd" / unit).read_text().replace("/opt/stella-kiosk/.venv/bin/stella-kiosk", str(exe))
    path = tmp_path / unit.replace("@.", "@8701.")  # a template is verified as one of its instances
    path.write_text(text)
    return path


@pytest.mark.parametrize("unit", UNITS)
def test_unit_verifies_clean(unit: str, tmp_path: Path) -> None:
    result = subprocess.run(["systemd-analyze", "verify", str(installed_copy(unit, tmp_path))],
                            capture_output=True, text=True, timeout=60)
    # Any output at all (even a warning about a misspelt key) is a failure.
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_unit_exposure_is_low(unit: str, tmp_path: Path) -> None:
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(installed_copy(unit, tmp_path))],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout[-500:] + result.stderr
    exposure = float(match.group(1))
    print(f"{unit}: systemd-analyze security exposure {exposure}")
    assert exposure <= MAX_EXPOSURE


def test_the_updater_unit_verifies_clean_and_runs_the_update_loop(tmp_path: Path) -> None:
    path = installed_copy("stella-kiosk-updater.service", tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", result.stdout + result.stderr
    text = path.read_text()
    for line in ("update --loop --config /etc/stella-kiosk/kiosk.toml", "RestartPreventExitStatus=78",
                 "ReadWritePaths=/opt/stella-kiosk /var/lib/stella-kiosk", "After=network-online.target"):
        assert line in text, line


def test_kiosk_unit_essentials() -> None:
    text = (ROOT / "systemd" / "stella-kiosk.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "After=network-online.target time-sync.target",
                 "SupplementaryGroups=gpio audio", "StateDirectory=stella-kiosk", "RuntimeDirectory=stella-kiosk",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "RestartPreventExitStatus=78",
                 # lgpio's notification pipes go in the working directory: the default, /, is not writable.
                 "WorkingDirectory=/var/lib/stella-kiosk"):
        assert line in text, line
