"""A lesson record's ``level`` is one of the product's CEFR levels (the set lesson plans are made for) or
absent: teachers filter and count lessons by it, so free text there would be stored, shown and counted as a
level of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.contract.names import LEVELS
from appliance.contract.record import InvalidRecord, validate_record
from tests.console_helpers import KEYS, ConsoleStack, console_stack, lesson_record

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                      max_size=3), max_leaves=5)


@given(level=json_values | st.sampled_from([*LEVELS, "a1", "A1 ", "C3", "", "B2\x00", "<b>A1</b>"]))
def test_a_record_level_is_a_cefr_level_or_absent(level: Any) -> None:
    record = lesson_record(level=level)
    if level is None or level in LEVELS:
        assert validate_record(record)["session_id"] == record["session_id"]
        return
    with pytest.raises(InvalidRecord) as refused:
        validate_record(record)
    assert str(refused.value).startswith("level ")
    assert ", ".join(LEVELS) in str(refused.value)  # says what would be accepted


def test_a_record_without_a_level_is_still_accepted() -> None:
    record = lesson_record()
    assert "level" not in record
    assert validate_record(record) is record


@pytest.fixture(params=["sqlite", "postgres"])
def db_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    return tmp_path / "c.db" if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")


@pytest.fixture
async def stack(db_spec: Path | str) -> AsyncIterator[ConsoleStack]:
    async with console_stack(db_spec) as s:
        yield s


async def test_the_companion_answers_400_naming_the_level_and_stores_nothing(stack: ConsoleStack) -> None:
    headers = {"Authorization": f"Bearer {KEYS['kiosk-a']}"}
    bad = lesson_record(level="Grade 3 <script>")
    fine = lesson_record(level="B1")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        one = await http.post("/api/summarize", json=bad, headers=headers)
        assert one.status_code == 400
        assert one.json()["error"]["code"] == "invalid_record" and one.json()["error"]["message"].startswith("level")
        batch = await http.post("/api/sessions/batch", json={"sessions": [bad, fine]}, headers=headers)
        assert batch.status_code == 200
        first, second = batch.json()["results"]
        assert first["error"]["code"] == "invalid_record" and first["error"]["message"].startswith("level")
        assert second == {"session_id": fine["session_id"], "stored": True, "duplicate": False}
    rows = await stack.db.fetchall("SELECT session_id, level FROM sessions")
    assert rows == [(fine["session_id"], "B1")]
