"""Re-dating lessons recorded before network time set the kiosk's clock (the kiosk's side).

Why a module of its own: the lesson builder (``appliance.core``) writes the hint a record carries, and the
sync (``appliance.uplink``) corrects saved and delivered records with it; the uplink must not import the
core. What a correction may change is defined once, in :mod:`appliance.contract.dates`.

A record built on an unsynchronized clock carries ``clock_anchor``: the ``wall - monotonic`` offset its
dates were computed with, and the boot it ran in. Once the clock is synchronized in that same boot, the
true offset is known, and every date moves by the difference. After a reboot the monotonic clock has
restarted, the old offset means nothing, and the record keeps its dates and ``clock_synced: false``.
"""

from __future__ import annotations

from typing import Any

from appliance.common.clock import Anchor, Clock, boot_id
from appliance.contract.dates import HINT_KEY, shift_dates
from appliance.contract.record import ClockAnchorHint


def anchor_hint(anchor: Anchor) -> ClockAnchorHint:
    """What :func:`correct_dates` needs to re-date a record built with an unsynchronized ``anchor``."""
    return {"boot_id": boot_id(), "offset_s": round(anchor.wall - anchor.mono, 6)}


def correctable_here(record: dict[str, Any], this_boot: str | None = None) -> bool:
    """The record's dates were read on an unsynchronized clock in this boot: it can be corrected once the
    clock is synchronized (and a delivered one must then be corrected at the companion too)."""
    hint = record.get(HINT_KEY)
    metrics = record.get("metrics")
    here = boot_id() if this_boot is None else this_boot
    return (isinstance(hint, dict) and isinstance(hint.get("offset_s"), int | float)
            and not isinstance(hint.get("offset_s"), bool) and hint.get("boot_id") is not None
            and hint.get("boot_id") == here and isinstance(metrics, dict) and metrics.get("clock_synced") is False)


def correct_dates(record: dict[str, Any], clock: Clock, this_boot: str | None = None) -> dict[str, Any] | None:
    """A copy of a saved record re-dated by the clock's synchronized anchor, or None when not needed/possible
    (no hint, clock still unsynchronized, another boot, or dates that are not this kiosk's writing)."""
    hint = record.get(HINT_KEY)
    if not isinstance(hint, dict) or not isinstance(hint.get("offset_s"), int | float):
        return None
    anchor = clock.anchor()
    here = boot_id() if this_boot is None else this_boot
    if not anchor.synced or hint.get("boot_id") is None or hint.get("boot_id") != here:
        return None
    try:
        return shift_dates(record, (anchor.wall - anchor.mono) - float(hint["offset_s"]))
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError):
        return None  # not a record this kiosk wrote: leave it exactly as saved
