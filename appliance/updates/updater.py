"""One update round: find, install beside, switch between lessons, check health, roll back if needed.

Why every step is written to the state file before it is taken: the updater may die at any instant
(SIGKILL, power loss). :meth:`Updater.recover` runs first in every round and, from the step it finds,
finishes or abandons what was under way, so the kiosk always boots a complete version:

=================  ==============================================================================
step found         what recovery does
=================  ==============================================================================
downloading,       abandon: ``current`` was never touched; the partial build is removed, and
installing,        the daemon's hold runs out by itself
waiting-for-idle
switching          ``current`` names the new version already: once the kiosk is between lessons
                   again, restart it and check its health (a lesson that does not end in time:
                   ``current`` is pointed back, never restarted into); otherwise abandon
health-check       between lessons, restart the new version and check its health again
rolling-back       point ``current`` back, restart, check the old version (idempotent)
=================  ==============================================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from packaging.version import InvalidVersion, Version

from appliance.updates import progress as saved
from appliance.updates.finder import Release, UpdateRefused
from appliance.updates.health import Unhealthy
from appliance.updates.install import InstallError
from appliance.updates.layout import Layout
from appliance.updates.progress import Progress
from appliance.updates.service import KioskService
from appliance.updates.store_copy import copy_store, restore_if_moved_on

log = logging.getLogger(__name__)


class Hold(Protocol):
    def until_idle(self, bound_s: float) -> bool: ...
    def release(self) -> None: ...


class Builds(Protocol):
    def install(self, release: Release) -> Path: ...


@dataclass
class UpdaterParts:
    """What an update round uses; each a seam the tests replace with real or cheap stand-ins."""

    layout: Layout
    state_dir: Path
    find: Callable[[str, str | None, frozenset[str]], Release | None]
    """(installed, wanted or None, versions to skip) → a verified release, or None."""
    assignment: Callable[[], tuple[bool, str | None]]
    """(known, version): what the companion assigns; known=False when it has no rollout (take the newest)."""
    installer: Builds
    service: KioskService
    hold: Hold
    health: Callable[[str], None]
    """Return when the running version is healthy and is this one; raise Unhealthy otherwise."""
    report: Callable[[Progress, str], None] = lambda progress, version: None
    """Tell the companion (update_state, update_error, version); best effort, never raises."""
    checkpoint: Callable[[str], None] = lambda name: None
    hold_bound_s: float = 720.0


class Updater:
    def __init__(self, parts: UpdaterParts) -> None:
        self.p = parts
        self.layout = parts.layout
        self.progress = saved.load(self.layout.state_file)

    # -- the state file ------------------------------------------------------------------------------

    def _save(self, progress: Progress, step_name: str | None = None) -> None:
        self.progress = progress
        saved.save(self.layout.state_file, progress)
        self.p.checkpoint(step_name or progress.step)

    def _report(self) -> None:
        running = self.layout.version_of(self.layout.current) or "unknown"
        try:
            self.p.report(self.progress, running)
        except Exception as exc:  # the companion being away never stops an update
            log.info("update: could not report to the companion: %s", exc)

    def installed(self) -> str | None:
        return self.layout.version_of(self.layout.current)

    # -- one round --------------------------------------------------------------------------------

    def run_once(self) -> str:
        """Recover, then check for a release and take it. Returns what happened, in a few words."""
        recovered = self.recover()
        if recovered is not None:
            return recovered
        installed = self.installed()
        if installed is None:
            log.error("update: %s names no complete release; install with scripts/install-pi.sh first",
                      self.layout.current)
            return "no current release"
        known, assigned = self.p.assignment()
        wanted: str | None = None
        if known:
            if assigned is None or assigned == installed:
                return self._idle("nothing assigned" if assigned is None else f"{installed} is the assigned version")
            if _older(assigned, installed):
                return self._go_back(installed, assigned)
            wanted = assigned
        self._save(self.progress.at("downloading", state="checking", from_version=installed, to_version=wanted))
        self._report()
        try:
            release = self.p.find(installed, wanted, frozenset(self.progress.bad))
        except UpdateRefused as exc:
            return self._idle(f"refused: {exc}", state="failed", error=str(exc))
        if release is None:
            return self._idle("no newer release")
        return self._take(installed, release)

    def _idle(self, why: str, *, state: str = "idle", error: str | None = None) -> str:
        self._save(self.progress.at("idle", state=state, error=error))
        self._report()
        return why

    def _take(self, installed: str, release: Release) -> str:
        version = release.version
        self._save(self.progress.at("installing", from_version=installed, to_version=version))
        self._report()
        try:
            self.p.installer.install(release)
        except InstallError as exc:
            log.error("update: %s could not be installed, nothing switched: %s", version, exc)
            return self._idle(f"install failed: {exc}", state="failed", error=f"install of {version}: {exc}")
        self._save(self.progress.at("waiting-for-idle"))
        self._report()
        if not self.p.hold.until_idle(self.p.hold_bound_s):
            self.p.hold.release()
            return self._idle("a lesson did not end in time; trying again next round")
        copy_store(self.p.state_dir, self.layout.store_copies / installed)
        self.p.checkpoint("store-copied")
        if not self.p.hold.until_idle(self.p.hold_bound_s):  # renewed: a big store may take a while to copy
            self.p.hold.release()
            return self._idle("a lesson did not end in time; trying again next round")
        self._save(self.progress.at("switching"))
        self.layout.point(self.layout.current, version)
        log.info("update: switched %s → %s; restarting the kiosk", installed, version)
        return self._restart_and_check()

    def _restart_and_check(self) -> str:
        progress = self.progress
        assert progress.to_version is not None and progress.from_version is not None
        self._save(progress.at("health-check"))
        self._report()
        self.p.service.restart()
        self.p.checkpoint("restarted")
        try:
            self.p.health(progress.to_version)
        except Unhealthy as exc:
            log.error("update: %s is not healthy (%s); rolling back to %s", progress.to_version, exc,
                      progress.from_version)
            self._save(self.progress.at("rolling-back", error=f"{progress.to_version}: {exc}")
                       .with_bad(progress.to_version))
            return self._roll_back()
        log.info("update: %s is healthy", progress.to_version)
        if self.layout.is_complete(progress.from_version):
            self.layout.point(self.layout.previous, progress.from_version)  # what a channel rollback returns to
        self.p.checkpoint("previous-pointed")
        self._save(self.progress.at("idle", error=None))
        self._report()
        self._clean()
        return f"updated to {progress.to_version}"

    def _roll_back(self) -> str:
        progress = self.progress
        assert progress.from_version is not None
        self._report()
        self.p.hold.until_idle(min(self.p.hold_bound_s, 60))  # a working new daemon may be mid-lesson
        self.layout.point(self.layout.current, progress.from_version)
        self.p.checkpoint("rolled-back-pointed")
        restore_if_moved_on(self.p.state_dir, self.layout.store_copies / progress.from_version)
        self.p.service.restart()
        try:
            self.p.health(progress.from_version)
        except Unhealthy as exc:
            log.error("update: the previous version %s is not healthy either: %s", progress.from_version, exc)
            self._save(self.progress.at("idle", state="failed", error=f"{progress.error}; then {exc}"))
            self._report()
            return "rollback failed"
        self._save(self.progress.at("idle", state="rolled-back", error=progress.error))
        log.warning("update: rolled back to %s; %s is marked bad and never retried", progress.from_version,
                    progress.to_version)
        self._report()
        return f"rolled back to {progress.from_version}"

    def _go_back(self, installed: str, assigned: str) -> str:
        """The channel was rolled back to an earlier version: go back to it if it is the previous one."""
        if self.layout.version_of(self.layout.previous) != assigned:
            log.error("update: the companion assigns %s, older than the installed %s, which is not the "
                      "previous release here; refused (an older release is never installed as new)",
                      assigned, installed)
            return self._idle(f"refused to go back to {assigned}", state="failed",
                              error=f"assigned {assigned} is older than {installed} and not the previous release")
        if not self.p.hold.until_idle(self.p.hold_bound_s):
            self.p.hold.release()
            return self._idle("a lesson did not end in time; trying again next round")
        self._save(self.progress.at("switching", from_version=installed, to_version=assigned))
        self.layout.point(self.layout.current, assigned)
        log.info("update: the channel was rolled back: %s → %s", installed, assigned)
        return self._restart_and_check()

    # -- after an interruption -----------------------------------------------------------------------

    def recover(self) -> str | None:
        """Finish or abandon what the state file says was under way; None when nothing was."""
        progress = self.progress
        step = progress.step
        if step == "idle":
            self._clean()
            return None
        log.warning("update: the updater stopped during %s (%s → %s); %s", step, progress.from_version,
                    progress.to_version, "finishing" if step in ("health-check", "rolling-back") else "checking")
        if step == "rolling-back" and progress.from_version and self.layout.is_complete(progress.from_version):
            return self._roll_back()
        if step in ("switching", "health-check") and progress.to_version and \
                self.installed() == progress.to_version and progress.from_version:
            # The hold died with the updater: a lesson may have started since. Wait for it again; a
            # switch not yet restarted into is simply undone when it does not end in time.
            if self.p.hold.until_idle(self.p.hold_bound_s):
                return self._restart_and_check()
            if step == "switching" and self.layout.is_complete(progress.from_version):
                self.layout.point(self.layout.current, progress.from_version)
                log.warning("update: a lesson is in progress; the switch to %s is undone (the kiosk never "
                            "restarted into it) and will be made again next round", progress.to_version)
            elif step == "health-check":
                return self._restart_and_check()
        if step in ("downloading", "installing", "waiting-for-idle", "switching"):
            self.p.hold.release()
        self._save(progress.at("idle", error=None))
        self._clean()
        return None

    def _clean(self) -> None:
        keep = {v for v in (self.installed(), self.layout.version_of(self.layout.previous)) if v}
        for name in self.layout.clean(keep):
            log.info("update: removed %s (an interrupted build or an old release)", name)


def _older(a: str, b: str) -> bool:
    try:
        return Version(a) < Version(b)
    except InvalidVersion:
        return False
