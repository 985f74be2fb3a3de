"""scripts/install-pi.sh against a temporary root: layout, permissions, idempotence, safety."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install-pi.sh"
KEY = "device-key-that-must-stay-secret-42"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)


def tree(root: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(root)): (p.stat().st_mode & 0o777, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (scripts/setup.sh installs it)")
    result = subprocess.run(["shellcheck", str(SCRIPT), str(ROOT / "scripts" / "setup.sh"),
                             str(ROOT / "scripts" / "arm64-root.sh"),
                             str(ROOT / "scripts" / "demo.sh"), str(ROOT / "scripts" / "test.sh"),
                             str(ROOT / ".ci" / "run")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_install_into_a_root_is_complete_safe_and_idempotent(tmp_path: Path) -> None:
    first = run("--root", str(tmp_path), "--device-key", KEY, "--no-enable")
    assert first.returncode == 0, first.stderr
    etc = tmp_path / "etc" / "stella-kiosk"
    assert (etc / "device.key").read_text().strip() == KEY
    assert (etc / "device.key").stat().st_mode & 0o777 == 0o600
    assert (etc / "kiosk.toml").stat().st_mode & 0o777 == 0o640
    assert etc.stat().st_mode & 0o777 == 0o750  # the service reads it through its group
    assert f"would run: chown root:stella-kiosk {etc} {etc / 'kiosk.toml'}" in first.stdout
    unit = tmp_path / "etc" / "systemd" / "system" / "stella-kiosk.service"
    assert unit.read_text() == (ROOT / "systemd" / "stella-kiosk.service").read_text()
    assert (tmp_path / "opt" / "stella-kiosk" / "src" / "appliance" / "core" / "kiosk.py").is_file()
    assert not (tmp_path / "opt" / "stella-kiosk" / "src" / ".git").exists()
    assert (tmp_path / "var" / "lib" / "stella-kiosk").is_dir()
    installed = (etc / "kiosk.toml").read_text()
    assert 'device_key_file = "/etc/stella-kiosk/device.key"' in installed
    # --static: the installed file names /etc/stella-kiosk/device.key of the real machine, not of the root.
    check = subprocess.run([sys.executable, "-m", "appliance.cli", "check-config", "--static", str(etc / "kiosk.toml")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert "would run: apt-get" in first.stdout and "would run: systemctl daemon-reload" in first.stdout
    # PyAudio and systemd-python from Debian, nothing to compile: no compiler, headers or pkg-config on a kiosk
    # (tests/test_install_arm64.py runs this apt line for real on arm64).
    apt_line = next(line for line in first.stdout.splitlines() if "would run: env DEBIAN_FRONTEND" in line).split()
    assert {"python3-pyaudio", "python3-systemd", "python3-venv", "espeak-ng"} <= set(apt_line)
    assert not {"gcc", "python3-dev", "portaudio19-dev", "libsystemd-dev", "pkg-config"} & set(apt_line)
    assert "systemctl enable" not in first.stdout
    # The key is never echoed.
    assert KEY not in first.stdout + first.stderr

    before = tree(tmp_path)
    again = run("--root", str(tmp_path), "--no-enable")
    assert again.returncode == 0, again.stderr
    assert tree(tmp_path) == before  # nothing changed, the admin's key and config kept

    # An admin's edited config survives a plain rerun.
    (etc / "kiosk.toml").write_text(installed.replace('id = "kiosk-01"', 'id = "room-12"'))
    assert run("--root", str(tmp_path), "--no-enable").returncode == 0
    assert 'id = "room-12"' in (etc / "kiosk.toml").read_text()


def test_invalid_config_is_refused_before_installing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[button]\npin = 99\n")
    result = run("--root", str(tmp_path / "root"), "--config", str(bad))
    assert result.returncode == 78
    assert "button.pin" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "root" / "etc" / "stella-kiosk" / "kiosk.toml").exists()


def test_real_mode_needs_root_and_debian() -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: the real mode would install for real")
    result = run("--no-enable")
    assert result.returncode != 0 and "run as root" in result.stderr


FAKE_PYTHON = """#!/bin/sh
# python3 -m venv --system-site-packages DIR, without building anything: the layout is what is tested.
dir="$4"
mkdir -p "$dir/bin"
printf 'include-system-site-packages = true\\n' > "$dir/pyvenv.cfg"
printf '#!/bin/sh\\necho "$@" >> "%s/pip.log"\\n' "$dir" > "$dir/bin/pip"
printf '#!/bin/sh\\n' > "$dir/bin/python"
chmod +x "$dir/bin/pip" "$dir/bin/python"
"""


def test_the_app_is_installed_in_the_release_layout_the_updater_switches(tmp_path: Path) -> None:
    """releases/<version>/venv, `current` naming it, .venv -> current/venv (the path both units use); an
    older install's .venv directory is replaced; the updater's unit and the trusted root are installed."""
    fake = tmp_path / "fake-bin"
    fake.mkdir()
    (fake / "python3").write_text(FAKE_PYTHON)
    (fake / "python3").chmod(0o755)
    root = tmp_path / "root"
    opt = root / "opt" / "stella-kiosk"
    (opt / ".venv" / "bin").mkdir(parents=True)  # what an installer before the release layout left
    trusted = tmp_path / "root.json"
    trusted.write_text('{"signed": {"_type": "root"}}')
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(SCRIPT), "--root", str(root), "--with-venv", "--no-enable", "--device-key", KEY,
                           "--trusted-root", str(trusted)], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    version = "0.1.0"
    assert os.readlink(opt / "current") == f"releases/{version}"
    assert os.readlink(opt / ".venv") == "current/venv"
    assert (opt / "releases" / version / "COMPLETE").read_text().strip() == version
    assert "install -q --upgrade" in (opt / "releases" / version / "venv" / "pip.log").read_text()
    assert (root / "etc" / "stella-kiosk" / "root.json").read_text() == trusted.read_text()
    units = root / "etc" / "systemd" / "system"
    assert (units / "stella-kiosk-updater.service").read_text() == \
        (ROOT / "systemd" / "stella-kiosk-updater.service").read_text()
    from appliance.updates.layout import Layout

    assert Layout(opt).version_of(Layout(opt).current) == version  # what the updater starts from
    again = subprocess.run(["bash", str(SCRIPT), "--root", str(root), "--with-venv", "--no-enable"],
                           capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0, again.stderr
    assert os.readlink(opt / "current") == f"releases/{version}" and sorted(p.name for p in opt.iterdir()) == [
        ".venv", "current", "releases", "src"]
