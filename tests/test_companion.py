"""The companion over real HTTP: auth, planning with fallback, GA token minting, idempotent records."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.uplink.client import CompanionClient, CompanionError
from tests.companion_helpers import SK, FakeOpenAI, curriculum_packs, record


@pytest.fixture(params=["sqlite", "postgres"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path):
    """The companion with each storage backend: every test below runs on SQLite and on PostgreSQL."""
    db = tmp_path / "c.db" if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")
    upstream = FakeOpenAI()
    url = await upstream.start()
    server = CompanionServer(CompanionConfig(db_path=db, openai_base_url=url, openai_api_key=SK,
                                             tokens_per_hour=3))
    await server.start()
    await server.provision("kiosk-a", "key-a-0123456789abcdef")
    await server.provision("kiosk-b", "key-b-0123456789abcdef")
    a = CompanionClient(server.base_url, "key-a-0123456789abcdef", "kiosk-a")
    yield server, upstream, a
    await a.aclose()
    await server.stop()
    await upstream.runner.cleanup()


async def test_plan_and_token_use_ga_shape_and_hide_the_key(stack, caplog: pytest.LogCaptureFixture) -> None:
    _server, upstream, a = stack
    caplog.set_level(logging.DEBUG)
    plan = await a.plan(level="B1")
    assert plan.title == "Pets" and plan.targets[0].text == "hamster"
    token = await a.token(plan_id=plan.plan_id)
    assert token.token == "ek_test_123" and token.expires_at == 2_000_000_000
    assert "ek_test_123" not in repr(token)
    path, body, auth = upstream.requests[-1]
    assert path == "/v1/realtime/client_secrets" and auth == f"Bearer {SK}"
    session = body["session"]
    assert session["type"] == "realtime" and session["output_modalities"] == ["audio"]
    assert "modalities" not in session and "voice" not in session
    assert session["audio"]["output"]["voice"] == "marin"
    assert "hamster" in session["instructions"] and "hamster" in token.prompt
    assert SK not in caplog.text


async def test_planner_falls_back_to_curriculum(stack) -> None:
    """The fallback serves a pack of the requested level from the published curriculum file."""
    _server, upstream, a = stack
    for mode in ("500", "garbage"):
        upstream.planner_mode = mode
        plan = await a.plan(level="A1")
        assert plan.title != "Pets", plan  # not the failed upstream's
        assert (plan.title, [t.text for t in plan.targets]) in curriculum_packs("A1"), plan


async def test_token_errors_and_rate_limit(stack) -> None:
    _server, upstream, a = stack
    upstream.secrets_status = 500
    with pytest.raises(CompanionError) as info:
        await a.token()
    assert info.value.status == 502 and info.value.retryable and SK not in info.value.message
    upstream.secrets_status = 200
    with pytest.raises(CompanionError, match="unknown_plan"):
        await a.token(plan_id="plan_nope")
    for _ in range(3):
        await a.token()
    with pytest.raises(CompanionError) as info:
        await a.token()
    assert info.value.status == 429 and info.value.code == "rate_limited"


async def test_records_are_idempotent_and_validated(stack) -> None:
    _server, _upstream, a = stack
    rec = record()
    await a.summarize(rec)
    await a.summarize(rec)
    results = await a.send_batch([rec, record(), record(end_reason="exploded")])
    assert [r.get("stored") for r in results] == [True, True, None]
    assert results[2]["error"]["code"] == "invalid_record" and "end_reason" in results[2]["error"]["message"]
    assert len(await a.sessions()) == 2
    with pytest.raises(CompanionError) as info:
        await a.summarize(record(turns=[{"role": "robot", "text": "x", "at": "2026-11-24T10:00:01Z"}]))
    assert info.value.status == 400 and not info.value.retryable


async def test_auth_and_isolation(stack) -> None:
    server, _upstream, a = stack
    await a.summarize(record())
    base = server.base_url
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/api/health")).json()["ok"] is True
        for headers in ({}, {"Authorization": "Bearer wrong-key-000000000"}):
            r = await http.post(f"{base}/api/planner", headers=headers, json={"kiosk_id": "kiosk-a"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        b = {"Authorization": "Bearer key-b-0123456789abcdef"}
        assert (await http.get(f"{base}/api/sessions", headers=b)).json()["sessions"] == []
        assert (await http.get(f"{base}/api/sessions?kiosk=kiosk-a", headers=b)).status_code == 403
        r = await http.post(f"{base}/api/summarize", headers=b, json=record("kiosk-a"))
        assert r.status_code == 403
        r = await http.post(f"{base}/api/summarize", headers=b, content=b"{not json")
        assert r.status_code == 400
        r = await http.post(f"{base}/api/summarize", headers=b, content=b"x" * (2 * 1024 * 1024))
        assert r.status_code == 413
    await server.storage.revoke_kiosk("kiosk-b")
    async with httpx.AsyncClient() as http:
        r = await http.get(f"{base}/api/sessions", headers=b)
        assert r.status_code == 401


def test_cli_add_kiosk_and_serve(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "companion", "add-kiosk", "room-12",
                          "--db", str(db)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    key = out.stdout.strip()
    assert len(key) > 30
    env = {"OPENAI_API_KEY": SK, "PATH": "/usr/bin:/bin"}
    serve = [sys.executable, "-m", "appliance.cli", "companion", "serve", "--port", "0", "--db", str(db)]
    proc = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:")
        url = line.split()[1]
        r = httpx.get(f"{url}/api/sessions", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json() == {"sessions": []}
    finally:
        proc.terminate()
        proc.wait(20)
    assert SK not in proc.stderr.read()
    missing = subprocess.run([sys.executable, "-m", "appliance.cli", "companion", "serve", "--db", str(db)],
                             capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert missing.returncode == 78 and "OPENAI_API_KEY" in missing.stderr


async def test_daily_minutes_budget(stack) -> None:
    import dataclasses
    import time as _time

    server, _upstream, a = stack
    server.config = dataclasses.replace(server.config, daily_minutes=2.0)
    today = _time.strftime("%Y-%m-%dT%H:%M:%S.000Z", _time.gmtime())
    await a.token()  # under budget
    await a.summarize(record(started_at=today, ended_at=today, metrics={"duration_s": 150.0}))
    with pytest.raises(CompanionError) as info:
        await a.token()
    assert info.value.status == 429 and info.value.code == "daily_budget_exhausted"


async def test_export_csv_for_teachers(tmp_path: Path) -> None:
    import csv as _csv
    import io

    from appliance.companion.storage import open_storage

    storage = await open_storage(tmp_path / "c.db")
    await storage.store_session(record("kiosk-a"))
    await storage.store_session(record("kiosk-b", end_reason="voice_stop"))
    await storage.close()
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "companion", "export", "--db", str(tmp_path / "c.db"),
                          "--kiosk", "kiosk-b"], capture_output=True, text=True, timeout=60)
    rows = list(_csv.DictReader(io.StringIO(out.stdout)))
    assert out.returncode == 0 and [r["end_reason"] for r in rows] == ["voice_stop"]
    assert rows[0]["transcript"] == "learner: hi"


def test_companion_config_file(tmp_path: Path) -> None:
    import argparse

    from appliance.companion.cli import build_config

    root = Path(__file__).resolve().parent.parent
    args = argparse.Namespace(config=str(root / "config" / "companion.example.toml"), host=None, port=0, db=None,
                              openai_base_url=None, model="gpt-realtime-2", voice=None, planner_model=None,
                              tokens_per_hour=None, daily_minutes=None)
    config = build_config(args, SK)
    assert config.host == "0.0.0.0" and config.port == 0  # the flag wins over the file
    assert config.realtime_model == "gpt-realtime-2" and config.voice == "marin"
    assert SK not in repr(config)
    bad = tmp_path / "c.toml"
    bad.write_text('openai_api_key = "sk-in-a-file"\n')
    result = subprocess.run([sys.executable, "-m", "appliance.cli", "companion", "serve", "--config", str(bad)],
                            capture_output=True, text=True, timeout=60, env={"OPENAI_API_KEY": SK, "PATH": "/usr/bin"})
    assert result.returncode == 78 and "openai_api_key: unknown key" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
