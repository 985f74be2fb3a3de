"""The Pi installer, run as an admin would, in a fresh arm64 Debian bookworm root (Raspberry Pi OS Lite's base).

What this proves: on the Pi's architecture and distribution, from a blank system without a compiler,
`sudo scripts/install-pi.sh` finds every apt package it names, installs the app and only the kiosk
extra into its venv (PyAudio and systemd-python from Debian, nothing compiled, lgpio from its aarch64
wheel), creates the service user, installs and enables the unit (systemctl works offline in a root);
then the installed `stella-kiosk` checks the installed config as the service user, the doctor runs
to its table, and `stella-kiosk demo`, started outside the source tree, holds a whole lesson (real
aiortc WebRTC over loopback, espeak-ng learner) on aarch64 code under qemu.

What only a real Pi proves (the `hil` tests, tests/test_hil.py): the GPIO pins through lgpio on the
Pi's kernel, the sound card through ALSA/PortAudio, systemd as PID 1 starting the unit with its
sandboxing and watchdog, and real-time speed (qemu runs the lesson several times slower).

The root comes from scripts/arm64-root.sh (its base is cached outside the clone, in
/var/cache/stella-kiosk, keyed by its package list; apt and pip downloads are cached there too).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARM64_ROOT = ROOT / "scripts" / "arm64-root.sh"
KEY = "arm64-device-key-0123456789abcdef"
SRC_IN_ROOT = "/home/admin/stella-kiosk"  # the admin's copy of the repository on the Pi
VENV_BIN = "/opt/stella-kiosk/.venv/bin"
DEBIAN_SITE = "/usr/lib/python3/dist-packages/"
DEMO_DEADLINE_S = 900

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]


def unavailable() -> str | None:
    """Why this machine cannot build or enter an arm64 root, or None."""
    if os.geteuid() != 0:
        return "needs root (mounts, chroot, binfmt_misc)"
    for tool in ("mmdebstrap", "zstd", "chroot"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/setup.sh installs it)"
    if platform.machine() not in ("aarch64", "arm64") and not Path("/usr/lib/binfmt.d/qemu-aarch64.conf").exists():
        return "qemu-user-static not installed (scripts/setup.sh installs it)"
    return None


class Arm64Root:
    """A fresh arm64 root in ``path``; commands run inside it through scripts/arm64-root.sh."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def host(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a command on the host in its own process group, killed whole if it overruns."""
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   start_new_session=True)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            pytest.fail(f"{' '.join(args[:6])}… did not finish within {timeout:g} s:\n{out[-3000:]}\n{err[-3000:]}")
        return subprocess.CompletedProcess(args, process.returncode, out, err)

    def run(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """A shell command inside the root, as root."""
        return self.host("bash", str(ARM64_ROOT), "run", str(self.path), "--", "bash", "-c", command,
                         timeout=timeout)

    def ok(self, command: str, timeout: float = 600) -> str:
        result = self.run(command, timeout)
        assert result.returncode == 0, f"{command}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        return result.stdout

    def release(self) -> None:
        """Kill what still runs inside the root (only after a timeout), then unmount everything."""
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    inside = os.readlink(proc / "root") == os.path.realpath(self.path)
                except OSError:
                    continue
                if inside:
                    os.kill(int(proc.name), signal.SIGKILL)
        subprocess.run(["bash", str(ARM64_ROOT), "umount", str(self.path)], check=False)

    def mounts(self) -> list[str]:
        return subprocess.run(["bash", str(ARM64_ROOT), "mounts", str(self.path)], capture_output=True,
                              text=True, check=True).stdout.split()


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Arm64Root, subprocess.CompletedProcess[str]]]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    root = Arm64Root(tmp_path_factory.mktemp("arm64") / "root")
    try:
        created = root.host("bash", str(ARM64_ROOT), "create", str(root.path), timeout=1200)
        assert created.returncode == 0, created.stderr[-4000:]
        # The admin's copy of the repository (what `git clone` gives: no venv, no outputs).
        shutil.copytree(ROOT, root.path / SRC_IN_ROOT.lstrip("/"), ignore=shutil.ignore_patterns(
            ".git", ".venv", "demo-output", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info", "build"))
        install = root.run(f"cd {SRC_IN_ROOT} && scripts/install-pi.sh --device-key {KEY}", timeout=1500)
        assert install.returncode == 0, install.stdout[-4000:] + install.stderr[-4000:]
        yield root, install
    finally:
        root.release()
        left = root.mounts()
        assert not left, f"still mounted, {root.path} kept: {left}"
        shutil.rmtree(root.path, ignore_errors=True)


def test_installer_completes_and_enables_the_service(installed: tuple[Arm64Root, subprocess.CompletedProcess[str]]
                                                     ) -> None:
    root, install = installed
    assert "install-pi: done." in install.stdout
    assert KEY not in install.stdout + install.stderr
    assert "Traceback" not in install.stderr
    assert root.ok("uname -m").strip() == "aarch64"
    wants = root.path / "etc/systemd/system/multi-user.target.wants/stella-kiosk.service"
    assert wants.is_symlink() and os.readlink(wants) == "/etc/systemd/system/stella-kiosk.service"
    assert {"gpio", "audio"} <= set(root.ok("id -nG stella-kiosk").split())
    key_file = root.path / "etc/stella-kiosk/device.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert root.ok("stat -c %U /etc/stella-kiosk/device.key").strip() == "stella-kiosk"


def test_nothing_was_compiled(installed: tuple[Arm64Root, subprocess.CompletedProcess[str]]) -> None:
    """No compiler on the kiosk; PyAudio and systemd-python are Debian's, lgpio its aarch64 wheel."""
    root, _ = installed
    assert root.run("command -v gcc || command -v cc || command -v aarch64-linux-gnu-gcc").returncode != 0
    assert root.run("dpkg -s gcc").returncode != 0
    where = json.loads(root.ok(
        f"{VENV_BIN}/python -c 'import json, pyaudio, systemd.daemon, lgpio, gpiozero; "
        "print(json.dumps([pyaudio.__file__, systemd.daemon.__file__, lgpio.__file__, gpiozero.__file__]))'"))
    pyaudio_file, systemd_file, lgpio_file, gpiozero_file = where
    assert pyaudio_file.startswith(DEBIAN_SITE), pyaudio_file
    assert systemd_file.startswith(DEBIAN_SITE), systemd_file
    owners = root.ok(f"dpkg -S {pyaudio_file} {systemd_file}")
    assert "python3-pyaudio:" in owners and "python3-systemd:" in owners
    assert lgpio_file.startswith("/opt/stella-kiosk/.venv/"), lgpio_file
    assert gpiozero_file.startswith("/opt/stella-kiosk/.venv/"), gpiozero_file
    # Only the kiosk extra: the companion's server stack stays off the Pi.
    absent = root.ok(f"{VENV_BIN}/python -c 'import importlib.util as u; "
                     "print(*[m for m in (\"psycopg\", \"jinja2\", \"argon2\") if u.find_spec(m) is None])'")
    assert absent.split() == ["psycopg", "jinja2", "argon2"]


def test_installed_config_checks_out_and_the_doctor_runs(installed: tuple[Arm64Root, subprocess.CompletedProcess[str]]
                                                         ) -> None:
    root, _ = installed
    config = "/etc/stella-kiosk/kiosk.toml"
    # As the service user, the checks `run` makes at start-up (key private and readable, state writable).
    check = root.run(f"sudo -u stella-kiosk {VENV_BIN}/stella-kiosk check-config {config}")
    assert check.returncode == 0, check.stdout + check.stderr
    # The doctor as INSTALL.md says (from the admin's home); no button to wait for, no companion here.
    doctor = root.run(f"mkdir -p /home/admin && cd /home/admin && sudo -u stella-kiosk env -C /var/lib/stella-kiosk "
                      f"{VENV_BIN}/stella-kiosk doctor --config {config} --button-timeout 0", timeout=300)
    assert "Traceback" not in doctor.stdout + doctor.stderr, doctor.stderr
    # lgpio, tried first by gpiozero, fails for want of a GPIO chip, not of a writable working directory
    # for its notification pipes (which would stop a Pi 5 too). The reasons each pin library gave are in
    # the doctor's LED line (gpiozero's fallback warnings are no longer printed on their own).
    assert ".lgd-nfy" not in doctor.stdout + doctor.stderr, doctor.stdout + doctor.stderr
    rows = {line.split()[1]: line.split()[0] for line in doctor.stdout.splitlines()
            if line.startswith("  PASS") or line.startswith("  FAIL")}
    for must_pass in ("config", "device", "storage", "store"):
        assert rows.get(must_pass) == "PASS", doctor.stdout
    # Hardware rows are reached and say what is missing (a root has no sound card or GPIO chip):
    # PyAudio and gpiozero ran on aarch64 instead of failing to import.
    assert "sound" in rows and "LEDs" in rows, doctor.stdout
    assert doctor.returncode == 1  # the absent hardware and companion fail, as they should


def test_demo_completes_a_lesson_outside_the_source_tree(installed: tuple[Arm64Root, subprocess.CompletedProcess[str]]
                                                         ) -> None:
    root, _ = installed
    # Emulated aarch64 runs several times slower than a Pi: a longer deadline, nothing else changed.
    demo = root.run(f"cd /root && {VENV_BIN}/stella-kiosk demo --output /root/demo-try --deadline {DEMO_DEADLINE_S}",
                    timeout=DEMO_DEADLINE_S + 300)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    for expected in ("state connecting", "state connected", "learner speaks into the microphone", "teacher types",
                     "(received)"):
        assert expected in demo.stdout, expected
    record = json.loads((root.path / "root/demo-try/session.json").read_text())
    learner = [t for t in record["turns"] if t["role"] == "learner"]
    # The spoken sentence went through the mic track, WebRTC and the simulator's recogniser.
    assert any("apples" in t["text"] for t in learner if t.get("source") != "text"), record["turns"]
    # A slow emulated call may end by the stop word or by the demo's fallback press; never by an error.
    assert record["end_reason"] in ("voice_stop", "button"), demo.stdout[-2000:]
    assert (root.path / "root/demo-try/tutor.wav").stat().st_size > 48000 * 2
