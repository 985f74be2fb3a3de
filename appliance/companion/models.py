"""Which OpenAI models the companion uses, and noticing before they retire.

OpenAI shuts models down on announced dates, and a school will not read a deprecation page. Each
role (planner, realtime, transcription) has an ordered list of models. The companion asks the
upstream for each one (``GET /v1/models/{id}``, field ``shutdown_date``) at start and daily, warns
from ``WARN_DAYS`` before a shutdown, and when minting fails with ``model_not_found`` it skips the
model that failed for ``model_retry_s`` and uses the role's next one, then tries the first again. With no
transcription model left a lesson runs without input transcription; with no realtime model left the
health check says so.
"""

from __future__ import annotations

import logging
import time
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
#: Roles a lesson can do without: with no transcription model left, the call runs untranscribed.
OPTIONAL_ROLES = frozenset({"transcription"})
#: Default seconds a model that failed with ``model_not_found`` is skipped before it is tried again.
MODEL_RETRY_S = 900.0
#: Check states that mean "do not pick this model": minting with it would fail.
GONE_STATES = frozenset({"retired", "not_found"})


class ModelChoice:
    """The ordered models per role, which ones to skip, and the latest check of each.

    A model is skipped when the latest check found it retired (or not offered), or when minting with it
    failed with ``model_not_found`` less than ``retry_s`` ago. The skip on failure expires so a passing
    fault (a proxy misrouting, a model briefly withdrawn) does not cost the preferred model until the
    service restarts; the next request after it expires simply tries the model again.

    Lives on the companion's event loop; nothing here blocks or awaits, so a choice and a mark are never
    interleaved with another request's.
    """

    def __init__(self, models: dict[str, tuple[str, ...]], *, retry_s: float = MODEL_RETRY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.models = models
        self.retry_s = retry_s
        self.clock = clock
        """Monotonic: a skip lasts ``retry_s`` whatever the wall clock does."""
        self.statuses: dict[tuple[str, str], ModelStatus] = {}
        self._failed: dict[tuple[str, str], float] = {}
        """(role, model) → when it last failed with model_not_found (by ``clock``)."""
        self._logged: set[tuple[str, str, str]] = set()

    def skipped(self, role: str, model: str) -> bool:
        """The model is not to be picked now: its check says it is gone, or it failed recently."""
        status = self.statuses.get((role, model))
        if status is not None and status.state in GONE_STATES:
            return True
        failed_at = self._failed.get((role, model))
        return failed_at is not None and self.clock() - failed_at < self.retry_s

    def available(self, role: str) -> str | None:
        """The first model of the role not skipped, or None when every one is."""
        return next((model for model in self.models[role] if not self.skipped(role, model)), None)

    def choose(self, role: str) -> str | None:
        """The model a request should use now. With none available: None for a role a lesson can do
        without (transcription), else the role's last model (its error then tells the admin what to fix)."""
        model = self.available(role)
        if model is None and role not in OPTIONAL_ROLES:
            return self.models[role][-1]
        return model

    def current(self, role: str) -> str | None:
        """What :meth:`choose` would give now (health and the console show it)."""
        return self.choose(role)

    def mark_failed(self, role: str, model: str, reason: str) -> bool:
        """``model`` (the one the failed request used, not whatever is current now) answered
        ``model_not_found``: skip it for ``retry_s``. True when the role has something else to try."""
        again = (role, model, "unusable") in self._logged
        self._failed[(role, model)] = self.clock()
        after = self.choose(role)
        message = f"{role} model {model} is unavailable ({reason}); {self._instead(role, model)} — " \
                  f"update {CONFIG_KEYS[role]}"
        if again:  # tried again after its skip expired: still gone, said once already
            log.info("%s", message)
        self._warn_once(role, model, "unusable", message)
        return after != model

    def no_realtime_reason(self) -> str | None:
        """Why no realtime model works (every one skipped), or None when one may."""
        if self.available("realtime") is not None:
            return None
        why = []
        for model in self.models["realtime"]:
            status = self.statuses.get(("realtime", model))
            if status is not None and status.state == "retired":
                why.append(f"{model} was shut down on {status.shutdown_date}")
            elif status is not None and status.state == "not_found":
                why.append(f"{model} is not offered by the upstream")
            else:
                why.append(f"{model} failed with model_not_found")
        return f"no realtime model works: {'; '.join(why)}; put a current model in realtime_model"

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
        now = self.clock()
        recent = sorted(key for key, at in self._failed.items() if now - at < self.retry_s)
        gone = [f"{role} model {model} failed with model_not_found; {self._instead(role, model)}"
                for role, model in recent]
        if self.available("transcription") is None and not any(role == "transcription" for role, _ in recent):
            gone.append("no transcription model works: lessons run without input transcription "
                        "(learner turns kept as audio only); update transcription_model")
        return [w for w in found if w] + gone

    def _instead(self, role: str, failed: str) -> str:
        """What the companion does now that ``failed`` is skipped, in words for the log and health."""
        after = self.choose(role)
        if after is None:
            return "lessons run without input transcription"
        return f"using {after} instead" if after != failed else "no other model is left"

    def _warn_once(self, role: str, model: str, state: str, message: str) -> None:
        if (role, model, state) not in self._logged:
            self._logged.add((role, model, state))
            log.warning("%s", message)
