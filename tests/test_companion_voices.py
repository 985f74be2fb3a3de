"""The companion's voices: a default and optional per-level voices in its config (checked against the GA
voice list, a clear error naming the key otherwise); the token answer and the token's own session carry
the voice of the plan's level. On SQLite and PostgreSQL (the plan and its level come from the database)."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.companion.cli import build_config
from appliance.companion.retention import reduce_record
from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.contract.voices import VOICES
from appliance.simulator.server import RealtimeSimulator, SimulatorConfig
from tests.console_helpers import KEYS, TEACHER, TEACHER_PASSWORD, console_stack, lesson_record, signed_in, sync_lessons
from tests.harness import API_KEY

KEY = "key-a-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "c.db") if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")


def config_args(path: Path, voice: str | None = None) -> argparse.Namespace:
    names = ("host", "port", "db", "openai_base_url", "model", "transcription_model", "planner_model",
             "tokens_per_hour", "daily_minutes")
    return argparse.Namespace(config=str(path), voice=voice, **dict.fromkeys(names))


def test_the_config_takes_a_default_and_per_level_voices(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('voice = "cedar"\n[level_voices]\nA1 = "shimmer"\nB2 = "ash"\n')
    config = build_config(config_args(path), API_KEY)
    assert config.voice == "cedar" and dict(config.level_voices) == {"A1": "shimmer", "B2": "ash"}
    path.write_text("")
    assert build_config(config_args(path), API_KEY).voice == "marin"


not_a_voice = st.text(max_size=20).filter(lambda s: s not in VOICES and "\"" not in s and "\\" not in s
                                          and all(c.isprintable() for c in s))


@given(bad=not_a_voice)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_voice_not_in_the_ga_list_is_a_clear_config_error(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "c.toml"
    for text, key in ((f'voice = "{bad}"\n', "voice"), (f'[level_voices]\nA2 = "{bad}"\n', "level_voices.A2")):
        path.write_text(text)
        with pytest.raises(ValueError, match=rf"^{path}: {key}: .* is not a Realtime voice; use one of: alloy "):
            build_config(config_args(path), API_KEY)
    path.write_text("")
    with pytest.raises(ValueError, match=r"voice: .* is not a Realtime voice"):
        build_config(config_args(path, voice=bad), API_KEY)


@pytest.mark.parametrize(("text", "fragment"), [
    ('[level_voices]\nZ9 = "ash"\n', "level_voices.Z9: not a level; use A1, A2, B1, B2, C1 or C2"),
    ('level_voices = "ash"\n', "level_voices: must be a table"),
    ("voice = 3\n", "voice: 3 is not a Realtime voice"),
])
def test_level_voices_must_name_levels(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=fragment):
        build_config(config_args(path), API_KEY)


async def test_the_token_carries_the_voice_of_the_plans_level(db: str) -> None:
    simulator = RealtimeSimulator(SimulatorConfig(api_keys=frozenset({API_KEY})))
    await simulator.start()
    server = CompanionServer(CompanionConfig(db_path=db, openai_base_url=simulator.base_url, openai_api_key=API_KEY,
                                             voice="cedar", level_voices={"A1": "shimmer"}))
    try:
        await server.start()
        await server.provision("kiosk-a", KEY)
        async with httpx.AsyncClient(base_url=server.base_url, headers=AUTH) as http:
            voices = []
            for level in ("A1", "B1"):
                plan = (await http.post("/api/planner", json={"kiosk_id": "kiosk-a",
                                                              "learner": {"level": level}})).json()
                answer = (await http.post("/api/realtime-token", json={"kiosk_id": "kiosk-a",
                                                                       "plan_id": plan["plan_id"]})).json()
                voices.append(answer["voice"])
            no_plan = (await http.post("/api/realtime-token", json={"kiosk_id": "kiosk-a"})).json()["voice"]
        minted = [call for call in simulator.requests if call == ("POST", "/v1/realtime/client_secrets")]
        assert len(minted) == 3
        assert [s.session["audio"]["output"]["voice"] for s in list(simulator._secrets.values())] == \
            ["shimmer", "cedar", "cedar"]
    finally:
        await server.stop()
        await simulator.stop()
    assert voices == ["shimmer", "cedar"]
    assert no_plan == "cedar"  # no plan: the default level (A2) has no voice of its own


# -- the console -------------------------------------------------------------------------------------


async def test_the_console_shows_each_lessons_voice_in_the_list_the_lesson_and_the_csv(db: str) -> None:
    with_voice = lesson_record("kiosk-a", "2026-11-24", 4.0, 0.04, voice="coral",
                               errors=[{"code": "voice_refused", "message": "the model refused the voice 'ballad' "
                                        "(Invalid value); using the default voice marin"}])
    older = lesson_record("kiosk-b", "2026-11-23", 2.0, 0.02)  # from a kiosk that does not send a voice
    async with console_stack(db) as stack:
        await sync_lessons(stack, with_voice, older)
        async with signed_in(stack, TEACHER, TEACHER_PASSWORD) as teacher:
            listing = (await teacher.get("/console/lessons")).text
            row = listing.split(with_voice["session_id"])[1].split("</tr>")[0]
            assert "<th scope=\"col\">Voice</th>" in listing and ">coral<" in row
            page = (await teacher.get(f"/console/lessons/{with_voice['session_id']}")).text
            assert "<dt>Voice</dt><dd>coral</dd>" in page
            assert "voice_refused" in page and "using the default voice marin" in page
            text = (await teacher.get("/console/lessons.csv")).content.decode("utf-8-sig")
        rows = {r["session_id"]: r for r in csv.DictReader(io.StringIO(text))}
        assert rows[with_voice["session_id"]]["voice"] == "coral"
        assert rows[older["session_id"]]["voice"] == ""
        (stored,) = await stack.db.fetchall("SELECT voice FROM sessions WHERE session_id = ?",
                                            (with_voice["session_id"],))
        assert stored[0] == "coral"


async def test_a_lesson_with_an_unknown_voice_is_refused_naming_the_field(db: str) -> None:
    async with console_stack(db) as stack, httpx.AsyncClient(base_url=stack.base_url) as http:
        response = await http.post("/api/summarize", json=lesson_record("kiosk-a", voice="robot"),
                                   headers={"Authorization": f"Bearer {KEYS['kiosk-a']}"})
    assert response.status_code == 400 and "voice" in response.json()["error"]["message"]


def test_the_voice_outlives_retention() -> None:
    reduced = reduce_record(lesson_record("kiosk-a", voice="sage"))
    assert reduced["voice"] == "sage" and reduced["turns"] == [] and reduced["errors"] == []
