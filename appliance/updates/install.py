"""Build a verified release into its own directory and venv, beside the version that is running.

Why beside: the running version's files are never touched, so an update that fails (or is killed)
half-way leaves the kiosk exactly as it was; the switch to the new directory is one atomic rename
(:mod:`appliance.updates.layout`). The venv sees the system's packages (Debian's PyAudio,
systemd-python and lgpio, as the installer's venv does); every other dependency is installed from the
release's lock with ``--require-hashes`` (so the signed lock pins them) and the wheel itself with
``--no-deps`` (its dependencies come from the lock only). Where pip takes packages from is pip's own
configuration (``/etc/pip.conf``, ``PIP_INDEX_URL``, ``PIP_FIND_LINKS``): a district mirror, say.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from appliance.updates.finder import Release
from appliance.updates.layout import Layout

log = logging.getLogger(__name__)

BUILD_TIMEOUT_S = 1800.0
"""pip on a Pi 3 with a cold cache: generous, but a hung mirror must not hold an update for ever."""


class InstallError(Exception):
    """The release could not be built; nothing was switched, the build was removed."""


def _lock_has_requirements(lock: Path) -> bool:
    for line in lock.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "--hash")):
            return True
    return False


class Installer:
    """Builds ``releases/<version>`` from a verified release.

    ``python`` makes the venv (default: the interpreter running the updater, whose base interpreter
    the venv then uses); ``extra_site`` adds directories to the new venv's path after its own
    site-packages (for test environments whose dependencies live elsewhere; empty on a kiosk);
    ``checkpoint`` is called between steps (the interruption tests stop the process there).
    """

    def __init__(self, layout: Layout, python: str = sys.executable, extra_site: Sequence[Path] = (),
                 checkpoint: Callable[[str], None] = lambda name: None) -> None:
        self.layout = layout
        self.python = python
        self.extra_site = list(extra_site)
        self.checkpoint = checkpoint

    def install(self, release: Release) -> Path:
        """The complete release directory (built now, or already there from an earlier run)."""
        if self.layout.is_complete(release.version):
            return self.layout.release_dir(release.version)
        build = self.layout.build_dir(release.version)
        if build.exists():
            shutil.rmtree(build)
        build.mkdir(parents=True)
        try:
            self._build(release, build)
            self.checkpoint("built")
            return self.layout.mark_complete(build, release.version)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise

    def _build(self, release: Release, build: Path) -> None:
        venv = build / "venv"
        self._run([self.python, "-m", "venv", "--system-site-packages", str(venv)], "making the venv")
        self.checkpoint("venv")
        if self.extra_site:
            site = next((venv / "lib").glob("python3*/site-packages"))
            (site / "zz-extra-site.pth").write_text("".join(f"{p}\n" for p in self.extra_site))
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-input", "--disable-pip-version-check",
               "--no-warn-script-location"]
        if _lock_has_requirements(release.lock):
            self._run([*pip, "--require-hashes", "--no-deps", "--ignore-installed", "-r", str(release.lock)],
                      "installing the lock")
            self.checkpoint("lock")
        self._run([*pip, "--no-deps", "--no-index", str(release.wheel)], "installing the wheel")
        self.checkpoint("wheel")
        probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import appliance; print(appliance.__version__)"],
                               capture_output=True, text=True, timeout=120, env=_clean_env(), cwd="/")
        if probe.returncode != 0 or probe.stdout.strip() != release.version:
            raise InstallError(f"release {release.version} installed but its venv reports "
                               f"{probe.stdout.strip() or probe.stderr.strip()[-300:]!r}")

    def _run(self, argv: list[str], what: str) -> None:
        log.info("update: %s (%s)", what, " ".join(argv[:4]))
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=_clean_env(),
                                  cwd="/")
        except subprocess.TimeoutExpired:
            raise InstallError(f"{what} took longer than {BUILD_TIMEOUT_S:.0f} s") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise InstallError(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")


def _clean_env() -> dict[str, str]:
    """The environment without anything that would make the new venv import another version's code."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
