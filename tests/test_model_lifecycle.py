"""Models that retire on a schedule: the companion warns ahead (log, health, doctor) and moves to the
next configured model when one is gone, against the simulator's /v1/models and model_not_found."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from appliance.companion.cli import build_config
from appliance.companion.models import WARN_DAYS, status_of
from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.simulator.server import RealtimeSimulator, SimulatorConfig
from appliance.uplink.client import CompanionClient, CompanionError
from tests.companion_helpers import curriculum_packs
from tests.harness import API_KEY

KEY = "key-a-0123456789abcdef"
PAST = "2026-01-01"


@pytest.fixture
async def stack(tmp_path: Path):
    soon = (date.today() + timedelta(days=30)).isoformat()
    sim = RealtimeSimulator(SimulatorConfig(api_keys=frozenset({API_KEY}), model_shutdowns={"gpt-transcribe": soon}))
    await sim.start()
    config = CompanionConfig(db_path=tmp_path / "c.db", openai_base_url=sim.base_url, openai_api_key=API_KEY,
                             realtime_model=("gpt-realtime-2.1-mini", "gpt-realtime-2"),
                             transcription_model=("gpt-live-transcribe", "gpt-transcribe"),
                             planner_model=("gpt-5.4-mini", "gpt-5.5"))
    server = CompanionServer(config)
    await server.start()
    await server.provision("kiosk-a", KEY)
    client = CompanionClient(server.base_url, KEY, "kiosk-a")
    await asyncio.wait_for(server.models_checked.wait(), 10)
    yield sim, server, client, soon
    await client.aclose()
    await server.stop()
    await sim.stop()


def secrets_requests(sim: RealtimeSimulator) -> int:
    return sim.requests.count(("POST", "/v1/realtime/client_secrets"))


async def test_retired_models_fall_back_and_warn_once(stack, caplog: pytest.LogCaptureFixture) -> None:
    """A model shut down after the companion's last check fails minting with model_not_found: the
    companion used to pass that error to every kiosk; now it moves to the role's next model."""
    sim, server, client, soon = stack
    caplog.set_level(logging.WARNING)
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{server.base_url}/api/health")).json()
    assert health["ok"] and health["warnings"] == [
        f"transcription model gpt-transcribe retires on {soon} (30 days): put a current model first in "
        "transcription_model"]
    assert health["models"]["realtime"] == "gpt-realtime-2.1-mini"
    # Both first choices are shut down now; the companion has not looked since.
    sim.model_shutdowns.update({"gpt-realtime-2.1-mini": PAST, "gpt-live-transcribe": PAST, "gpt-5.4-mini": PAST})
    token = await client.token()
    assert token.token.startswith("ek_") and token.model == "gpt-realtime-2"
    assert secrets_requests(sim) == 3  # realtime refused, transcription refused, then minted
    token = await client.token()
    assert token.model == "gpt-realtime-2" and secrets_requests(sim) == 4  # the working pair is remembered
    chats = sim.requests.count(("POST", "/v1/chat/completions"))
    plan = await client.plan()
    # From the planner's next model, not the curriculum: the planner was asked again and its answer used.
    assert sim.requests.count(("POST", "/v1/chat/completions")) >= chats + 2  # refused, then answered
    assert plan.title not in {title for title, _ in curriculum_packs()}, plan
    for model in ("gpt-realtime-2.1-mini", "gpt-live-transcribe", "gpt-5.4-mini"):
        lines = [r for r in caplog.records if model in r.getMessage() and r.levelno == logging.WARNING]
        assert len(lines) == 1, [r.getMessage() for r in lines]
    await server.check_models()
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{server.base_url}/api/health")).json()
    assert "realtime model gpt-realtime-2.1-mini was shut down on 2026-01-01: remove it from realtime_model" \
        in health["warnings"]
    assert health["models"] == {"planner": "gpt-5.5", "realtime": "gpt-realtime-2",
                                "transcription": "gpt-transcribe"}


async def test_every_model_gone_is_a_clear_error(stack) -> None:
    sim, _server, client, _soon = stack
    sim.model_shutdowns.update({"gpt-realtime-2.1-mini": PAST, "gpt-realtime-2": PAST})
    with pytest.raises(CompanionError) as info:
        await client.token()
    assert info.value.code == "model_not_found" and "realtime_model" in info.value.message


async def test_doctor_prints_one_line_per_model(stack) -> None:
    sim, _server, _client, soon = stack
    sim.model_shutdowns["gpt-realtime-2.1-mini"] = PAST
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appliance.cli", "companion", "doctor", "--openai-base-url", sim.base_url,
        "--model", "gpt-realtime-2.1-mini,gpt-realtime-2", "--transcription-model", "gpt-transcribe",
        "--planner-model", "gpt-5.4-mini,no-such-model",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "OPENAI_API_KEY": API_KEY})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = out.decode().splitlines()
    assert proc.returncode == 1, err.decode()
    assert [line.split()[:2] for line in lines] == [
        ["planner", "gpt-5.4-mini"], ["planner", "no-such-model"], ["realtime", "gpt-realtime-2.1-mini"],
        ["realtime", "gpt-realtime-2"], ["transcription", "gpt-transcribe"]]
    assert lines[0].endswith(" ok") and lines[1].endswith(" not found")
    assert lines[2].endswith(f"retired (shut down on {PAST})") and lines[3].endswith(" ok")
    assert lines[4].endswith(f"retiring on {soon} (30 days)")


@pytest.mark.parametrize(("days", "state"), [(-3, "retired"), (0, "retired"), (1, "retiring"),
                                             (WARN_DAYS, "retiring"), (WARN_DAYS + 1, "ok")])
def test_warning_window(days: int, state: str) -> None:
    today = date(2026, 11, 25)
    shutdown = (today + timedelta(days=days)).isoformat()
    assert status_of("realtime", "m", {"id": "m", "shutdown_date": shutdown}, today).state == state
    assert status_of("realtime", "m", {"id": "m", "shutdown_date": None}, today).state == "ok"
    assert status_of("realtime", "m", None, today).state == "not_found"


def test_model_lists_in_the_config_file(tmp_path: Path) -> None:
    """A single name still works; a list is the fallback order; a bad value names the key."""
    names = ("host", "port", "db", "openai_base_url", "model", "transcription_model", "planner_model", "voice",
             "tokens_per_hour", "daily_minutes")
    args = argparse.Namespace(config=str(tmp_path / "c.toml"), **dict.fromkeys(names))
    (tmp_path / "c.toml").write_text('realtime_model = "gpt-realtime-2"\n'
                                     'planner_model = ["gpt-5.4-mini", "gpt-5.5"]\n')
    config = build_config(args, API_KEY)
    assert config.models()["realtime"] == ("gpt-realtime-2",)
    assert config.models()["planner"] == ("gpt-5.4-mini", "gpt-5.5")
    (tmp_path / "c.toml").write_text("transcription_model = []\n")
    with pytest.raises(ValueError, match="transcription_model: names no model"):
        build_config(args, API_KEY)
    (tmp_path / "c.toml").write_text("planner_model = [1, 2]\n")
    with pytest.raises(ValueError, match="planner_model: must be a model name"):
        build_config(args, API_KEY)
    args.model = "gpt-realtime-2.1-mini, gpt-realtime-2"
    (tmp_path / "c.toml").write_text("")
    assert build_config(args, API_KEY).models()["realtime"] == ("gpt-realtime-2.1-mini", "gpt-realtime-2")
