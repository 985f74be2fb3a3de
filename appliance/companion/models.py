"""Which OpenAI models the companion uses, and noticing before they retire.

OpenAI shuts models down on announced dates, and a school will not read a deprecation page. Each
role (planner, realtime, transcription) has an ordered list of models. The companion asks the
upstream for each one (``GET /v1/models/{id}``, field ``shutdown_date``) at start and daily, warns
from ``WARN_DAYS`` before a shutdown, and when minting fails with ``model_not_found`` it moves on to
the role's next model and keeps using the one that works.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

log = logging.getLogger(__name__)

ROLES = ("planner", "realtime", "transcription")
WARN_DAYS = 60
#: Current models with no announced shutdown (checked against the ``openai`` SDK's model literals and
#: their deprecation notes), then a fallback each. Change them in the companion's TOML.
DEFAULT_MODELS: dict[str, tuple[str, ...]] = {
    "planner": ("gpt-5.4-mini", "gpt-5.5"),
    "realtime": ("gpt-realtime-2.1-mini", "gpt-realtime-2"),
    "transcription": ("gpt-transcribe", "gpt-live-transcribe"),
}
#: The companion TOML key (and CompanionConfig field) for each role.
CONFIG_KEYS = {"planner": "planner_model", "realtime": "realtime_model", "transcription": "transcription_model"}


def model_list(value: str | Sequence[str]) -> tuple[str, ...]:
    """A role's models from config: one name, "a,b" or a list; ValueError when empty or not names."""
    items = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(item, str) for item in items):
        raise ValueError("must be a model name or a list of model names")
    names = tuple(item.strip() for item in items if item.strip())
    if not names:
        raise ValueError("names no model")
    return names


@dataclass(frozen=True)
class ModelStatus:
    role: str
    model: str
    state: str
    """ok | retiring | retired | not_found | unknown (could not be checked)."""
    shutdown_date: str | None = None
    days: int | None = None
    detail: str = ""

    def line(self) -> str:
        """One line for ``companion doctor``."""
        what = {"ok": "ok" + (f" (shutdown {self.shutdown_date}, {self.days} days)" if self.shutdown_date else ""),
                "retiring": f"retiring on {self.shutdown_date} ({self.days} days)",
                "retired": f"retired (shut down on {self.shutdown_date})",
                "not_found": "not found",
                "unknown": f"unknown ({self.detail})"}[self.state]
        return f"{self.role:<13} {self.model:<28} {what}"

    def warning(self) -> str | None:
        """What an admin must do, or None when nothing."""
        key = CONFIG_KEYS[self.role]
        if self.state == "retiring":
            return (f"{self.role} model {self.model} retires on {self.shutdown_date} ({self.days} days): "
                    f"put a current model first in {key}")
        if self.state == "retired":
            return f"{self.role} model {self.model} was shut down on {self.shutdown_date}: remove it from {key}"
        if self.state == "not_found":
            return f"{self.role} model {self.model} is not offered by the upstream: check {key}"
        return None


def status_of(role: str, model: str, record: dict[str, Any] | None, today: date) -> ModelStatus:
    """Classify one ``GET /v1/models/{id}`` answer (None: 404 model_not_found)."""
    if record is None:
        return ModelStatus(role, model, "not_found")
    shutdown = record.get("shutdown_date")
    if not isinstance(shutdown, str):
        return ModelStatus(role, model, "ok")
    try:
        days = (date.fromisoformat(shutdown[:10]) - today).days
    except ValueError:
        return ModelStatus(role, model, "unknown", detail=f"unreadable shutdown_date {shutdown!r}")
    state = "retired" if days <= 0 else "retiring" if days <= WARN_DAYS else "ok"
    return ModelStatus(role, model, state, shutdown, days)


Lookup = Callable[[str], Awaitable[dict[str, Any] | None]]


class ModelChoice:
    """The ordered models per role, the one in use, and the latest check of each.

    Lives on the companion's event loop; nothing here blocks.
    """

    def __init__(self, models: dict[str, tuple[str, ...]]) -> None:
        self.models = models
        self.statuses: dict[tuple[str, str], ModelStatus] = {}
        self._unusable: set[tuple[str, str]] = set()
        self._logged: set[tuple[str, str, str]] = set()

    def current(self, role: str) -> str:
        """The first model of the role not known to be gone (the last one if all are: its error then
        tells the admin what to fix)."""
        for model in self.models[role]:
            status = self.statuses.get((role, model))
            if (role, model) not in self._unusable and (status is None or status.state != "retired"):
                return model
        return self.models[role][-1]

    def give_up(self, role: str, model: str, reason: str) -> bool:
        """``model`` failed with model_not_found: never pick it again. True when another model is left."""
        self._unusable.add((role, model))
        self._warn_once(role, model, "unusable",
                        f"{role} model {model} is unavailable ({reason}); "
                        f"using {self.current(role)} instead — update {CONFIG_KEYS[role]}")
        return self.current(role) != model

    async def check(self, lookup: Lookup, today: date | None = None) -> list[ModelStatus]:
        """Look up every configured model; ``lookup`` raises on errors other than not found."""
        today = today or date.today()
        results = []
        for role in ROLES:
            for model in self.models[role]:
                try:
                    status = status_of(role, model, await lookup(model), today)
                except Exception as exc:  # an unreachable upstream must not stop the companion
                    status = ModelStatus(role, model, "unknown", detail=str(exc) or type(exc).__name__)
                self.statuses[(role, model)] = status
                results.append(status)
                warning = status.warning()
                if warning:
                    self._warn_once(role, model, status.state, warning)
        return results

    def warnings(self) -> list[str]:
        found = [s.warning() for s in self.statuses.values()]
        gone = [f"{role} model {model} failed with model_not_found; using {self.current(role)}"
                for role, model in sorted(self._unusable)]
        return [w for w in found if w] + gone

    def _warn_once(self, role: str, model: str, state: str, message: str) -> None:
        if (role, model, state) not in self._logged:
            self._logged.add((role, model, state))
            log.warning("%s", message)
