"""What a kiosk tells its companion about itself between lessons (the heartbeat).

Built from the kiosk's own status snapshot, so the school's fleet view shows the same facts as
`stella-kiosk status`: version, state, unsent lessons, free disk, the latest problem. No transcript,
no learner data; every text is cut to the companion's limits so a long error never costs a heartbeat.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from appliance import __version__
from appliance.contract.updates import MAX_UPDATE_ERROR, UPDATE_STATES

MAX_ERROR = 500
MAX_ITEMS = 10
MAX_ITEM = 200


def disk_free_mb(path: Path) -> float | None:
    """Free space where lessons are stored (None when that directory cannot be read)."""
    try:
        return round(shutil.disk_usage(path).free / 2**20, 1)
    except OSError:
        return None


def update_report(state_file: Path | None) -> dict[str, Any]:
    """``update_state`` and ``update_error`` from the updater's state file (it runs as another process and
    reports on its own too; the daemon repeats them so every heartbeat tells the same story). Nothing when
    the kiosk never updated or the file cannot be read."""
    if state_file is None:
        return {}
    try:
        data = json.loads(state_file.read_bytes())
    except (OSError, ValueError):
        return {}
    state = data.get("state") if isinstance(data, dict) else None
    if state not in UPDATE_STATES:
        return {}
    error = data.get("error")
    return {"update_state": state, "update_error": error[:MAX_UPDATE_ERROR] if isinstance(error, str) else None}


def kiosk_report(status: dict[str, Any], state_dir: Path, last_error: str | None,
                 update_state_file: Path | None = None) -> dict[str, Any]:
    """The heartbeat body for ``POST /api/heartbeat`` from ``Kiosk.status()``."""
    problems = [str(p)[:MAX_ITEM] for p in status.get("store_problems", [])][:MAX_ITEMS]
    devices = {str(k)[:32]: str(v)[:MAX_ITEM] for k, v in list(status.get("devices", {}).items())[:MAX_ITEMS]}
    # The most pressing problem first: a missing device or a broken store outlasts an old call error.
    latest = next(iter(devices.values()), None) or (problems[-1] if problems else None) or last_error
    report: dict[str, Any] = {"version": __version__, "state": str(status.get("state", ""))[:32],
                              "unsynced": int(status.get("outbox", 0) or 0), "store_problems": problems,
                              "devices": devices, "last_error": latest[:MAX_ERROR] if latest else None}
    report.update(update_report(update_state_file))
    free = disk_free_mb(state_dir)
    if free is not None:
        report["disk_free_mb"] = free
    return report
