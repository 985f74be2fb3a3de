"""The names both sides speak are defined once, and every record the kiosk builds passes the companion's check."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from appliance.contract import names
from appliance.contract.record import InvalidRecord, validate_record
from appliance.core.lesson import Lesson

SHARED_NAMES = {"LEVELS", "END_REASONS", "TARGET_KINDS", "KINDS", "ROLES", "SOURCES", "TURN_STATUSES"}
OWN_VOCABULARIES = {  # same-named lists that mean something else (journal line kinds, model and account roles)
    ("appliance/store/journal.py", "KINDS"), ("appliance/companion/models.py", "ROLES"),
    ("appliance/companion/console/accounts.py", "ROLES")}


def test_shared_names_are_defined_only_in_the_contract() -> None:
    package = Path(__file__).resolve().parents[1] / "appliance"
    found = []
    for path in package.rglob("*.py"):
        rel = path.relative_to(package.parent).as_posix()
        if rel.startswith("appliance/contract/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            for target in targets:
                if (isinstance(target, ast.Name) and target.id in SHARED_NAMES
                        and (rel, target.id) not in OWN_VOCABULARIES):
                    found.append(f"{rel}: {target.id}")
    assert found == []


@pytest.mark.parametrize("reason", names.END_REASONS)
def test_every_end_reason_the_kiosk_can_record_is_accepted_by_the_companion(reason: str) -> None:
    lesson = Lesson(kiosk_id="kiosk-1")
    lesson.transcript.add_typed("hello")
    assert validate_record(lesson.to_record(reason))["end_reason"] == reason


def test_an_end_reason_outside_the_contract_is_refused_by_both_sides() -> None:
    lesson = Lesson(kiosk_id="kiosk-1")
    with pytest.raises(ValueError):
        lesson.to_record("unplugged")
    record = dict(lesson.to_record("button"), end_reason="unplugged")
    with pytest.raises(InvalidRecord, match="end_reason"):
        validate_record(record)
