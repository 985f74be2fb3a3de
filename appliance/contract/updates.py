"""The vocabulary a kiosk and its companion share about fleet updates (docs/UPDATES.md, "Staged rollout").

Here, and not in the companion or the kiosk's updater, because both sides speak it: the kiosk reports
its update state in its heartbeat, and the companion checks it and shows it in the console's fleet view.
"""

from __future__ import annotations

from typing import Final, Literal

UpdateState = Literal["idle", "checking", "downloading", "installing", "waiting-for-idle", "switching",
                      "health-check", "rolled-back", "failed"]
UPDATE_STATES: Final[tuple[UpdateState, ...]] = (
    "idle", "checking", "downloading", "installing", "waiting-for-idle", "switching", "health-check",
    "rolled-back", "failed")
"""Where a kiosk's updater is: ``waiting-for-idle`` (a lesson is running, the switch waits for it),
``rolled-back`` (the new version did not come up healthy and the previous one runs again), ``failed``
(the update was abandoned; the running version is unchanged)."""

MAX_UPDATE_ERROR: Final = 500
"""Characters of the last update error a heartbeat may carry (longer reports are refused, not cut)."""

CHANNELS: Final = ("canary", "stable")
"""Release channels: a kiosk is in exactly one; ``canary`` kiosks take a release first."""

DEFAULT_CHANNEL: Final = "stable"
