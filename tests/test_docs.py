"""docs/TESTING.md names real tests: a renamed or deleted test cannot leave a README promise pointing
at nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def referenced_tests() -> list[tuple[str, str]]:
    """(file, test name or pattern) for every `file::name` and continuation `::name` in the tables."""
    found = []
    for line in (ROOT / "docs" / "TESTING.md").read_text().splitlines():
        last_file = None
        for file, name in re.findall(r"`(test_\w+\.py)?::([\w*]+)`", line):
            last_file = file or last_file
            assert last_file, f"`::{name}` without a file before it: {line}"
            found.append((last_file, name))
    return found


def test_every_test_named_in_testing_md_exists() -> None:
    refs = referenced_tests()
    assert len(refs) > 80
    missing = []
    for file, name in refs:
        path = ROOT / "tests" / file
        source = path.read_text() if path.is_file() else ""
        pattern = re.escape(name).replace(r"\*", r"\w*")
        if not re.search(rf"^(async )?def {pattern}\(", source, re.MULTILINE):
            missing.append(f"{file}::{name}")
    assert missing == [], missing
