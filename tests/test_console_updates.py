"""The console's Updates page and the fleet's update columns, over real HTTP against a real companion that
serves a signed repository, on SQLite and on a private PostgreSQL: an admin publishes, stages, pauses and
rolls back, kiosks' assignments follow, every change is in the access log, and a refused change says why
and changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from appliance.companion import rollout
from tests.console_helpers import (
    ADMIN,
    ADMIN_PASSWORD,
    KEYS,
    TEACHER,
    TEACHER_PASSWORD,
    ConsoleStack,
    console_stack,
    csrf_of,
    signed_in,
)
from tests.rollout_helpers import signed_repository

RELEASES = ["1.3.0", "1.4.0", "1.5.0"]
ROLLOUT_ACTIONS = ("publish-release", "rollback-channel", "set-rollout", "pause-rollout", "resume-rollout",
                   "set-channel")


@pytest.fixture(params=["sqlite", "postgres"])
def db_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    return tmp_path / "c.db" if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")


@pytest.fixture
async def stack(db_spec: Path | str, tmp_path: Path) -> AsyncIterator[ConsoleStack]:
    async with console_stack(db_spec, updates_dir=signed_repository(tmp_path / "repo", RELEASES)) as s:
        yield s


async def assignments(stack: ConsoleStack) -> dict[str, str | None]:
    """What each kiosk is told by ``GET /api/updates/assignment``, asked with its own device key."""
    found = {}
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        for kiosk, key in KEYS.items():
            response = await http.get("/api/updates/assignment", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.text
            found[kiosk] = response.json()["version"]
    return found


async def logged(stack: ConsoleStack) -> list[tuple[str, str, str]]:
    """The access log's rollout entries (the stack's own set-up of groups is logged too)."""
    rows = await stack.db.fetchall("SELECT username, action, subject FROM access_log ORDER BY id")
    return [tuple(row) for row in rows if row[1] in ROLLOUT_ACTIONS]


async def post(browser: Any, action: str, data: dict[str, str] | list[tuple[str, str]]) -> httpx.Response:
    """Post a form of the Updates page with the page's CSRF token."""
    page = await browser.get("/console/updates")
    form: dict[str, Any] = {"csrf": csrf_of(page.text)}
    for name, value in (data.items() if isinstance(data, dict) else data):
        if name == "group":  # checkboxes: a field that may repeat
            form.setdefault(name, []).append(value)
        else:
            form[name] = value
    return await browser.post(action, form)


async def test_an_admin_publishes_stages_pauses_and_rolls_back(stack: ConsoleStack) -> None:
    school = (await stack.db.fetchone("SELECT group_id FROM kiosk_groups"))[0]
    outside = {k for k in KEYS if not rollout.in_share(k, 10)}
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        page = (await admin.get("/console/updates")).text
        assert "Channel stable" in page and "Channel canary" in page and "nothing yet" in page
        for release in RELEASES:
            assert f'<option value="{release}">' in page

        done = await post(admin, "/console/updates/stable/publish", {"version": "1.4.0", "share": "10"})
        assert done.status_code == 303 and done.headers["location"].endswith("done=published")
        assert await assignments(stack) == {k: None if k in outside else "1.4.0" for k in KEYS}

        # The school goes first, whatever the share.
        done = await post(admin, "/console/updates/stable/rollout", [("share", "10"), ("group", str(school))])
        assert done.status_code == 303
        assert await assignments(stack) == dict.fromkeys(KEYS, "1.4.0")
        page = (await admin.get("/console/updates?done=rollout")).text
        assert "Rollout saved." in page and "rolling out" in page and "2 told to run 1.4.0" in page

        assert (await post(admin, "/console/updates/stable/pause", {})).status_code == 303
        assert await assignments(stack) == dict.fromkeys(KEYS)
        assert "paused" in (await admin.get("/console/updates")).text
        assert (await post(admin, "/console/updates/stable/resume", {})).status_code == 303
        assert await assignments(stack) == dict.fromkeys(KEYS, "1.4.0")

        page = (await admin.get("/console/updates")).text
        assert 'id="rollback-stable"' in page and '<option value="1.3.0">' in page
        done = await post(admin, "/console/updates/stable/rollback", {"version": "1.3.0"})
        assert done.status_code == 303 and done.headers["location"].endswith("done=rolled-back")
        assert await assignments(stack) == dict.fromkeys(KEYS, "1.3.0")

        # A kiosk moved to canary follows canary's release.
        moved = await post(admin, "/console/kiosk-channel", {"kiosk_id": "kiosk-a", "channel": "canary"})
        assert moved.status_code == 303
        done = await post(admin, "/console/updates/canary/publish", {"version": "1.5.0", "share": "100"})
        assert done.status_code == 303
        assert await assignments(stack) == {"kiosk-a": "1.5.0", "kiosk-b": "1.3.0"}
    assert await logged(stack) == [
        (ADMIN, "publish-release", "1.4.0 to stable at 10%"),
        (ADMIN, "set-rollout", "stable: 10%, first: 'Elm School'"),
        (ADMIN, "pause-rollout", "stable (1.4.0)"),
        (ADMIN, "resume-rollout", "stable (1.4.0)"),
        (ADMIN, "rollback-channel", "stable from 1.4.0 to 1.3.0"),
        (ADMIN, "set-channel", "kiosk kiosk-a to canary"),
        (ADMIN, "publish-release", "1.5.0 to canary at 100%"),
    ]


async def test_a_refused_change_says_why_and_changes_nothing(stack: ConsoleStack) -> None:
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        done = await post(admin, "/console/updates/stable/publish", {"version": "1.4.0", "share": "20"})
        assert done.status_code == 303
        refused = [
            ("/console/updates/stable/publish", {"version": "9.0.0", "share": "10"}, 400,
             "not a release in the signed repository"),
            ("/console/updates/stable/publish", {"version": "1.3.0", "share": "10"}, 400, "not newer than 1.4.0"),
            ("/console/updates/stable/publish", {"version": "1.5.0", "share": "150"}, 400, "share: a whole percent"),
            ("/console/updates/stable/rollout", {"share": "ten"}, 400, "share: a whole percent"),
            ("/console/updates/stable/rollout", [("share", "50"), ("group", "abc")], 400, "groups: choose groups"),
            ("/console/updates/stable/rollout", [("share", "50"), ("group", "987")], 400, "groups: choose groups"),
            ("/console/updates/stable/rollback", {"version": "1.5.0"}, 400, "older than 1.4.0"),
            ("/console/updates/nightly/publish", {"version": "1.5.0", "share": "10"}, 404, "no update channel"),
            ("/console/kiosk-channel", {"kiosk_id": "kiosk-a", "channel": "beta"}, 400, "channel: one of"),
            ("/console/kiosk-channel", {"kiosk_id": "nobody", "channel": "canary"}, 400, "no kiosk named nobody"),
        ]
        for action, data, status, message in refused:
            response = await post(admin, action, data)
            assert response.status_code == status and message in response.text, (action, data, response.text[:300])
        response = await admin.post("/console/updates/stable/pause", {})  # no CSRF token
        assert response.status_code == 403
    channels = {c.name: c for c in await rollout.channels(stack.db)}
    stable = channels["stable"]
    assert (stable.version, stable.share, stable.paused, stable.group_ids) == ("1.4.0", 20, False, frozenset())
    assert channels["canary"].version is None
    assert [row[1] for row in await logged(stack)] == ["publish-release"]
    async with signed_in(stack, TEACHER, TEACHER_PASSWORD) as teacher:
        assert (await teacher.get("/console/updates")).status_code == 403
        assert "Updates" not in (await teacher.get("/console/lessons")).text


async def test_the_fleet_shows_each_kiosks_channel_version_update_state_and_error(stack: ConsoleStack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        beat = {"version": "1.4.0", "state": "idle", "update_state": "rolled-back",
                "update_error": "1.5.0 failed its health check <doctor: mic>; back on 1.4.0"}
        response = await http.post("/api/heartbeat", json=beat, headers={"Authorization": f"Bearer {KEYS['kiosk-a']}"})
        assert response.status_code == 200
    await rollout.set_kiosk_channel(stack.db, "kiosk-b", "canary", ADMIN)
    for who, password in ((ADMIN, ADMIN_PASSWORD), (TEACHER, TEACHER_PASSWORD)):
        async with signed_in(stack, who, password) as browser:
            page = (await browser.get("/console/fleet")).text
            row_a = page.split('id="kiosk-kiosk-a"')[1].split("</tr>")[0]
            row_b = page.split('id="kiosk-kiosk-b"')[1].split("</tr>")[0]
            assert "<td>stable</td><td>1.4.0</td>" in row_a and '<td class="update-state">rolled-back</td>' in row_a
            assert "failed its health check &lt;doctor: mic&gt;; back on 1.4.0" in row_a  # escaped
            assert "<td>canary</td>" in row_b and '<td class="update-state">—</td>' in row_b


async def test_without_a_repository_the_page_says_how_to_serve_releases(tmp_path: Path) -> None:
    async with console_stack(tmp_path / "plain.db") as plain, signed_in(plain, ADMIN, ADMIN_PASSWORD) as admin:
        page = (await admin.get("/console/updates")).text
        assert "serves no signed releases" in page and "updates_dir" in page
        response = await post(admin, "/console/updates/stable/publish", {"version": "1.4.0", "share": "10"})
        assert response.status_code == 400 and "publish a signed release to the repository first" in response.text


HOSTILE = ["", " ", "\x00", "1.4.0\x00", "kiosk-a\x00", "stable\x00", "٣", "1e2", "-5", "101", "0x10", "9" * 40,
           "<b>1.4.0</b>", "' OR 1=1 --", "%s", "?", "x" * 5000]


async def test_hostile_form_input_is_refused_cleanly_and_changes_nothing(stack: ConsoleStack) -> None:
    """Every field of every Updates form, and the channel in the URL, with text meant to break it (NUL, which
    PostgreSQL refuses; other scripts' digits; SQL; markup; very long): a 4xx page that says why, never a
    server error, and nothing published or moved."""
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        forms = {"/console/updates/stable/publish": {"version": "1.4.0", "share": "10"},
                 "/console/updates/stable/rollback": {"version": "1.3.0"},
                 "/console/updates/stable/rollout": {"share": "10", "group": "1"},
                 "/console/kiosk-channel": {"kiosk_id": "kiosk-a", "channel": "canary"}}
        for action, good in forms.items():
            for name in good:
                for value in HOSTILE:
                    response = await post(admin, action, {**good, name: value})
                    assert 400 <= response.status_code < 500, (action, name, value, response.status_code)
                    assert 'role="alert"' in response.text, (action, name, value)
        for channel in ("stable%00", "%3Cb%3E", "STABLE", "x" * 300):
            response = await post(admin, f"/console/updates/{channel}/pause", {})
            assert response.status_code == 404 and 'role="alert"' in response.text, channel
    channels = {c.name: c for c in await rollout.channels(stack.db)}
    assert channels["stable"].version is None and channels["canary"].version is None
    assert await stack.db.fetchall("SELECT DISTINCT channel FROM kiosks") == [("stable",)]
    assert await logged(stack) == []
