"""The updater's state file: the update in progress, what was reported, and the versions marked bad.

Why a file, rewritten atomically at every step: the updater can be killed (or the board lose power)
at any instant. At its next start it reads where it was and finishes or abandons that step on its
own; the versions marked bad survive every restart, so a release that failed is never retried.

Format (JSON, ``"format": 1``)::

    {"format": 1, "step": "health-check", "from": "1.3.0", "to": "1.4.0",
     "state": "health-check", "error": null, "bad": ["1.5.0"], "updated_at": 1767225600.0}

``step`` is what the updater was doing (see STEPS); ``state`` is what the companion is told
(heartbeat ``update_state``: one of REPORTED) and ``error`` its ``update_error``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from appliance.contract.updates import MAX_UPDATE_ERROR, UPDATE_STATES
from appliance.store.journal import write_atomic

log = logging.getLogger(__name__)

FORMAT = 1
STEPS = ("idle", "downloading", "installing", "waiting-for-idle", "switching", "health-check", "rolling-back")
REPORTED = UPDATE_STATES
MAX_ERROR = MAX_UPDATE_ERROR
MAX_BAD = 50


@dataclass(frozen=True)
class Progress:
    step: str = "idle"
    from_version: str | None = None
    to_version: str | None = None
    state: str = "idle"
    error: str | None = None
    bad: tuple[str, ...] = field(default_factory=tuple)
    updated_at: float = 0.0

    def at(self, step: str, *, state: str | None = None, error: str | None = None, **changes: object) -> Progress:
        """This progress moved to ``step`` (reported as ``state``, default the step's own name)."""
        reported = state if state is not None else (step if step in REPORTED else "idle")
        return replace(self, step=step, state=reported, error=None if error is None else error[:MAX_ERROR],
                       updated_at=time.time(), **changes)  # type: ignore[arg-type]

    def with_bad(self, version: str) -> Progress:
        bad = (*(v for v in self.bad if v != version), version)
        return replace(self, bad=bad[-MAX_BAD:])


def load(path: Path) -> Progress:
    """The saved progress; a missing file is a kiosk that never updated. An unreadable one (a bug, a disk
    fault: it is only ever replaced atomically) is logged and read as idle, keeping nothing half-done."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return Progress()
    except (OSError, ValueError) as exc:
        log.error("update state %s unreadable (%s): starting from idle", path, exc)
        return Progress()
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        log.error("update state %s has an unknown format: starting from idle", path)
        return Progress()
    step = data.get("step") if data.get("step") in STEPS else "idle"
    state = data.get("state") if data.get("state") in REPORTED else "idle"
    listed = data.get("bad")
    bad = tuple(v for v in listed if isinstance(v, str)) if isinstance(listed, list) else ()
    stamp = data.get("updated_at")
    text = lambda key: str(data[key]) if isinstance(data.get(key), str) else None  # noqa: E731
    return Progress(step=str(step), from_version=text("from"), to_version=text("to"), state=str(state),
                    error=text("error"), bad=bad,
                    updated_at=float(stamp) if isinstance(stamp, int | float) and not isinstance(stamp, bool) else 0.0)


def save(path: Path, progress: Progress) -> None:
    """Replace the state file in one atomic, durable step."""
    body = asdict(progress)
    data = {"format": FORMAT, "step": body["step"], "from": body["from_version"], "to": body["to_version"],
            "state": body["state"], "error": body["error"], "bad": list(body["bad"]),
            "updated_at": body["updated_at"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(data, indent=1) + "\n").encode())
    os.chmod(path, 0o644)  # the kiosk's daemon (another user) reads it for its heartbeat; nothing secret
