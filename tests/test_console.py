"""The web console over real HTTP on a real companion, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.companion.console import accounts
from appliance.companion.storage import open_storage
from tests.console_helpers import (
    ADMIN,
    ADMIN_PASSWORD,
    KEYS,
    TEACHER,
    TEACHER_PASSWORD,
    Browser,
    ConsoleStack,
    console_stack,
    csrf_of,
    heartbeat,
    lesson_record,
    signed_in,
    sync_lessons,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgres"])
def db_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    return tmp_path / "c.db" if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")


@pytest.fixture
async def stack(db_spec: Path | str):
    async with console_stack(db_spec) as s:
        yield s


async def token_status(stack: ConsoleStack, key: str) -> int:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        response = await http.post("/api/realtime-token", json={}, headers={"Authorization": f"Bearer {key}"})
        return response.status_code


# -- signing in ------------------------------------------------------------------------------------
async def test_login_logout_and_wrong_password(stack: ConsoleStack) -> None:
    browser = Browser(stack.base_url)
    try:
        anonymous = await browser.get("/console/lessons")
        assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/console/login?next=")
        wrong = await browser.login(ADMIN, "not-the-password")
        assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
        assert "stella_console" not in browser.cookies
        unknown = await browser.login("nobody", "whatever-password")
        assert unknown.status_code == 401 and "Wrong username or password" in unknown.text
        ok = await browser.login(ADMIN, ADMIN_PASSWORD)
        assert ok.status_code == 303 and ok.headers["location"] == "/console/lessons"
        page = await browser.get("/console/lessons")
        assert page.status_code == 200 and "<h1>Lessons</h1>" in page.text and f"{ADMIN} (admin)" in page.text
        token = browser.cookies["stella_console"]
        out = await browser.post("/console/logout", {"csrf": csrf_of(page.text)})
        assert out.status_code == 303 and "stella_console" not in browser.cookies
        # The old cookie is dead on the server too, not only forgotten by this browser.
        replay = await browser.get("/console/lessons", headers={})
        assert replay.status_code == 303
        browser.cookies["stella_console"] = token
        assert (await browser.get("/console/lessons")).status_code == 303
    finally:
        await browser.aclose()


async def test_login_redirects_back_only_inside_the_console(stack: ConsoleStack) -> None:
    """Guards against an open redirect: ``next`` pointing at another site must be ignored."""
    browser = Browser(stack.base_url)
    try:
        for target, expected in (("/console/usage?kiosk=kiosk-a", "/console/usage?kiosk=kiosk-a"),
                                 ("//evil.example/", "/console/lessons"), ("https://evil.example/", "/console/lessons"),
                                 ("/console/\r\nSet-Cookie: x=1", "/console/lessons")):
            page = await browser.get("/console/login", params={"next": target})
            response = await browser.post("/console/login", {"csrf": csrf_of(page.text), "next": target,
                                                             "username": TEACHER, "password": TEACHER_PASSWORD})
            assert response.headers["location"] == expected
            browser.cookies.pop("stella_console")
    finally:
        await browser.aclose()


async def test_two_open_sign_in_pages_both_work(stack: ConsoleStack) -> None:
    """Guards against a second sign-in tab silently invalidating the first one's form (403)."""
    browser = Browser(stack.base_url)
    try:
        first = await browser.get("/console/login")
        await browser.get("/console/login")
        answer = await browser.post("/console/login", {"csrf": csrf_of(first.text), "username": TEACHER,
                                                       "password": TEACHER_PASSWORD})
        assert answer.status_code == 303
    finally:
        await browser.aclose()


async def test_cookies_are_httponly_secure_strict(stack: ConsoleStack) -> None:
    browser = Browser(stack.base_url)
    try:
        await browser.login(TEACHER, TEACHER_PASSWORD)
        for name in ("stella_login", "stella_console"):
            raw = next(h for h in browser.set_cookie_headers if h.startswith(f"{name}=") and "Max-Age=0" not in h)
            attributes = {part.strip().split("=")[0].lower(): part.strip() for part in raw.split(";")[1:]}
            assert "httponly" in attributes and "secure" in attributes, raw
            assert attributes["samesite"] == "SameSite=Strict" and attributes["path"] == "Path=/console/", raw
        session = browser.cookies["stella_console"]
        assert len(session) >= 40
        # Only a hash of the token is stored.
        rows = await stack.db.fetchall("SELECT token_hash FROM web_sessions")
        assert rows == [(accounts.token_hash(session),)] and session not in rows[0][0]
    finally:
        await browser.aclose()


async def test_password_is_stored_as_an_argon2_hash(stack: ConsoleStack) -> None:
    row = await stack.db.fetchone("SELECT password_hash FROM users WHERE username = ?", (ADMIN,))
    assert row[0].startswith("$argon2id$") and ADMIN_PASSWORD not in row[0]


async def test_sessions_end_when_idle_too_long_or_account_disabled(stack: ConsoleStack) -> None:
    async with signed_in(stack, TEACHER, TEACHER_PASSWORD) as teacher:
        assert (await teacher.get("/console/lessons")).status_code == 200
        await stack.db.execute("UPDATE web_sessions SET last_seen = ?", (time.time() - accounts.IDLE_S - 1,))
        expired = await teacher.get("/console/usage?kiosk=kiosk-a")
        assert expired.status_code == 303
        target = httpx.URL(expired.headers["location"])
        assert target.path == "/console/login" and target.params["next"] == "/console/usage?kiosk=kiosk-a"
        assert await stack.db.fetchall("SELECT * FROM web_sessions WHERE username = ?", (TEACHER,)) == []
        posted = await teacher.post("/console/logout", {"csrf": "x"})
        assert posted.headers["location"] == "/console/login"
    async with signed_in(stack, TEACHER, TEACHER_PASSWORD) as teacher, signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        done = await admin.submit("/console/users", f"/console/users/{TEACHER}/disable", {})
        assert done.status_code == 303
        assert (await teacher.get("/console/lessons")).status_code == 303
        assert (await teacher.login(TEACHER, TEACHER_PASSWORD)).status_code == 401
        assert (await admin.submit("/console/users", f"/console/users/{TEACHER}/enable", {})).status_code == 303
        assert (await teacher.login(TEACHER, TEACHER_PASSWORD)).status_code == 303


async def test_login_is_throttled_per_user_and_per_address(stack: ConsoleStack) -> None:
    """Guards against password guessing: 5 failures per account and 20 per address in 15 minutes, and then
    even the right password is refused with 429."""
    browser = Browser(stack.base_url)
    try:
        for _ in range(accounts.MAX_FAILURES_PER_USER):
            assert (await browser.login(TEACHER, "wrong-password-x")).status_code == 401
        blocked = await browser.login(TEACHER, TEACHER_PASSWORD)
        assert blocked.status_code == 429 and "Wait 15 minutes" in blocked.text
        assert "stella_console" not in browser.cookies
        # Another account from the same address still works until the address limit.
        assert (await browser.login(ADMIN, ADMIN_PASSWORD)).status_code == 303
        browser.cookies.pop("stella_console")
        for i in range(accounts.MAX_FAILURES_PER_ADDRESS - accounts.MAX_FAILURES_PER_USER):
            assert (await browser.login(f"guess{i}", "wrong-password-x")).status_code == 401
        assert (await browser.login(ADMIN, ADMIN_PASSWORD)).status_code == 429
        # The window slides: once the failures are older than 15 minutes, the right password works again.
        await stack.db.execute("UPDATE rate_events SET at = at - ? WHERE bucket LIKE ?",
                               (accounts.THROTTLE_WINDOW_S + 1, "login%"))
        await stack.db.execute("INSERT INTO rate_events (bucket, at) VALUES ('token:kiosk-a', 0)")
        assert (await browser.login(TEACHER, TEACHER_PASSWORD)).status_code == 303
        # The expired failures of every name are gone; other counters are not the console's to prune.
        left = await stack.db.fetchall("SELECT bucket FROM rate_events")
        assert left == [("token:kiosk-a",)]
    finally:
        await browser.aclose()


async def test_behind_a_local_proxy_each_client_address_counts_apart(db_spec: Path | str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards against one school-wide lockout behind a TLS proxy on the same machine: there every request comes
    from 127.0.0.1, so with trust_proxy naming it the address limit counts the proxy's X-Forwarded-For."""
    monkeypatch.setattr(accounts, "MAX_FAILURES_PER_ADDRESS", 3)
    async with console_stack(db_spec, trust_proxy="127.0.0.1") as stack:
        await login_behind_proxy(stack)


async def login_behind_proxy(stack: ConsoleStack) -> None:
    browser = Browser(stack.base_url)
    try:
        for i in range(3):
            page = await browser.get("/console/login")
            wrong = await browser.post("/console/login", {"csrf": csrf_of(page.text), "username": f"x{i}",
                                                          "password": "wrong-password-x"},
                                       headers={"X-Forwarded-For": "203.0.113.7, 10.0.0.1"})
            assert wrong.status_code == 401
        for forwarded, expected in (("10.0.0.1", 429), ("10.0.0.2", 303)):
            page = await browser.get("/console/login")
            answer = await browser.post("/console/login", {"csrf": csrf_of(page.text), "username": TEACHER,
                                                           "password": TEACHER_PASSWORD},
                                        headers={"X-Forwarded-For": forwarded})
            assert answer.status_code == expected, forwarded
    finally:
        await browser.aclose()


async def test_parallel_guesses_cannot_pass_the_limit(stack: ConsoleStack) -> None:
    """Guards against a check-then-count race: 12 guesses at once still meet only 5 password checks."""
    browser = Browser(stack.base_url)
    try:
        page = await browser.get("/console/login")
        token = csrf_of(page.text)
        results = await asyncio.gather(*(browser.post("/console/login", {"csrf": token, "username": TEACHER,
                                                                          "password": f"guess-{i:04d}"})
                                         for i in range(12)))
        codes = sorted(r.status_code for r in results)
        assert codes.count(401) == accounts.MAX_FAILURES_PER_USER and codes.count(429) == 12 - codes.count(401)
    finally:
        await browser.aclose()


async def test_two_companions_on_one_database_share_sessions_and_throttles(db_spec: Path | str) -> None:
    """Nothing is kept in process memory: behind a load balancer, two companions behave as one."""
    async with console_stack(db_spec) as one:
        from appliance.companion.server import CompanionConfig, CompanionServer

        other = CompanionServer(CompanionConfig(db_path=db_spec, openai_base_url="http://127.0.0.1:9"))
        await other.start()
        try:
            async with signed_in(one, ADMIN, ADMIN_PASSWORD) as admin:
                admin.http.base_url = httpx.URL(other.base_url)  # the next request lands on the other companion
                assert (await admin.get("/console/fleet")).status_code == 200
            guesser = Browser(one.base_url)
            for i in range(accounts.MAX_FAILURES_PER_USER):
                guesser.http.base_url = httpx.URL((one.base_url, other.base_url)[i % 2])
                assert (await guesser.login(TEACHER, "wrong-password-x")).status_code == 401
            assert (await guesser.login(TEACHER, TEACHER_PASSWORD)).status_code == 429
            await guesser.aclose()
        finally:
            await other.stop()


# -- CSRF and roles --------------------------------------------------------------------------------
async def test_a_form_without_its_csrf_token_is_refused(stack: ConsoleStack) -> None:
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        for data in ({"kiosk_id": "kiosk-x"}, {"kiosk_id": "kiosk-x", "csrf": "forged"},
                     {"kiosk_id": "kiosk-x", "csrf": ""}):
            refused = await admin.post("/console/kiosks", data)
            assert refused.status_code == 403 and "did not come from this console" in refused.text
        assert await stack.db.fetchone("SELECT 1 FROM kiosks WHERE kiosk_id = 'kiosk-x'") is None
        assert (await admin.post("/console/logout", {})).status_code == 403
    # Login too: a form posted without the login page's cookie is refused.
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        page = await http.get("/console/login")
        forged = await http.post("/console/login", data={"csrf": csrf_of(page.text), "username": ADMIN,
                                                         "password": ADMIN_PASSWORD})
        assert forged.status_code == 403 and "set-cookie" not in forged.headers


async def test_a_teacher_cannot_reach_admin_pages(stack: ConsoleStack) -> None:
    async with signed_in(stack, TEACHER, TEACHER_PASSWORD) as teacher:
        lessons = await teacher.get("/console/lessons")
        assert lessons.status_code == 200 and "/console/users" not in lessons.text
        assert "/console/groups" not in lessons.text and "/console/access-log" not in lessons.text
        csrf = csrf_of(lessons.text)
        # The fleet is read-only for a teacher: their groups' kiosks, no keys, budgets or model warnings.
        fleet = await teacher.get("/console/fleet")
        assert fleet.status_code == 200 and "/revoke" not in fleet.text and "/budget" not in fleet.text
        for path in ("/console/users", "/console/groups", "/console/access-log", "/console/access-log.csv"):
            assert (await teacher.get(path)).status_code == 403
        for path, data in (("/console/kiosks", {"kiosk_id": "sneaky"}), ("/console/kiosks/kiosk-a/revoke", {}),
                           ("/console/kiosks/kiosk-a/budget", {"daily_minutes": "1"}),
                           ("/console/users", {"username": "mallory", "role": "admin"}),
                           (f"/console/users/{ADMIN}/reset", {}), ("/console/groups", {"name": "Mine"}),
                           ("/console/groups/1/rename", {"name": "Mine"}), ("/console/groups/1/delete", {}),
                           ("/console/groups/1/members", {"username": TEACHER}),
                           (f"/console/groups/1/members/{TEACHER}/remove", {}),
                           ("/console/kiosk-group", {"kiosk_id": "kiosk-a", "group_id": ""})):
            refused = await teacher.post(path, {"csrf": csrf, **data})
            assert refused.status_code == 403 and "for admins" in refused.text, path
        assert await token_status(stack, KEYS["kiosk-a"]) == 200
        assert await stack.db.fetchone("SELECT 1 FROM users WHERE username = 'mallory'") is None
        assert await stack.db.fetchone("SELECT 1 FROM kiosk_groups WHERE name = 'Mine'") is None
        assert await stack.db.fetchone("SELECT group_id FROM kiosks WHERE kiosk_id = 'kiosk-a'") != (None,)


# -- kiosks ----------------------------------------------------------------------------------------
async def test_new_kiosk_key_is_shown_once_and_revoking_stops_it(stack: ConsoleStack) -> None:
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        added = await admin.submit("/console/fleet", "/console/kiosks", {"kiosk_id": "library-1"})
        assert added.status_code == 200 and added.headers["cache-control"] == "no-store"
        key = added.text.split('id="device-key" class="secret" readonly value="')[1].split('"')[0]
        assert len(key) >= 40 and await token_status(stack, key) == 200
        fleet = await admin.get("/console/fleet")
        assert "library-1" in fleet.text and key not in fleet.text
        assert key not in str(await stack.db.fetchall("SELECT * FROM kiosks"))
        again = await admin.submit("/console/fleet", "/console/kiosks", {"kiosk_id": "library-1"})
        assert again.status_code == 400 and "already active" in again.text and await token_status(stack, key) == 200
        revoked = await admin.submit("/console/fleet", "/console/kiosks/library-1/revoke", {})
        assert revoked.status_code == 303
        assert await token_status(stack, key) == 401
        assert "revoked" in (await admin.get("/console/fleet")).text
        missing = await admin.submit("/console/fleet", "/console/kiosks/no-such/revoke", {})
        assert missing.status_code == 404


async def test_budget_change_persists(stack: ConsoleStack) -> None:
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        for text, stored in (("30", 30.0), (" 12.5 ", 12.5), ("", None), ("0", 0.0)):
            saved = await admin.submit("/console/fleet", "/console/kiosks/kiosk-b/budget", {"daily_minutes": text})
            assert saved.status_code == 303
            row = await stack.db.fetchone("SELECT daily_minutes FROM kiosks WHERE kiosk_id = 'kiosk-b'")
            assert row == (stored,)
        await admin.submit("/console/fleet", "/console/kiosks/kiosk-b/budget", {"daily_minutes": "45"})
        assert 'id="budget-kiosk-b" name="daily_minutes" inputmode="decimal" size="5"\n               value="45"' \
            in (await admin.get("/console/fleet")).text
        for bad in ("abc", "-5", "nan", "100000"):
            refused = await admin.submit("/console/fleet", "/console/kiosks/kiosk-b/budget", {"daily_minutes": bad})
            assert refused.status_code == 400 and "daily budget" in refused.text
        assert await stack.db.fetchone("SELECT daily_minutes FROM kiosks WHERE kiosk_id = 'kiosk-b'") == (45.0,)


async def test_fleet_shows_heartbeats_never_and_model_warnings(stack: ConsoleStack) -> None:
    await heartbeat(stack, "kiosk-a", version="9.9.9", state="connected", unsynced=3, disk_free_mb=512.0,
                    last_error="mic_missing: no capture device")
    await asyncio.wait_for(stack.server.models_checked.wait(), 10)  # the start-up check is over
    choice = stack.server.model_choice
    retiring = choice.current("realtime")
    soon = (date.today() + timedelta(days=20)).isoformat()

    async def lookup(model: str) -> dict[str, Any]:
        return {"id": model, **({"shutdown_date": soon} if model == retiring else {})}

    await choice.check(lookup)
    warnings = choice.warnings()
    assert len(warnings) == 1 and retiring in warnings[0]
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        page = (await admin.get("/console/fleet")).text
        row_a = page.split('id="kiosk-kiosk-a"')[1].split("</tr>")[0]
        for text in ("9.9.9", "connected", ">3<", "512 MB", "mic_missing: no capture device"):
            assert text in row_a
        assert ">never<" in page.split('id="kiosk-kiosk-b"')[1].split("</tr>")[0]
        for warning in warnings:
            assert warning.replace("'", "&#39;") in page


# -- lessons ---------------------------------------------------------------------------------------
async def test_lessons_filter_transcript_and_escaping(stack: ConsoleStack) -> None:
    a1 = lesson_record("kiosk-a", "2026-11-23", 4.0, 0.04)
    a2 = lesson_record("kiosk-a", "2026-11-24", 6.0, 0.06, words=("<script>alert(1)</script>", "Nice try."))
    b1 = lesson_record("kiosk-b", "2026-11-24", 2.0, 0.02)
    await sync_lessons(stack, a1, a2, b1)
    # The receiving side records each lesson's plan level; set it here as it would.
    await stack.db.execute("UPDATE sessions SET level = 'B1' WHERE session_id = ?", (b1["session_id"],))
    async with signed_in(stack, TEACHER, TEACHER_PASSWORD) as teacher:
        every = (await teacher.get("/console/lessons")).text
        assert all(r["session_id"] in every for r in (a1, a2, b1)) and "3 lessons" in every
        for params, expected in (({"kiosk": "kiosk-a"}, {a1["session_id"], a2["session_id"]}),
                                 ({"from": "2026-11-24"}, {a2["session_id"], b1["session_id"]}),
                                 ({"to": "2026-11-23"}, {a1["session_id"]}),
                                 ({"level": "b1"}, {b1["session_id"]})):
            page = (await teacher.get("/console/lessons", params=params)).text
            shown = {r["session_id"] for r in (a1, a2, b1) if r["session_id"] in page}
            assert shown == expected, params
        bad = await teacher.get("/console/lessons", params={"from": "24/11/2026"})
        assert bad.status_code == 400 and "YYYY-MM-DD" in bad.text
        one = await teacher.get(f"/console/lessons/{a2['session_id']}")
        assert one.status_code == 200 and "6.0 minutes" in one.text and "$0.06" in one.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in one.text and "<script>" not in one.text
        assert "Nice try." in one.text
        assert (await teacher.get("/console/lessons/no-such-lesson")).status_code == 404


async def test_csv_export_is_the_filtered_list(stack: ConsoleStack) -> None:
    a1 = lesson_record("kiosk-a", "2026-11-23", 4.0, 0.04, words=("=HYPERLINK(\"http://x\")", "Déjà vu, café!"))
    b1 = lesson_record("kiosk-b", "2026-11-24", 2.0, 0.02)
    await sync_lessons(stack, a1, b1)
    async with signed_in(stack, TEACHER, TEACHER_PASSWORD) as teacher:
        response = await teacher.get("/console/lessons.csv", params={"kiosk": "kiosk-a"})
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
        assert response.headers["content-disposition"] == 'attachment; filename="lessons-kiosk-a.csv"'
        rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
        assert [r["session_id"] for r in rows] == [a1["session_id"]]
        row = rows[0]
        assert row["kiosk_id"] == "kiosk-a" and row["day"] == "2026-11-23" and float(row["duration_s"]) == 240.0
        assert float(row["est_cost_usd"]) == 0.04 and row["learner_turns"] == "1" and row["tutor_turns"] == "1"
        # A learner's words never become a spreadsheet formula.
        assert row["transcript"] == "learner: =HYPERLINK(\"http://x\") | tutor: Déjà vu, café!"
        every_csv = (await teacher.get("/console/lessons.csv")).content.decode("utf-8-sig")
        every = list(csv.DictReader(io.StringIO(every_csv)))
        assert {r["session_id"] for r in every} == {a1["session_id"], b1["session_id"]}


async def test_csv_cells_that_look_like_formulas_are_defused(stack: ConsoleStack) -> None:
    """Guards against CSV injection: a stored value starting with '=' opens as text in a spreadsheet."""
    record = lesson_record("kiosk-a")
    await sync_lessons(stack, record)
    await stack.db.execute("UPDATE sessions SET level = ? WHERE session_id = ?", ("=1+1", record["session_id"]))
    async with signed_in(stack, TEACHER, TEACHER_PASSWORD) as teacher:
        text = (await teacher.get("/console/lessons.csv")).content.decode("utf-8-sig")
        assert next(iter(csv.DictReader(io.StringIO(text))))["level"] == "'=1+1"
    from appliance.companion.console.views import _cell

    assert _cell("=cmd") == "'=cmd" and _cell("+1") == "'+1" and _cell("fine") == "fine" and _cell(3) == 3


async def test_usage_chart_is_accessible_svg_with_a_table(stack: ConsoleStack) -> None:
    today = datetime.now(UTC).date()
    d1, d2 = (today - timedelta(days=40)).isoformat(), (today - timedelta(days=39)).isoformat()
    await sync_lessons(stack, lesson_record("kiosk-a", d1, 4.0, 0.04), lesson_record("kiosk-a", d1, 2.0, 0.01),
                       lesson_record("kiosk-b", d2, 9.0, 0.10), lesson_record("kiosk-b", today.isoformat(), 1.0, 0.01))
    async with signed_in(stack, TEACHER, TEACHER_PASSWORD) as teacher:
        page = (await teacher.get("/console/usage", params={"from": d1, "to": d2})).text
        assert page.count('<svg role="img"') == 2
        assert '<title id="chart1-title">Lesson minutes per day</title>' in page
        assert f"busiest day {d2} with 9.0 minutes" in page
        assert page.count("<rect x=") == 4  # 2 charts × (one kiosk on each of 2 days)
        assert f'<td>{d1}</td><td>kiosk-a</td><td class="num">2</td>\n    <td class="num">6.0</td>' in page
        assert f"{d2}, kiosk-b: 0.10 USD" in page
        # Without a filter: the last two weeks only.
        recent = (await teacher.get("/console/usage")).text
        assert today.isoformat() in recent and d1 not in recent and d2 not in recent
        empty = (await teacher.get("/console/usage", params={"kiosk": "kiosk-a", "from": today.isoformat()})).text
        assert "No lessons match the filter." in empty and "<rect x=" not in empty


async def test_security_headers_on_every_console_page(stack: ConsoleStack) -> None:
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        for path in ("/console/login", "/console/lessons", "/console/fleet", "/console/users", "/console/nope"):
            response = await admin.get(path)
            headers = response.headers
            assert "script-src" not in headers["content-security-policy"]
            assert "default-src 'none'" in headers["content-security-policy"]
            assert "frame-ancestors 'none'" in headers["content-security-policy"]
            assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"
            assert headers["cache-control"] == "no-store", path
        page = (await admin.get("/console/lessons")).text
        assert '<html lang="en">' in page and 'name="viewport"' in page and "<script" not in page
        assert (await admin.get("/console/console.css")).headers["content-type"].startswith("text/css")


async def test_admin_manages_teacher_accounts(stack: ConsoleStack) -> None:
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        added = await admin.submit("/console/users", "/console/users", {"username": "tina", "role": "teacher"})
        assert added.status_code == 200
        password = added.text.split('id="new-password" class="secret" readonly value="')[1].split('"')[0]
        async with signed_in(stack, "tina", password) as tina:
            assert (await tina.get("/console/users")).status_code == 403
            reset = await admin.submit("/console/users", "/console/users/tina/reset", {})
            new = reset.text.split('id="new-password" class="secret" readonly value="')[1].split('"')[0]
            assert new != password
            assert (await tina.get("/console/lessons")).status_code == 303  # signed out by the reset
            assert (await tina.login("tina", password)).status_code == 401
            assert (await tina.login("tina", new)).status_code == 303
        dup = await admin.submit("/console/users", "/console/users", {"username": "tina", "role": "teacher"})
        assert dup.status_code == 400 and "already an account" in dup.text
        bad = await admin.submit("/console/users", "/console/users", {"username": "no spaces", "role": "teacher"})
        assert bad.status_code == 400
        odd = await admin.submit("/console/users", "/console/users", {"username": "x", "role": "root"})
        assert odd.status_code == 400 and "role" in odd.text
        self_disable = await admin.submit("/console/users", f"/console/users/{ADMIN}/disable", {})
        assert self_disable.status_code == 400


# -- the add-user command --------------------------------------------------------------------------
def add_user(db: Path | str, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "companion", "add-user", *args, "--db", str(db)],
                          input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


async def test_add_user_command_reads_the_password_from_stdin(db_spec: Path | str) -> None:
    done = add_user(db_spec, "head", "--admin", stdin="a long enough secret\n")
    assert done.returncode == 0, done.stderr
    assert "a long enough secret" not in done.stdout + done.stderr
    short = add_user(db_spec, "shorty", stdin="short\n")
    assert short.returncode == 2 and "at least 10 characters" in short.stderr
    again = add_user(db_spec, "head", stdin="another long secret\n")
    assert again.returncode == 1 and "already an account" in again.stderr
    teacher = add_user(db_spec, "tess", stdin="teacher secret 123\n")
    assert teacher.returncode == 0, teacher.stderr
    storage = await open_storage(db_spec)
    try:
        users = {u.username: u.role for u in await accounts.list_users(storage.db)}
        assert users == {"head": "admin", "tess": "teacher"}
        assert (await accounts.login(storage.db, "head", "a long enough secret", "127.0.0.1")).token
    finally:
        await storage.close()
    argv = subprocess.run([sys.executable, "-m", "appliance.cli", "companion", "add-user", "x", "--password", "p"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert argv.returncode == 2  # there is no way to pass a password on the command line


# -- hostile form input ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def threaded_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], str]]:
    """One companion on its own loop thread for many generated requests: (base URL, admin cookie, csrf)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def run() -> None:
        async with console_stack(tmp_path_factory.mktemp("fuzz") / "c.db") as s:
            browser = Browser(s.base_url)
            await browser.login(ADMIN, ADMIN_PASSWORD)
            page = await browser.get("/console/fleet")
            holder.update(url=s.base_url, cookies=dict(browser.cookies), csrf=csrf_of(page.text))
            await browser.aclose()
            holder["stop"] = asyncio.Event()
            ready.set()
            await holder["stop"].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert ready.wait(60)
    yield holder["url"], holder["cookies"], holder["csrf"]
    loop.call_soon_threadsafe(holder["stop"].set)
    thread.join(30)
    loop.close()


form_text = st.text(max_size=80) | st.sampled_from(["", " ", "0", "-1", "1e309", "nan", "kiosk-a", "A1", "\x00",
                                                      "2026-02-30", "9999-12-31", "0001-01-01", "../..", "%00",
                                                      "<b>x</b>"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/console/login", "/console/kiosks", "/console/kiosks/kiosk-b/budget",
                             "/console/kiosks/kiosk-b/erase", "/console/users", "/console/lessons",
                             "/console/lessons.csv", "/console/usage"]),
       fields=st.dictionaries(st.sampled_from(["username", "password", "kiosk_id", "daily_minutes", "role", "kiosk",
                                               "from", "to", "level", "next", "csrf", "confirm"]), form_text,
                              max_size=5),
       with_csrf=st.booleans())
def test_form_and_filter_input_never_causes_a_server_error(threaded_console: tuple[str, dict[str, str], str],
                                                           path: str, fields: dict[str, str], with_csrf: bool) -> None:
    url, cookies, csrf = threaded_console
    headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in cookies.items())}
    with httpx.Client(base_url=url, timeout=30) as http:
        if path in ("/console/lessons", "/console/lessons.csv", "/console/usage"):
            response = http.get(path, params=fields, headers=headers)
        else:
            data = {**fields, "csrf": csrf} if with_csrf and path != "/console/login" else fields
            response = http.post(path, data=data, headers=headers)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("text/html") and "role=\"alert\"" in response.text


def test_without_the_console_libraries_the_kiosk_api_still_starts() -> None:
    """A kiosk running the demo has no jinja2: the companion must serve its API and say the console is off."""
    code = ("import sys, logging; sys.modules['jinja2'] = None; logging.basicConfig(level=logging.WARNING)\n"
            "from appliance.companion.server import CompanionConfig, CompanionServer\n"
            "server = CompanionServer(CompanionConfig(db_path=':memory:'))\n"
            "paths = {r.canonical for r in server.app.router.resources()}\n"
            "assert '/api/realtime-token' in paths and not any(p.startswith('/console') for p in paths), paths\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "web console off" in done.stderr and "stella-kiosk[companion]" in done.stderr


async def test_nul_and_odd_characters_are_refused_cleanly(stack: ConsoleStack) -> None:
    """Guards against a 500 on PostgreSQL, which refuses NUL characters in text: malformed names in URLs and
    forms are turned away before any query."""
    browser = Browser(stack.base_url)
    try:
        page = await browser.get("/console/login")
        answer = await browser.post("/console/login", {"csrf": csrf_of(page.text), "username": "a\x00b",
                                                       "password": "whatever-password"})
        assert answer.status_code == 401
    finally:
        await browser.aclose()
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        for path in ("/console/lessons/ab%00cdefgh", "/console/lessons/%3Cb%3E"):
            assert (await admin.get(path)).status_code == 404, path
        for path in ("/console/kiosks/kiosk%00a/revoke", "/console/kiosks/kiosk%00a/budget",
                     "/console/users/t%00m/disable", "/console/users/t%00m/reset"):
            answer = await admin.submit("/console/fleet", path, {"daily_minutes": "5"})
            assert answer.status_code == 404 and "role=\"alert\"" in answer.text, path
        for data in ({"kiosk_id": "a\x00b"}, {"username": "a\x00b"}):
            action = "/console/kiosks" if "kiosk_id" in data else "/console/users"
            assert (await admin.submit("/console/fleet", action, data)).status_code == 400
        assert (await admin.get("/console/lessons", params={"kiosk": "a\x00b"})).status_code == 400
