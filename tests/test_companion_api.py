"""The companion as an admin and a kiosk meet it, black box: `stella-kiosk companion serve` runs as its own
process, driven only over its HTTP API and its command line (the storage behind it may change freely).
Upstream OpenAI is the local simulator."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from appliance.simulator.server import RealtimeSimulator, SimulatorConfig

OPENAI_KEY = "sk-proj-" + uuid.uuid4().hex + uuid.uuid4().hex
"""A key as OpenAI issues them; unique per run, so finding it anywhere is never a coincidence."""


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "appliance.cli", "companion", *args,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


@dataclass
class Companion:
    url: str
    db: Path
    keys: dict[str, str]
    outputs: list[str]
    """Everything the companion and its CLI wrote (stdout, stderr) or answered, for the key check."""

    async def call(self, method: str, path: str, kiosk: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[kiosk]}"} if kiosk else {}
        async with httpx.AsyncClient(base_url=self.url, timeout=10) as http:
            response = await http.request(method, path, headers=headers, **kwargs)
        self.outputs.append(f"{response.status_code} {dict(response.headers)} {response.text}")
        return response


@asynccontextmanager
async def companion(tmp_path: Path, *flags: str, kiosks: tuple[str, ...] = ("room-1", "room-2")
                    ) -> AsyncIterator[Companion]:
    """The kiosks added with `companion add-kiosk`, then `companion serve --port 0 FLAGS` (key in its env)."""
    simulator = RealtimeSimulator(SimulatorConfig(api_keys=frozenset({OPENAI_KEY})))
    await simulator.start()
    db = tmp_path / "companion.db"
    outputs: list[str] = []
    keys = {}
    for name in kiosks:
        code, out, err = await cli("add-kiosk", name, "--db", str(db))
        assert code == 0, err
        keys[name] = out.strip()
        outputs += [out, err]
    env = {"OPENAI_API_KEY": OPENAI_KEY}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appliance.cli", "companion", "serve", "--port", "0", "--db", str(db),
        "--openai-base-url", simulator.base_url, *flags, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **env})
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("READY http://127.0.0.1:"), line
        outputs.append(line)
        yield Companion(line.split()[1], db, keys, outputs)
    finally:
        if proc.returncode is None:
            proc.terminate()
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        outputs += [out.decode(), err.decode()]
        await simulator.stop()


def lesson(kiosk: str, started_at: str) -> dict[str, Any]:
    return {"schema": 1, "session_id": str(uuid.uuid4()), "kiosk_id": kiosk, "started_at": started_at,
            "ended_at": started_at.replace(":00.000Z", ":30.000Z"), "end_reason": "button", "plan_id": None,
            "targets": [], "turns": [{"role": "learner", "text": "hello", "at": started_at, "source": "text"}],
            "metrics": {"duration_s": 30.0}, "errors": []}


async def test_tokens_per_hour_is_a_per_kiosk_limit(tmp_path: Path) -> None:
    """`--tokens-per-hour 2`: a kiosk's third token within the hour is refused with 429, while another
    kiosk still gets its own. Mutations seen failing: the flag ignored (default 60); one limit shared by
    every kiosk."""
    async with companion(tmp_path, "--tokens-per-hour", "2") as c:
        for _ in range(2):
            response = await c.call("POST", "/api/realtime-token", "room-1", json={})
            assert response.status_code == 200 and response.json()["token"].startswith("ek_"), response.text
        refused = await c.call("POST", "/api/realtime-token", "room-1", json={})
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limited"
        other = await c.call("POST", "/api/realtime-token", "room-2", json={})
        assert other.status_code == 200, other.text


async def test_sessions_since_over_http_and_in_the_teachers_export(tmp_path: Path) -> None:
    """`GET /api/sessions?since=DATE` and `companion export --since DATE` hold only lessons started on
    or after DATE (and a kiosk reads only its own). Mutation seen failing: `since` ignored."""
    async with companion(tmp_path) as c:
        days = ["2026-11-18", "2026-11-20", "2026-11-23"]
        mine = [lesson("room-1", f"{day}T09:00:00.000Z") for day in days]
        theirs = [lesson("room-2", "2026-11-24T09:00:00.000Z")]
        for kiosk, records in (("room-1", mine), ("room-2", theirs)):
            stored = await c.call("POST", "/api/sessions/batch", kiosk, json={"sessions": records})
            assert stored.status_code == 200 and all(r["stored"] for r in stored.json()["results"]), stored.text

        everything = (await c.call("GET", "/api/sessions", "room-1")).json()["sessions"]
        assert sorted(s["session_id"] for s in everything) == sorted(r["session_id"] for r in mine)
        recent = (await c.call("GET", "/api/sessions", "room-1", params={"since": "2026-11-20"})).json()["sessions"]
        assert sorted(s["session_id"] for s in recent) == sorted(r["session_id"] for r in mine[1:])

        code, out, err = await cli("export", "--db", str(c.db), "--since", "2026-11-20")
        assert code == 0, err
        rows = list(csv.DictReader(io.StringIO(out)))
        expected = {r["session_id"] for r in mine[1:] + theirs}
        assert {row["session_id"] for row in rows} == expected, rows
        code, out, _ = await cli("export", "--db", str(c.db), "--since", "2026-11-20", "--kiosk", "room-1")
        assert {row["session_id"] for row in csv.DictReader(io.StringIO(out))} == {r["session_id"] for r in mine[1:]}


async def test_the_openai_key_is_never_returned_or_logged(tmp_path: Path) -> None:
    """The OpenAI key appears in no HTTP answer (any endpoint, good or bad request, headers included),
    in no CLI output and in nothing the service writes. Mutation seen failing: the key echoed in
    /api/health."""
    async with companion(tmp_path) as c:
        await c.call("GET", "/api/health")
        await c.call("POST", "/api/planner", "room-1", json={"learner": {"level": "A2"}})
        token = await c.call("POST", "/api/realtime-token", "room-1", json={})
        assert token.status_code == 200
        await c.call("POST", "/api/summarize", "room-1", json=lesson("room-1", "2026-11-24T09:00:00.000Z"))
        await c.call("POST", "/api/sessions/batch", "room-1", json={"sessions": [{"bad": "record"}]})
        await c.call("GET", "/api/sessions", "room-1", params={"kiosk": "room-2"})
        await c.call("POST", "/api/realtime-token", json={})  # no device key
        await c.call("POST", "/api/realtime-token", "room-1", content=b"{not json")
        await c.call("GET", "/api/nowhere", "room-1")
        _code, out, err = await cli("export", "--db", str(c.db))
        c.outputs += [out, err]
        _code, out, err = await cli("doctor", "--db", str(c.db), "--openai-base-url", "http://127.0.0.1:9",
                                   env={"OPENAI_API_KEY": OPENAI_KEY})
        c.outputs += [out, err]
    everything = "\n".join(c.outputs)
    assert "ek_" in everything  # the answers were collected (an ephemeral token is meant to be returned)
    for fragment in (OPENAI_KEY, OPENAI_KEY[8:40], OPENAI_KEY[-24:]):
        assert fragment not in everything
    assert json.dumps(OPENAI_KEY)[1:-1] not in everything
