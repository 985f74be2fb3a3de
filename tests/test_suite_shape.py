"""The suite's own shape: test modules never import one another.

Why: importing ``tests/test_x.py`` from another module runs (and collects) that whole module's code for a
helper, ties two files together so a change in one breaks the other, and hides where a shared helper
lives. Shared helpers live in helper modules (``tests/harness.py``, ``tests/daemon_helpers.py``, ...) and
shared fixtures in ``tests/conftest.py``; the helper modules may not import test modules either.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(source: str, filename: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import in ``source``, at any depth (imports inside functions too).

    ``from tests import test_x`` and ``from . import test_x`` give ``tests.test_x`` and ``.test_x``.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}" if node.module else base + alias.name)
                      for alias in node.names]
    return found


def is_test_module(name: str) -> bool:
    """Whether ``name`` (as written in an import) is a test module of this folder."""
    last = name.lstrip(".").split(".")
    return (last[-1].startswith("test_")
            and (name.startswith(".") or last[0] == "tests" or (len(last) == 1 and (TESTS / f"{name}.py").is_file())))


def cross_imports() -> list[str]:
    """Every import of a test module from any module under tests/ ("file:line imports name")."""
    found = []
    for path in sorted(TESTS.glob("*.py")):
        for line, name in imported_modules(path.read_text(), str(path)):
            if is_test_module(name):
                found.append(f"{path.name}:{line} imports {name}")
    return found


def test_no_module_imports_a_test_module() -> None:
    found = cross_imports()
    assert not found, "move the shared helpers into a helper module or tests/conftest.py:\n" + "\n".join(found)


def test_the_check_sees_every_way_of_importing_a_test_module() -> None:
    """The check itself: each spelling of an import of a test module is caught; helpers are not."""
    caught = ["from tests.test_daemon import control", "import tests.test_daemon",
              "from tests import test_daemon", "from . import test_daemon", "from .test_daemon import control",
              "def f():\n    from tests.test_daemon import control\n", "import test_daemon"]
    for source in caught:
        names = [name for _, name in imported_modules(source, "<case>")]
        assert any(is_test_module(n) for n in names), source
    allowed = ["from tests.harness import lesson_stack", "from tests import daemon_helpers",
               "import pytest", "from appliance.daemon import test_mode"]
    for source in allowed:
        names = [name for _, name in imported_modules(source, "<case>")]
        assert not any(is_test_module(n) for n in names), source
