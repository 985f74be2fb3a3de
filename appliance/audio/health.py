"""Whether a microphone or speaker works right now, and who is told when that changes.

Why a separate piece: a USB sound card can be pulled (or a sound server restarted) mid-lesson.
The backend notices on its own thread, the kiosk has to show it and speak about it, so the news
travels through one callback that may be called from any thread; the kiosk hands it to its loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

HealthCallback = Callable[[str, bool, str], None]
"""``callback(kind, ok, detail)``: kind "microphone"/"speaker"; ok False when the device failed,
True when it is usable again; detail one readable line. Called from any thread."""

MICROPHONE = "microphone"
SPEAKER = "speaker"


class DeviceHealth:
    """The health of one device; reports transitions (working ⇄ failed) once each.

    Repeated failures while already failed (retries that do not succeed yet) only update
    ``problem``: the kiosk hears "gone" once and "back" once, not every retry.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._callback: HealthCallback | None = None
        self._problem: str | None = None
        self._lock = threading.Lock()

    def set_callback(self, callback: HealthCallback | None) -> None:
        self._callback = callback

    @property
    def healthy(self) -> bool:
        return self._problem is None

    @property
    def problem(self) -> str | None:
        """Why the device is not usable now (None while it works)."""
        return self._problem

    def failed(self, detail: str) -> None:
        with self._lock:
            changed = self._problem is None
            self._problem = detail
        if changed:
            log.warning("%s failed: %s", self.kind, detail)
            self._tell(False, detail)

    def recovered(self, detail: str) -> None:
        with self._lock:
            changed = self._problem is not None
            self._problem = None
        if changed:
            log.warning("%s is back: %s", self.kind, detail)
            self._tell(True, detail)

    def _tell(self, ok: bool, detail: str) -> None:
        callback = self._callback
        if callback is None:
            return
        try:
            callback(self.kind, ok, detail)
        except Exception:  # a listener's bug must not kill the thread watching the device
            log.exception("%s health callback failed", self.kind)


class AlwaysHealthy:
    """The health interface for devices that cannot fail mid-lesson (WAV files, null, scripted)."""

    healthy = True
    problem: str | None = None

    def set_health_callback(self, callback: HealthCallback) -> None:
        """Accepted and never called: nothing here can disappear."""
