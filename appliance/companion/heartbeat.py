"""Validation of kiosk heartbeats (kiosk → companion ``POST /api/heartbeat``).

A heartbeat is what an admin sees of a kiosk between lessons: its version, state, unsent lessons, free
disk and last error. Every field is optional (older kiosks send fewer), typed and bounded, so one
kiosk cannot fill the database or break the fleet view; unknown fields are ignored (newer kiosks may
send more).
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypedDict

from appliance.contract.updates import MAX_UPDATE_ERROR, UPDATE_STATES

TextField = Literal["version", "state", "last_error"]
MAX_TEXT: dict[TextField, int] = {"version": 64, "state": 32, "last_error": 500}
MAX_LIST = 10
MAX_ITEM = 200


class InvalidHeartbeat(ValueError):
    """Names the field that is wrong."""


def _number(value: Any, name: str, upper: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not 0 <= value <= upper:
        raise InvalidHeartbeat(f"{name} must be a number between 0 and {upper:g}")
    return float(value)


def _text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidHeartbeat(f"{name} must be a string of at most {limit} characters")
    return value


class Heartbeat(TypedDict, total=False):
    """A checked heartbeat: only the fields the kiosk sent (None counts as not sent)."""

    version: str
    state: str
    last_error: str
    unsynced: int
    disk_free_mb: float
    uptime_s: float
    store_problems: list[str]
    devices: dict[str, str]
    update_state: str
    update_error: str
    updater: bool
    """Sent by the kiosk's updater (its own process), which knows only the version and the update fields:
    the rest of the kiosk's last heartbeat is kept."""


def validate_heartbeat(body: dict[str, Any]) -> Heartbeat:
    """The heartbeat's known fields, checked; raises InvalidHeartbeat naming the first bad one."""
    report: Heartbeat = {}
    for key, limit in MAX_TEXT.items():
        if body.get(key) is not None:
            report[key] = _text(body[key], key, limit)
    if body.get("unsynced") is not None:
        unsynced = body["unsynced"]
        if isinstance(unsynced, bool) or not isinstance(unsynced, int) or not 0 <= unsynced <= 10**9:
            raise InvalidHeartbeat("unsynced must be a whole number between 0 and 1000000000")
        report["unsynced"] = unsynced
    if body.get("disk_free_mb") is not None:
        report["disk_free_mb"] = _number(body["disk_free_mb"], "disk_free_mb", 1e12)
    if body.get("uptime_s") is not None:
        report["uptime_s"] = _number(body["uptime_s"], "uptime_s", 1e10)
    problems = body.get("store_problems")
    if problems is not None:
        if not isinstance(problems, list) or len(problems) > MAX_LIST:
            raise InvalidHeartbeat(f"store_problems must be a list of at most {MAX_LIST} strings")
        report["store_problems"] = [_text(p, "store_problems[]", MAX_ITEM) for p in problems]
    devices = body.get("devices")
    if devices is not None:
        if not isinstance(devices, dict) or len(devices) > MAX_LIST:
            raise InvalidHeartbeat(f"devices must be an object of at most {MAX_LIST} entries")
        report["devices"] = {_text(k, "devices key", 32): _text(v, f"devices.{k}", MAX_ITEM)
                             for k, v in devices.items()}
    _update_fields(body, report)
    return report


def _update_fields(body: dict[str, Any], report: Heartbeat) -> None:
    """Where the kiosk's updater is and its last error (docs/UPDATES.md); both optional."""
    state = body.get("update_state")
    if state is not None:
        if state not in UPDATE_STATES:
            raise InvalidHeartbeat(f"update_state must be one of {', '.join(UPDATE_STATES)}")
        report["update_state"] = state
    if body.get("update_error") is not None:
        report["update_error"] = _text(body["update_error"], "update_error", MAX_UPDATE_ERROR)
    updater = body.get("updater")
    if updater is not None:
        if not isinstance(updater, bool):
            raise InvalidHeartbeat("updater must be true or false")
        report["updater"] = updater
