"""A real companion with console accounts, kiosks and lessons, and a small cookie-keeping HTTP client.

The client keeps cookies by hand on purpose: the console's cookies are ``Secure`` and the tests speak plain
HTTP to 127.0.0.1, where Python's cookie jars (rightly) refuse to send Secure cookies. Browsers treat
localhost as a secure context; tests/test_console_browser.py checks that with Chromium.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx

from appliance.companion.console import accounts, groups
from appliance.companion.server import CompanionConfig, CompanionServer
from tests.companion_helpers import SK, FakeOpenAI

ADMIN, ADMIN_PASSWORD = "ada", "ada-correct-horse-1"
TEACHER, TEACHER_PASSWORD = "tom", "tom-battery-staple-2"
SCHOOL = "Elm School"
KEYS = {"kiosk-a": "key-a-0123456789abcdef", "kiosk-b": "key-b-0123456789abcdef"}
CSRF = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass
class ConsoleStack:
    server: CompanionServer
    upstream: FakeOpenAI

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def db(self) -> Any:
        return self.server.storage.db


@contextlib.asynccontextmanager
async def console_stack(db: Path | str, **config: Any) -> AsyncIterator[ConsoleStack]:
    """A companion on ``db`` with two kiosks, an admin and a teacher in a group that owns both kiosks."""
    upstream = FakeOpenAI()
    url = await upstream.start()
    server = CompanionServer(CompanionConfig(db_path=db, openai_base_url=url, openai_api_key=SK, **config))
    await server.start()
    try:
        for kiosk, key in KEYS.items():
            await server.provision(kiosk, key)
        await accounts.add_user(server.storage.db, ADMIN, ADMIN_PASSWORD, "admin")
        await accounts.add_user(server.storage.db, TEACHER, TEACHER_PASSWORD, "teacher")
        # The teacher's group owns both kiosks, as at a one-school companion (tests of scopes make their own).
        school = await groups.add_group(server.storage.db, SCHOOL)
        for kiosk in KEYS:
            await groups.assign_kiosk(server.storage.db, kiosk, school)
        await groups.add_member(server.storage.db, school, TEACHER)
        yield ConsoleStack(server, upstream)
    finally:
        await server.stop()
        await upstream.runner.cleanup()


def lesson_record(kiosk: str = "kiosk-a", day: str = "2026-11-24", minutes: float = 3.0, cost: float = 0.05,
                  words: tuple[str, ...] = ("Hello, I like cats.", "Cats are lovely! Why do you like them?"),
                  **overrides: Any) -> dict[str, Any]:
    """A schema-1 session record as a kiosk sends it."""
    turns = [{"role": "learner" if i % 2 == 0 else "tutor", "text": text, "at": f"{day}T10:00:{i:02d}.000Z",
              "source": "voice"} for i, text in enumerate(words)]
    base = {"schema": 1, "session_id": str(uuid.uuid4()), "kiosk_id": kiosk,
            "started_at": f"{day}T10:00:00.000Z", "ended_at": f"{day}T10:{int(minutes):02d}:00.000Z",
            "end_reason": "button", "plan_id": None, "targets": [{"id": "t1", "kind": "vocab", "text": "lovely"}],
            "turns": turns, "errors": [],
            "metrics": {"duration_s": minutes * 60, "est_cost_usd": cost, "learner_turns": (len(turns) + 1) // 2,
                        "tutor_turns": len(turns) // 2}}
    return {**base, **overrides}


async def sync_lessons(stack: ConsoleStack, *records: dict[str, Any]) -> None:
    """Send lessons the way a kiosk does: a batch on the JSON API with its device key."""
    by_kiosk: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_kiosk.setdefault(record["kiosk_id"], []).append(record)
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        for kiosk, batch in by_kiosk.items():
            response = await http.post("/api/sessions/batch", json={"sessions": batch},
                                       headers={"Authorization": f"Bearer {KEYS[kiosk]}"})
            response.raise_for_status()
            assert all(r.get("stored") for r in response.json()["results"]), response.text


async def heartbeat(stack: ConsoleStack, kiosk: str, **fields: Any) -> None:
    """The latest heartbeat row of a kiosk, as the heartbeat endpoint stores it."""
    row = {"seen_at": time.time(), "version": "0.1.0", "state": "idle", "unsynced": 0, "disk_free_mb": 1234.0,
           "last_error": None, **fields}
    await stack.db.execute("DELETE FROM kiosk_status WHERE kiosk_id = ?", (kiosk,))
    await stack.db.execute(
        "INSERT INTO kiosk_status (kiosk_id, seen_at, version, state, unsynced, disk_free_mb, last_error, report) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (kiosk, row["seen_at"], row["version"], row["state"], row["unsynced"], row["disk_free_mb"],
         row["last_error"], "{}"))


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


class Browser:
    """An HTTP client that keeps the console's cookies (Secure ones included) like a browser on localhost."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)
        self.cookies: dict[str, str] = {}
        self.set_cookie_headers: list[str] = []

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        response = await self.http.request(method, path, headers=headers, **kwargs)
        for raw in response.headers.get_list("set-cookie"):
            self.set_cookie_headers.append(raw)
            for name, morsel in SimpleCookie(raw).items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return response

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, data: dict[str, str], **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, data=data, **kwargs)

    async def submit(self, page: str, action: str, data: dict[str, str]) -> httpx.Response:
        """Open ``page``, take its CSRF token and post ``data`` to ``action`` (as the page's form would)."""
        opened = await self.get(page)
        assert opened.status_code == 200, opened.text
        return await self.post(action, {"csrf": csrf_of(opened.text), **data})

    async def login(self, username: str, password: str) -> httpx.Response:
        return await self.submit("/console/login", "/console/login", {"username": username, "password": password})


@contextlib.asynccontextmanager
async def signed_in(stack: ConsoleStack, username: str, password: str) -> AsyncIterator[Browser]:
    browser = Browser(stack.base_url)
    try:
        response = await browser.login(username, password)
        assert response.status_code == 303, response.text
        yield browser
    finally:
        await browser.aclose()
