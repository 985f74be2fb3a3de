"""What the kiosk tells the CLI, the demo and the tests (all callbacks run on the event loop)."""

from __future__ import annotations

from typing import Any

from appliance.core.ports import KioskObserver
from appliance.core.state import State
from appliance.core.transcript import Turn

__all__ = ["KioskObserver", "NullObserver"]


class NullObserver:
    """An observer that ignores everything (subclass and override what you need)."""

    def state_changed(self, state: State, detail: str) -> None:
        pass

    def turn(self, turn: Turn) -> None:
        pass

    def tutor_audible(self, audible: bool) -> None:
        pass

    def lesson_saved(self, record: dict[str, Any], synced: bool) -> None:
        pass
