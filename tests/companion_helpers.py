"""The companion's surroundings for tests: a small upstream standing in for OpenAI, the lesson records
a kiosk sends, and the published curriculum read as data. Shared by the companion, console, fleet and
model-lifecycle tests."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
SK = "sk-upstream-secret-0123456789"


class FakeOpenAI:
    """A tiny upstream that records requests; its behaviour is switchable per test."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any], str]] = []
        self.planner_mode = "ok"
        self.secrets_status = 200
        app = web.Application()
        app.router.add_post("/v1/realtime/client_secrets", self.secrets)
        app.router.add_post("/v1/chat/completions", self.chat)
        self.runner = web.AppRunner(app)

    async def start(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    async def secrets(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, await request.json(), request.headers.get("Authorization", "")))
        if self.secrets_status != 200:
            return web.json_response({"error": {"code": "server_error", "message": "boom"}}, status=self.secrets_status)
        return web.json_response({"value": "ek_test_123", "expires_at": 2_000_000_000, "session": {"odd": "shape"}})

    async def chat(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, await request.json(), request.headers.get("Authorization", "")))
        if self.planner_mode == "500":
            return web.json_response({"error": {"message": "overloaded"}}, status=500)
        content = "not json" if self.planner_mode == "garbage" else json.dumps({
            "title": "Pets", "warmup": "Do you have a pet?",
            "targets": [{"id": "p1", "kind": "vocab", "text": "hamster", "example": "My hamster is small."}]})
        return web.json_response({"choices": [{"message": {"role": "assistant", "content": content}}]})


def record(kiosk: str = "kiosk-a", **overrides: Any) -> dict[str, Any]:
    """A valid finished lesson of ``kiosk`` with a fresh session id; ``overrides`` replace its fields."""
    base = {"schema": 1, "session_id": str(uuid.uuid4()), "kiosk_id": kiosk,
            "started_at": "2026-11-24T10:00:00.000Z", "ended_at": "2026-11-24T10:03:00.000Z",
            "end_reason": "button", "plan_id": None, "targets": [],
            "turns": [{"role": "learner", "text": "hi", "at": "2026-11-24T10:00:01.000Z", "source": "voice"}],
            "metrics": {"duration_s": 180.0}, "errors": []}
    return {**base, **overrides}


def curriculum_packs(level: str | None = None) -> list[tuple[str, list[str]]]:
    """The published curriculum file's packs for ``level`` (None: every level), read as data (not through
    the companion's loader), so the fallback is checked against what the file promises, whatever it holds."""
    packs = json.loads((ROOT / "appliance/data/curriculum.json").read_text())["packs"]
    found = [(p["title"], [t["text"] for t in p["targets"]]) for p in packs if level in (None, p["level"])]
    assert found, f"the curriculum has no {level} pack"
    return found
