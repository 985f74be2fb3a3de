"""Where installed versions live on a kiosk, and the one atomic step that changes which one runs.

::

    <prefix>/releases/<version>/venv/      a complete version: its own venv with the app installed
    <prefix>/releases/<version>/COMPLETE   written (and made durable) last: without it the directory
                                           is a build that was interrupted, and it is removed
    <prefix>/releases/.build-<version>/    a build in progress (removed at every start of the updater)
    <prefix>/current  -> releases/<version>   what the service runs (its ExecStart goes through it)
    <prefix>/previous -> releases/<version>   what a rollback goes back to
    <prefix>/update-state.json             the update in progress and the versions marked bad

Why symlinks: replacing a symlink with ``rename(2)`` is atomic, so after a power loss at any instant
``current`` names either the old or the new complete version, never half of each. Links are relative
(``releases/1.4.0``), so an image prepared in a chroot keeps working once booted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from appliance.store.journal import fsync_dir

COMPLETE = "COMPLETE"
BUILD_PREFIX = ".build-"


class Layout:
    """The release directories and links under one prefix (default /opt/stella-kiosk)."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.releases = prefix / "releases"
        self.current = prefix / "current"
        self.previous = prefix / "previous"
        self.state_file = prefix / "update-state.json"
        self.store_copies = prefix / "store-copies"

    def release_dir(self, version: str) -> Path:
        return self.releases / version

    def build_dir(self, version: str) -> Path:
        return self.releases / f"{BUILD_PREFIX}{version}"

    def venv_bin(self, link: Path) -> Path:
        """The venv's bin directory of the release a link (or a release directory) names."""
        return link / "venv" / "bin"

    def is_complete(self, version: str) -> bool:
        return (self.release_dir(version) / COMPLETE).is_file()

    def version_of(self, link: Path) -> str | None:
        """The version a link names, or None when it is missing or names no complete release."""
        try:
            target = os.readlink(link)
        except OSError:
            return None
        version = Path(target).name
        return version if self.is_complete(version) else None

    def installed(self) -> list[str]:
        """Complete releases present, in no particular order."""
        if not self.releases.is_dir():
            return []
        return [p.name for p in self.releases.iterdir() if not p.name.startswith(".") and (p / COMPLETE).is_file()]

    def point(self, link: Path, version: str) -> None:
        """Make ``link`` name ``releases/<version>`` in one atomic rename, durable on return."""
        if not self.is_complete(version):
            raise ValueError(f"release {version} is not completely installed; not switching to it")
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        os.symlink(f"releases/{version}", tmp)
        os.replace(tmp, link)
        fsync_dir(link.parent)

    def mark_complete(self, build: Path, version: str) -> Path:
        """Turn a finished build into ``releases/<version>``: every file durable first, the marker last."""
        os.sync()
        marker = build / COMPLETE
        marker.write_text(f"{version}\n")
        fd = os.open(marker, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        final = self.release_dir(version)
        if final.exists():
            shutil.rmtree(final)
        os.replace(build, final)
        fsync_dir(self.releases)
        return final

    def clean(self, keep: set[str]) -> list[str]:
        """Remove interrupted builds and incomplete release directories, and complete releases other than
        ``keep`` (the current and previous ones, and the one in progress). Returns what was removed."""
        removed: list[str] = []
        if not self.releases.is_dir():
            return removed
        for path in self.releases.iterdir():
            if path.name in keep and (path / COMPLETE).is_file():
                continue
            if path.is_symlink() or path.is_file():
                path.unlink()
            else:
                shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
        with contextlib.suppress(OSError):
            for tmp in self.prefix.glob(".*.tmp"):
                tmp.unlink()
        return removed
