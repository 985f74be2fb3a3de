"""A lesson record's dates, and what a date correction may change: the dates, nothing else.

A kiosk that recorded a lesson before network time set its clock knows, once the clock is synchronized
(in the same boot), by how much every stamp of that lesson was off. It then sends the lesson again with
every date moved by that one amount (``metrics.clock_corrected_s``) and ``metrics.clock_synced: true``.
Both sides agree here on what that means: the kiosk builds the correction with :func:`shift_dates`; the
companion applies one with :func:`apply_date_correction`, which refuses anything that changes more than the
dates, or moves them by different amounts (durations and turn timings were right all along: they come
from the kiosk's monotonic clock).
"""

from __future__ import annotations

import copy
from typing import Any, TypeGuard

from appliance.common.clock import iso_utc, parse_iso

DATE_KEYS = ("started_at", "ended_at")
"""Top-level dates; every turn's and error's ``at`` is a date too."""
DATE_METRICS = ("clock_synced", "clock_corrected_s")
"""Metrics that say how the dates were read, changed by a correction along with them."""
HINT_KEY = "clock_anchor"
"""The kiosk's note of the clock it read the dates on; a corrected record no longer needs it."""
SHIFT_TOLERANCE_S = 0.002
"""Dates are written with milliseconds: two rounded stamps moved by one amount differ by up to this."""


class InvalidCorrection(ValueError):
    """Not a date correction of the stored lesson; the message says what else it changes."""


def shift_dates(record: dict[str, Any], shift_s: float) -> dict[str, Any]:
    """A copy of ``record`` with every date moved by ``shift_s`` and marked as read on a synchronized clock.

    Raises KeyError, TypeError, ValueError or OverflowError for a record whose dates are not readable."""
    fixed = {key: value for key, value in record.items() if key != HINT_KEY}
    for key in DATE_KEYS:
        fixed[key] = iso_utc(parse_iso(record[key]) + shift_s)
    fixed["turns"] = [{**turn, "at": iso_utc(parse_iso(turn["at"]) + shift_s)} for turn in record["turns"]]
    fixed["errors"] = [_shift_at(error, shift_s) for error in record.get("errors", [])]
    fixed["metrics"] = {**record.get("metrics", {}), "clock_synced": True, "clock_corrected_s": round(shift_s, 3)}
    return fixed


def _shift_at(entry: Any, shift_s: float) -> Any:
    if isinstance(entry, dict) and isinstance(entry.get("at"), str):
        return {**entry, "at": iso_utc(parse_iso(entry["at"]) + shift_s)}
    return entry


def without_dates(record: dict[str, Any]) -> dict[str, Any]:
    """Everything a date correction must leave as it is."""
    rest = {key: value for key, value in record.items() if key not in (*DATE_KEYS, HINT_KEY)}
    for key in ("turns", "errors"):
        if isinstance(rest.get(key), list):
            rest[key] = [{k: v for k, v in item.items() if k != "at"} if isinstance(item, dict) else item
                         for item in rest[key]]
    if isinstance(rest.get("metrics"), dict):
        rest["metrics"] = {k: v for k, v in rest["metrics"].items() if k not in DATE_METRICS}
    return rest


def dates_of(record: dict[str, Any]) -> list[tuple[str, Any]]:
    """Every date of a record, named (``started_at``, ``turns[2].at``, …), in a fixed order."""
    found = [(key, record.get(key)) for key in DATE_KEYS]
    for key in ("turns", "errors"):
        items = _list_or_empty(record.get(key))
        found += [(f"{key}[{i}].at", item.get("at")) for i, item in enumerate(items)
                  if isinstance(item, dict) and "at" in item]
    return found


def apply_date_correction(stored: dict[str, Any], correction: dict[str, Any]) -> dict[str, Any]:
    """The stored record with the correction's dates, or InvalidCorrection saying why it is not one.

    Applying the same correction again gives the stored record unchanged (idempotent). Only the dates and
    the two clock metrics change; the stored record keeps everything else exactly, ``clock_anchor`` too."""
    differs = _first_difference(without_dates(stored), without_dates(correction))
    if differs is not None:
        raise InvalidCorrection(f"a date correction may change only the dates; it changes {differs}")
    metrics = _dict_or_empty(correction.get("metrics"))
    shift = metrics.get("clock_corrected_s")
    if metrics.get("clock_synced") is not True or not _is_number(shift):
        raise InvalidCorrection("a date correction carries metrics.clock_synced true and metrics.clock_corrected_s")
    old_dates, new_dates = dates_of(stored), dates_of(correction)
    if [name for name, _ in old_dates] != [name for name, _ in new_dates]:
        raise InvalidCorrection("a date correction must date the same turns and errors as the lesson")
    updated = copy.deepcopy(stored)
    for name, new in new_dates:
        _set_date(updated, name, new)
    updated["metrics"] = {**_dict_or_empty(stored.get("metrics")), "clock_synced": True, "clock_corrected_s": shift}
    if updated == stored:
        return stored  # this correction was applied before
    stored_metrics = _dict_or_empty(stored.get("metrics"))
    if stored_metrics.get("clock_synced") is not False:
        raise InvalidCorrection("only a lesson recorded before the kiosk's clock was synchronized "
                                "(metrics.clock_synced false) can have its dates corrected, and only once")
    for (name, old), (_, new) in zip(old_dates, new_dates, strict=True):
        try:
            moved = parse_iso(new) - parse_iso(old)
        except (TypeError, ValueError, OverflowError):
            raise InvalidCorrection(f"{name} is not an ISO 8601 time") from None
        if abs(moved - shift) > SHIFT_TOLERANCE_S + 0.0005:  # clock_corrected_s itself is rounded to ms
            raise InvalidCorrection(f"{name} moves by {moved:.3f} s, not by clock_corrected_s ({shift} s): "
                                    "a correction moves every date by the same amount")
    return updated


def _set_date(record: dict[str, Any], name: str, value: Any) -> None:
    if "[" not in name:
        record[name] = value
        return
    key, rest = name.split("[", 1)
    record[key][int(rest.split("]", 1)[0])]["at"] = value


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    for key in sorted(set(a) | set(b)):
        if key not in a or key not in b:
            return key
        if a[key] != b[key]:
            if isinstance(a[key], dict) and isinstance(b[key], dict):
                inner = _first_difference(a[key], b[key])
                return f"{key}.{inner}" if inner else key
            return key
    return None


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _dict_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list_or_empty(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
