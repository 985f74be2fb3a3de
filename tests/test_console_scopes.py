"""Teachers see only their groups' kiosks, and every read of children's words is in the access log.

Over real HTTP on a real companion, on SQLite and on PostgreSQL. Group B's kiosk name and transcripts carry
marker strings; no response a group-A teacher can get may contain them, and every number a group-A teacher
sees must be group A's alone.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from aiohttp.web_urldispatcher import PrefixedSubAppResource
from hypothesis import given
from hypothesis import strategies as st

from appliance.companion.console import accounts, groups
from appliance.companion.console.views import ACCESS_MARK
from appliance.companion.db import open_database
from appliance.companion.migrations import steps
from appliance.companion.storage import open_storage
from tests.console_helpers import (
    ADMIN,
    ADMIN_PASSWORD,
    Browser,
    ConsoleStack,
    console_stack,
    csrf_of,
    lesson_record,
    signed_in,
    sync_lessons,
)
from tests.scope_helpers import A_COSTS, A_MINUTES, ALICE, ALICE_PASSWORD, MARK, SECRET_KIOSK, leaks, two_groups

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["sqlite", "postgres"])
def db_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    return tmp_path / "c.db" if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")


@pytest.fixture
async def stack(db_spec: Path | str):
    async with console_stack(db_spec) as s:
        yield s


async def test_a_teacher_without_a_group_reads_nothing_and_every_read_is_logged(stack: ConsoleStack) -> None:
    """Before groups, any teacher read and exported every kiosk's transcripts and nothing recorded it."""
    secret = lesson_record("kiosk-b", words=(f"My name is {MARK} and I live on Elm Street.", "Nice to meet you!"))
    await sync_lessons(stack, secret)
    await accounts.add_user(stack.db, "nina", "nina-no-group-pass-1", "teacher")
    async with signed_in(stack, "nina", "nina-no-group-pass-1") as nina:
        for path in ("/console/lessons", "/console/lessons.csv", "/console/usage",
                     f"/console/lessons/{secret['session_id']}"):
            response = await nina.get(path)
            assert MARK not in response.text and "kiosk-b" not in response.text, path
        assert (await nina.get(f"/console/lessons/{secret['session_id']}")).status_code == 404
        page = (await nina.get("/console/lessons")).text
        assert "ask your admin to assign you a group" in page.lower()
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        assert MARK in (await admin.get(f"/console/lessons/{secret['session_id']}")).text
        assert MARK in (await admin.get("/console/lessons.csv")).text
    rows = await stack.db.fetchall("SELECT username, action, subject, lessons FROM access_log ORDER BY id")
    # Every export is logged, an empty one too; a lesson page refused as "not found" read nothing.
    assert [(r[0], r[1], r[3]) for r in rows] == [("nina", "export-lessons", 0), (ADMIN, "view-lesson", 1),
                                                  (ADMIN, "export-lessons", 1)]
    assert secret["session_id"] in rows[1][2] and "kiosk-b" in rows[1][2]


# -- group A cannot see, export or infer anything of group B --------------------------------------
def teacher_routes(stack: ConsoleStack) -> set[tuple[str, str]]:
    """(method, path) of every console route a teacher may use, read from the router itself."""
    console = next(r for r in stack.server.app.router.resources() if isinstance(r, PrefixedSubAppResource))
    found = set()
    for route in console._app.router.routes():  # the console's own sub-application
        if getattr(route.handler, ACCESS_MARK, "admin") in ("public", "teacher") and route.method != "HEAD":
            found.add((route.method, route.resource.canonical if route.resource else ""))
    return found


async def test_a_teacher_of_group_a_sees_exports_and_infers_nothing_of_group_b(stack: ConsoleStack) -> None:
    setup = await two_groups(stack)
    a_ids = {r["session_id"] for r in setup.a_lessons}
    b_id = setup.b_lessons[0]["session_id"]
    # Every route a teacher can reach is exercised below: a new one fails here until it is added.
    assert teacher_routes(stack) == {
        ("GET", "/console/"), ("GET", "/console/console.css"), ("GET", "/console/login"), ("POST", "/console/login"),
        ("POST", "/console/logout"), ("GET", "/console/lessons"), ("GET", "/console/lessons.csv"),
        ("GET", "/console/lessons/{session_id}"), ("GET", "/console/usage"), ("GET", "/console/fleet")}
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:  # the markers are there to be found
        for path in ("/console/lessons.csv", "/console/fleet", "/console/usage?from=2026-11-01"):
            assert MARK.lower() in (await admin.get(path)).text.lower(), path
    filters: list[dict[str, str]] = [{}, {"kiosk": SECRET_KIOSK}, {"kiosk": "kiosk-b"}, {"from": "2026-11-22"},
                                     {"to": "2026-11-25"}, {"level": "A2"}, {"kiosk": "kiosk-a", "from": "2026-11-20"}]
    browser = Browser(stack.base_url)
    try:
        for path in ("/console/", "/console/console.css", "/console/login"):
            assert not leaks((await browser.get(path)).text), path
        login = await browser.login(ALICE, ALICE_PASSWORD)
        assert login.status_code == 303 and not leaks(login.text)
        for params in filters:
            for path in ("/console/lessons", "/console/lessons.csv", "/console/usage", "/console/fleet",
                         "/console/"):
                response = await browser.get(path, params=params)
                assert response.status_code in (200, 303) and not leaks(response.text.replace(
                    params.get("kiosk", "-"), "KIOSK")), (path, params)
        # Counts and totals are group A's alone.
        page = (await browser.get("/console/lessons")).text
        assert "2 lessons" in page and f"{sum(A_MINUTES):.1f} minutes" in page
        assert f"estimated cost ${sum(A_COSTS):.2f}" in page and "Oak class" in page
        rows = list(csv.DictReader(io.StringIO((await browser.get("/console/lessons.csv")).text.lstrip("\ufeff"))))
        assert {r["session_id"] for r in rows} == a_ids
        usage = (await browser.get("/console/usage", params={"from": "2026-11-01", "to": "2026-11-30"})).text
        assert f"total {sum(A_MINUTES):.1f} minutes" in usage and ", 1 kiosks;" in usage
        assert usage.count("<rect x=") == 4  # 2 charts × 2 days × kiosk-a only
        fleet = (await browser.get("/console/fleet")).text
        assert 'id="kiosk-kiosk-a"' in fleet and fleet.count('<tr id="kiosk-') == 1
        # A filter naming another group's kiosk reads exactly like one naming no kiosk at all.
        for path in ("/console/lessons", "/console/lessons.csv", "/console/usage"):
            theirs = await browser.get(path, params={"kiosk": SECRET_KIOSK})
            nobodys = await browser.get(path, params={"kiosk": "kiosk-nobody"})
            assert theirs.text.replace(SECRET_KIOSK, "K") == nobodys.text.replace("kiosk-nobody", "K"), path
        # A lesson of group B is "not found", word for word like a lesson that never existed.
        theirs = await browser.get(f"/console/lessons/{b_id}")
        missing = await browser.get(f"/console/lessons/{uuid.uuid4()}")
        assert theirs.status_code == missing.status_code == 404 and theirs.text == missing.text
        for lesson_id in a_ids:
            assert (await browser.get(f"/console/lessons/{lesson_id}")).status_code == 200
        out = await browser.post("/console/logout", {"csrf": csrf_of(page)})
        assert out.status_code == 303 and not leaks(out.text)
    finally:
        await browser.aclose()
    # Every transcript view and every export is in the access log, and nothing of B was read.
    logged = await stack.db.fetchall("SELECT action, subject, lessons FROM access_log WHERE username = ? ORDER BY id",
                                     (ALICE,))
    views = [row for row in logged if row[0] == "view-lesson"]
    exports = [row for row in logged if row[0] == "export-lessons"]
    assert sorted(v[1].split()[1] for v in views) == sorted(a_ids) and all(v[2] == 1 for v in views)
    assert len(exports) == len(filters) + 3  # each filter, the full export, and the two compared above
    assert all(e[2] == 0 for e in exports if "level=" in e[1] or leaks(e[1]))
    assert [e[2] for e in exports if e[1] == "lessons.csv: all lessons"] == [2, 2]
    assert not any(leaks(v[1]) for v in views)


# -- teachers from before groups, and the command line ----------------------------------------------
async def schema_before_groups(spec: Path | str) -> None:
    """A database as the companion left it before groups (schema version 5), with one teacher."""
    db = await open_database(spec)
    try:
        async with db.transaction() as q:
            await q.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                            "applied_at DOUBLE PRECISION NOT NULL)")
            for step in steps():
                if step.VERSION <= 5:
                    await step.apply(q)
                    await q.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                                    (step.VERSION, step.NAME, 0.0))
        await accounts.add_user(db, "veteran", "veteran-teacher-pass-5", "teacher")
    finally:
        await db.close()


async def test_a_teacher_from_before_groups_sees_nothing_until_an_admin_assigns_a_group(
        db_spec: Path | str) -> None:
    await schema_before_groups(db_spec)
    async with console_stack(db_spec) as stack:
        lesson = lesson_record("kiosk-a", words=("Old friend here.", "Welcome back!"))
        await sync_lessons(stack, lesson)
        async with signed_in(stack, "veteran", "veteran-teacher-pass-5") as veteran:
            for path in ("/console/lessons", "/console/usage", "/console/fleet"):
                page = (await veteran.get(path)).text
                assert "You are not in any group yet" in page and "Ask your admin to assign you a group" in page
                assert "kiosk-a" not in page and lesson["session_id"] not in page
            async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
                users = (await admin.get("/console/users")).text
                assert "none: sees no lessons" in users
                school = (await stack.db.fetchone("SELECT group_id FROM kiosk_groups"))[0]
                done = await admin.submit("/console/groups", f"/console/groups/{school}/members",
                                          {"username": "veteran"})
                assert done.status_code == 303
            page = (await veteran.get("/console/lessons")).text
            assert lesson["session_id"] in page and "You are not in any group yet" not in page
            assert "You see the kiosks of your group: Elm School." in page


def companion_cli(spec: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "companion", *args, "--db", str(spec)],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=120, stdin=subprocess.DEVNULL)


async def test_admins_manage_groups_from_the_command_line_and_it_is_logged(db_spec: Path | str) -> None:
    storage = await open_storage(db_spec)
    try:
        await storage.add_kiosk("kiosk-a", "key-a-0123456789abcdef")
        await accounts.add_user(storage.db, "tess", "tess-teacher-pass-6", "teacher")
    finally:
        await storage.close()
    ok = [("group", "add", "Oak class"), ("group", "kiosk", "kiosk-a", "Oak class"),
          ("group", "teacher", "Oak class", "tess"), ("group", "rename", "Oak class", "Oak 3A")]
    for args in ok:
        done = companion_cli(db_spec, *args)
        assert done.returncode == 0, (args, done.stderr)
    listed = companion_cli(db_spec, "group", "list")
    assert listed.stdout == "Oak 3A\tkiosks: kiosk-a\tteachers: tess\n"
    for args, expected in ((("group", "add", "Oak 3A"), "already a group named Oak 3A"),
                           (("group", "kiosk", "kiosk-zz", "Oak 3A"), "no kiosk named kiosk-zz"),
                           (("group", "teacher", "Nowhere", "tess"), "no group named 'Nowhere'"),
                           (("group", "teacher", "Oak 3A", "nobody"), "no account named nobody")):
        refused = companion_cli(db_spec, *args)
        assert refused.returncode == 1 and expected in refused.stderr and "Traceback" not in refused.stderr
    for args in (("group", "teacher", "Oak 3A", "tess", "--remove"), ("group", "kiosk", "kiosk-a", "-"),
                 ("group", "delete", "Oak 3A")):
        assert companion_cli(db_spec, *args).returncode == 0, args
    assert companion_cli(db_spec, "group", "list").stdout == ""
    storage = await open_storage(db_spec)
    try:
        logged = await storage.db.fetchall("SELECT username, action FROM access_log ORDER BY id")
    finally:
        await storage.close()
    assert [a for _, a in logged] == ["add-group", "assign-kiosk", "add-member", "rename-group", "remove-member",
                                      "assign-kiosk", "delete-group"]
    assert all(u.startswith("cli:") for u, _ in logged)


HOSTILE = ["", " ", "\x00", "a\x00b", "x" * 300, "<b>x</b>", "'; DROP TABLE kiosks; --", "-1", "0", "1e309",
           "99999999999999999999", "Elm School", "kiosk-a", "tom", "../..", "%00", "\u202eevil", "\ufeff"]


async def test_hostile_group_and_log_input_is_refused_cleanly(stack: ConsoleStack) -> None:
    """Guards against a 500 on either engine (PostgreSQL refuses NUL characters; ids overflow BIGINT): every
    group form and log filter answers a 4xx page or does what it says, and the school's group survives."""
    school = (await stack.db.fetchone("SELECT group_id FROM kiosk_groups"))[0]
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        page = await admin.get("/console/groups")
        csrf = csrf_of(page.text)
        for value in HOSTILE:
            for action, data in (("/console/groups", {"name": value}),
                                 (f"/console/groups/{school}/members", {"username": value}),
                                 ("/console/kiosk-group", {"kiosk_id": value, "group_id": str(school)}),
                                 ("/console/kiosk-group", {"kiosk_id": "kiosk-a", "group_id": value})):
                answer = await admin.post(action, {"csrf": csrf, **data})
                assert answer.status_code in (303, 400), (action, value, answer.text[-300:])
            for path in (f"/console/groups/{value}/delete", f"/console/groups/{school}/members/{value}/remove"):
                answer = await admin.post(path.replace("\x00", "%00"), {"csrf": csrf})
                assert answer.status_code in (303, 400, 403, 404), (path, value)  # 403: no such form
            for field in ("user", "action", "from", "to"):
                for path in ("/console/access-log", "/console/access-log.csv"):
                    answer = await admin.get(path, params={field: value})
                    assert answer.status_code in (200, 400), (path, field, value)
    names = {row[0] for row in await stack.db.fetchall("SELECT name FROM kiosk_groups")}
    assert "Elm School" in names and not any("\x00" in n or len(n) > 80 for n in names)


@given(st.text(max_size=120))
def test_a_group_name_is_kept_exactly_or_refused_with_the_rule(text: str) -> None:
    try:
        name = groups.check_name(text)
    except groups.GroupError as exc:
        assert "1-80 characters" in str(exc)
        assert not 1 <= len(text.strip()) <= 80 or any(ord(c) < 32 or ord(c) == 127 for c in text.strip())
        return
    assert name == text.strip() and 1 <= len(name) <= 80 and not any(ord(c) < 32 or ord(c) == 127 for c in name)
