"""What remains of a lesson once its transcript is past the retention period.

Children's words are kept only as long as a school needs them; the numbers (when, how long, how many
turns, what it cost) stay so that budgets, reports and the console still add up. Only known metadata
fields survive: anything else a record may carry (turns, error messages, target words, free text) goes.
"""

from __future__ import annotations

from typing import Any

from appliance.contract.record import UncheckedRecord

#: Top-level fields that hold no words of the learner or tutor.
KEPT_FIELDS = ("schema", "session_id", "kiosk_id", "started_at", "ended_at", "end_reason", "plan_id", "level",
               "voice")


def reduce_record(record: Any) -> UncheckedRecord:
    """The record without its transcript: kept fields, numeric/boolean metrics, an empty turn list."""
    if not isinstance(record, dict):
        return {"turns": [], "reduced": True}
    metrics = record.get("metrics")
    metrics = metrics if isinstance(metrics, dict) else {}
    kept_metrics = {key: value for key, value in metrics.items()
                    if value is None or isinstance(value, bool | int | float)
                    or (key == "usage" and isinstance(value, dict))}
    reduced = {key: record[key] for key in KEPT_FIELDS if key in record}
    return {**reduced, "turns": [], "targets": [], "errors": [], "metrics": kept_metrics, "reduced": True}
