"""The updater's hold on new lessons: asked for over the control socket before a switch.

Why a lease and not a flag: the updater asks again every few seconds while it waits for the lesson in
progress to end and while it switches. If it dies (killed, power loss on its side only), the lease runs
out and the kiosk takes presses again by itself; a hold can never wedge a classroom's kiosk.
"""

from __future__ import annotations

MAX_LEASE_S = 600.0


class UpdateHold:
    """Until when new lessons are refused (monotonic seconds; 0: not held)."""

    def __init__(self) -> None:
        self.until = 0.0

    def hold(self, lease_s: float, now: float) -> None:
        self.until = now + min(lease_s, MAX_LEASE_S)

    def release(self) -> None:
        self.until = 0.0

    def active(self, now: float) -> bool:
        return now < self.until
