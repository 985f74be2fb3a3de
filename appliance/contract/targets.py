"""A lesson target: one thing the lesson practises, as the planner returns it and the record keeps it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from appliance.contract.names import TARGET_KINDS


class TargetRecord(TypedDict):
    id: str
    kind: str
    text: str
    example: str


@dataclass(frozen=True)
class Target:
    """One thing the lesson practises."""

    id: str
    kind: str
    text: str
    example: str = ""

    def to_record(self) -> TargetRecord:
        return {"id": self.id, "kind": self.kind, "text": self.text, "example": self.example}


def parse_target(data: Any) -> Target:
    """A target from JSON; ValueError names what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("a target is not an object")
    kind = data.get("kind")
    if kind not in TARGET_KINDS:
        raise ValueError(f"target kind {kind!r} is not one of {', '.join(TARGET_KINDS)}")
    for key in ("id", "text"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise ValueError(f"target {key} is missing")
    example = data.get("example", "")
    return Target(data["id"], kind, data["text"], example if isinstance(example, str) else "")
