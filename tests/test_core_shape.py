"""The kiosk orchestrator keeps no state beside its State: checked on the source, so a new flag fails here
before it can grow into a second, hidden state machine."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORCHESTRATOR = [ROOT / "appliance" / "core" / "kiosk.py", ROOT / "appliance" / "core" / "lessons.py"]
"""The kiosk and the mixin it sequences lessons with."""

WRITTEN_AFTER_INIT = {
    "state": {"_enter"},  # the one writer: checks the transition, drives LEDs and cues
    "run_": {"_start_lesson", "_end_lesson", "_on_connect_failed"},  # the lesson in progress, dropped whole
    "last_error": {"_show"},  # what `status` reports, written as the error is shown
    "devices_missing": {"_on_device_health"},  # which devices DEVICE_MISSING waits for (data, not a flag)
    "lessons_saved_count": {"_remember"},  # a counter for `status`
    "_loop": {"run"},  # the loop the kiosk runs on, known once it runs
}
"""Attributes the orchestrator may write outside ``__init__``, and the only methods that write them."""


def writes_after_init(paths: list[Path]) -> dict[str, set[str]]:
    """``self.<attr>`` assignments in methods other than ``__init__``: attribute → the methods."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for cls in [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)]:
            for method in cls.body:
                if not isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef) or method.name == "__init__":
                    continue
                for node in ast.walk(method):
                    targets: list[ast.expr] = []
                    if isinstance(node, ast.Assign):
                        targets = node.targets
                    elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                        targets = [node.target]
                    for target in targets:
                        for part in ast.walk(target):
                            if (isinstance(part, ast.Attribute) and isinstance(part.value, ast.Name)
                                    and part.value.id == "self"):
                                found.setdefault(part.attr, set()).add(method.name)
    return found


def test_the_orchestrator_writes_only_its_state_and_the_lesson_in_progress() -> None:
    found = writes_after_init(ORCHESTRATOR)
    unexpected = {attr: methods for attr, methods in found.items()
                  if not methods <= WRITTEN_AFTER_INIT.get(attr, set())}
    assert not unexpected, f"state-like attributes written outside __init__: {unexpected}"


def test_the_check_sees_a_new_flag_and_a_second_state_writer(tmp_path: Path) -> None:
    source = tmp_path / "kiosk.py"
    source.write_text(
        "class Kiosk:\n"
        "    def __init__(self):\n        self.state = 1\n        self._resuming = False\n"
        "    def _enter(self, new):\n        self.state = new\n"
        "    def _show(self, new):\n        self.state = new\n"
        "    async def _drop(self):\n        self._resuming = True\n        self.waiting: int = 0\n"
        "        self.count += 1\n        self.a, self.b = 1, 2\n")
    found = writes_after_init([source])
    assert found == {"state": {"_enter", "_show"}, "_resuming": {"_drop"}, "waiting": {"_drop"},
                     "count": {"_drop"}, "a": {"_drop"}, "b": {"_drop"}}
