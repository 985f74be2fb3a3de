"""The access log: written for every transcript view, export and admin change, read and exported by admins,
append-only in the database itself, and purged only by the retention job. On SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.companion import access_log
from appliance.companion.access_log import LogFilter, LogFilterError, purge_access_log, record_access
from appliance.companion.db import DatabaseError
from appliance.companion.storage import open_storage
from tests.console_helpers import (
    ADMIN,
    ADMIN_PASSWORD,
    TEACHER,
    TEACHER_PASSWORD,
    ConsoleStack,
    console_stack,
    lesson_record,
    signed_in,
    sync_lessons,
)

ROOT = Path(__file__).resolve().parent.parent
DAY_S = 86400
try:  # PostgreSQL's refusal arrives as psycopg's error where the companion does not wrap it
    import psycopg

    REFUSED: tuple[type[Exception], ...] = (DatabaseError, psycopg.Error)
except ImportError:
    REFUSED = (DatabaseError,)


@pytest.fixture(params=["sqlite", "postgres"])
def db_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    return tmp_path / "c.db" if request.param == "sqlite" else request.getfixturevalue("postgres_dsn")


@pytest.fixture
async def stack(db_spec: Path | str):
    async with console_stack(db_spec) as s:
        yield s


async def rows(stack: ConsoleStack) -> list[tuple[str, str, str, int]]:
    return [tuple(r) for r in await stack.db.fetchall(
        "SELECT username, action, subject, lessons FROM access_log ORDER BY id")]


async def test_every_admin_change_in_the_console_is_logged(stack: ConsoleStack) -> None:
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        assert (await admin.submit("/console/fleet", "/console/kiosks", {"kiosk_id": "kiosk-c"})).status_code == 200
        assert (await admin.submit("/console/fleet", "/console/kiosks/kiosk-c/budget",
                                   {"daily_minutes": "30"})).status_code == 303
        assert (await admin.submit("/console/fleet", "/console/kiosks/kiosk-c/revoke", {})).status_code == 303
        assert (await admin.submit("/console/users", "/console/users", {"username": "tina",
                                                                        "role": "teacher"})).status_code == 200
        for action in ("disable", "enable", "reset"):
            assert (await admin.submit("/console/users", f"/console/users/tina/{action}", {})).status_code in (200, 303)
        made = await admin.submit("/console/groups", "/console/groups", {"name": "Maple class"})
        assert made.status_code == 303 and made.headers["location"] == "/console/groups?done=group-added"
        group_id = (await stack.db.fetchone("SELECT group_id FROM kiosk_groups WHERE name = 'Maple class'"))[0]
        page = await admin.get("/console/groups?done=group-added")
        assert "Group created." in page.text and "Maple class" in page.text
        steps = [(f"/console/groups/{group_id}/rename", {"name": "Maple 4B"}),
                 ("/console/kiosk-group", {"kiosk_id": "kiosk-c", "group_id": str(group_id)}),
                 (f"/console/groups/{group_id}/members", {"username": "tina"}),
                 (f"/console/groups/{group_id}/members/tina/remove", {}),
                 ("/console/kiosk-group", {"kiosk_id": "kiosk-c", "group_id": ""}),
                 (f"/console/groups/{group_id}/delete", {})]
        for action, data in steps:
            assert (await admin.submit("/console/groups", action, data)).status_code == 303, action
    logged = [(r[0], r[1], r[2]) for r in await rows(stack)]
    assert [a for _, a, _ in logged] == [
        "add-kiosk", "set-budget", "revoke-kiosk", "add-user", "disable-user", "enable-user", "reset-password",
        "add-group", "rename-group", "assign-kiosk", "add-member", "remove-member", "assign-kiosk", "delete-group"]
    assert {u for u, _, _ in logged} == {ADMIN}
    subjects = [s for _, _, s in logged]
    assert subjects[0] == "kiosk kiosk-c" and subjects[1] == "kiosk kiosk-c: 30 min" and subjects[3] == "teacher tina"
    assert subjects[8] == f"group {group_id} 'Maple class' -> 'Maple 4B'"
    assert subjects[9] == f"kiosk kiosk-c to group {group_id} 'Maple 4B'"
    assert subjects[12] == "kiosk kiosk-c to no group"
    assert await stack.db.fetchone("SELECT 1 FROM kiosk_groups WHERE group_id = ?", (group_id,)) is None


async def test_group_changes_are_checked_and_refusals_change_nothing(stack: ConsoleStack) -> None:
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        for data, expected in (({"name": "Elm School"}, "already a group named Elm School"),
                               ({"name": "  "}, "a group name is 1-80 characters"),
                               ({"name": "x" * 81}, "a group name is 1-80 characters"),
                               ({"name": "line\nbreak"}, "a group name is 1-80 characters")):
            refused = await admin.submit("/console/groups", "/console/groups", data)
            assert refused.status_code == 400 and expected in refused.text, data
        school = (await stack.db.fetchone("SELECT group_id FROM kiosk_groups"))[0]
        for action, data, expected in (
                ("/console/kiosk-group", {"kiosk_id": "kiosk-zz", "group_id": str(school)}, "no kiosk named kiosk-zz"),
                ("/console/kiosk-group", {"kiosk_id": "kiosk-a", "group_id": "999"}, "no such group"),
                ("/console/kiosk-group", {"kiosk_id": "kiosk-a", "group_id": "1; DROP"}, "group_id"),
                (f"/console/groups/{school}/members", {"username": "nobody"}, "no account named nobody")):
            refused = await admin.submit("/console/groups", action, data)
            assert refused.status_code == 400 and expected in refused.text, action
        for action in ("/console/groups/999/delete", "/console/groups/abc/delete", "/console/groups/999/rename"):
            assert (await admin.submit("/console/groups", action, {"name": "New"})).status_code in (400, 404)
    assert await rows(stack) == []
    assert (await stack.db.fetchall("SELECT name FROM kiosk_groups")) == [("Elm School",)]


async def test_admins_read_filter_and_export_the_log_and_the_export_is_logged(stack: ConsoleStack) -> None:
    lesson = lesson_record("kiosk-a")
    await sync_lessons(stack, lesson)
    old = time.time() - 40 * DAY_S
    await stack.db.execute("INSERT INTO access_log (at, username, action, subject, lessons) VALUES (?, ?, ?, ?, ?)",
                           (old, "former", "export-lessons", "lessons.csv: all lessons", 120))
    async with signed_in(stack, TEACHER, TEACHER_PASSWORD) as teacher:
        assert (await teacher.get(f"/console/lessons/{lesson['session_id']}")).status_code == 200
        assert (await teacher.get("/console/lessons.csv", params={"kiosk": "kiosk-a"})).status_code == 200
        assert (await teacher.get("/console/access-log")).status_code == 403
        assert (await teacher.get("/console/access-log.csv")).status_code == 403
    old_day = datetime.fromtimestamp(old, UTC).date().isoformat()
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        page = (await admin.get("/console/access-log")).text
        assert "3 rows" in page and "removed only after 365 days" in page
        assert f"lesson {lesson['session_id']} on kiosk-a" in page and "lessons.csv: kiosk=kiosk-a" in page
        mine = (await admin.get("/console/access-log", params={"user": TEACHER})).text
        assert "2 rows" in mine and "former" not in mine.split("<tbody>")[1]
        views = (await admin.get("/console/access-log", params={"action": "view-lesson"})).text
        assert "1 row." in views
        that_day = (await admin.get("/console/access-log", params={"from": old_day, "to": old_day})).text
        assert "1 row." in that_day and "<td>former</td>" in that_day
        assert "0 rows" in (await admin.get("/console/access-log", params={"to": "1999-12-31"})).text
        assert "3 rows" in (await admin.get("/console/access-log", params={"to": "9999-12-31"})).text
        for params, field in (({"from": "40 days ago"}, "from"), ({"user": "a b"}, "user"),
                              ({"action": "DROP TABLE"}, "action")):
            bad = await admin.get("/console/access-log", params=params)
            assert bad.status_code == 400 and f"Cannot filter by {field}" in bad.text
        export = await admin.get("/console/access-log.csv", params={"user": TEACHER})
        assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
        assert export.headers["content-disposition"] == f'attachment; filename="access-log-{TEACHER}.csv"'
        exported = list(csv.DictReader(io.StringIO(export.content.decode("utf-8-sig"))))
        assert [(r["user"], r["action"], r["lessons"]) for r in exported] == [
            (TEACHER, "export-lessons", "1"), (TEACHER, "view-lesson", "1")]
        assert exported[0]["at_utc"].endswith("+00:00")
    logged = await rows(stack)
    assert logged[-1] == (ADMIN, "export-access-log", f"access-log.csv: user={TEACHER} (2 rows)", 0)


async def test_the_log_is_append_only_in_the_database_itself(stack: ConsoleStack) -> None:
    """Guards against a bug or a hand edit rewriting history: only the retention job may delete, and only
    rows past the retention period."""
    await record_access(stack.db, ADMIN, "view-lesson", "lesson x", 1)
    for sql in ("UPDATE access_log SET username = 'someone-else'", "DELETE FROM access_log",
                "DELETE FROM access_log WHERE at < 1e12"):
        with pytest.raises(REFUSED, match="append-only"):
            await stack.db.execute(sql)
    if stack.db.engine == "postgresql":
        with pytest.raises(REFUSED, match="append-only"):
            await stack.db.execute("TRUNCATE access_log")
    assert await rows(stack) == [(ADMIN, "view-lesson", "lesson x", 1)]


async def test_the_retention_job_purges_old_rows_only_and_says_so(stack: ConsoleStack) -> None:
    now = time.time()
    for age_days, who in ((400, "old"), (366, "older-than-a-year"), (300, "recent"), (0, "today")):
        await stack.db.execute("INSERT INTO access_log (at, username, action, subject, lessons) VALUES (?, ?, ?, ?, ?)",
                               (now - age_days * DAY_S, who, "view-lesson", "lesson x", 1))
    await stack.server.maintain()  # the companion's daily retention round, with the default 365 days
    left = [r[0] for r in await rows(stack)]
    assert left == ["recent", "today", access_log.RETENTION_ACTOR]
    assert (await rows(stack))[-1][1:] == ("purge-access-log", "2 row(s) older than 365 days", 0)
    # Nothing else may delete afterwards: the cutoff lived only inside the job's transaction.
    with pytest.raises(REFUSED, match="append-only"):
        await stack.db.execute("DELETE FROM access_log WHERE username = 'recent'")
    assert await purge_access_log(stack.db, 0) == 0  # 0 keeps everything
    assert await purge_access_log(stack.db, 100, now + 1000 * DAY_S) == 3


async def test_retention_of_the_log_follows_its_own_setting(db_spec: Path | str) -> None:
    async with console_stack(db_spec, access_log_days=30, transcript_days=0) as stack:
        await stack.db.execute("INSERT INTO access_log (at, username, action, subject, lessons) VALUES (?, ?, ?, ?, ?)",
                               (time.time() - 31 * DAY_S, "old", "view-lesson", "lesson x", 1))
        await stack.server.maintain()
        assert [r[0] for r in await rows(stack)] == [access_log.RETENTION_ACTOR]
        async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
            assert "removed only after 30 days" in (await admin.get("/console/access-log")).text


async def test_record_access_refuses_malformed_names(stack: ConsoleStack) -> None:
    for user, action in (("", "view-lesson"), ("a b", "view-lesson"), (ADMIN, "View"), (ADMIN, "x" * 41)):
        with pytest.raises(ValueError, match="access log"):
            await record_access(stack.db, user, action, "s")
    await record_access(stack.db, "cli:root", "erase-lesson", "lesson \x00" + "y" * 1000, 1)
    (subject,) = await stack.db.fetchone("SELECT subject FROM access_log")
    assert subject.startswith("lesson y") and len(subject) == access_log.MAX_SUBJECT


@given(st.dictionaries(st.sampled_from(["user", "action", "from", "to"]), st.text(max_size=30)))
def test_log_filter_accepts_good_values_and_names_the_field_of_a_bad_one(query: dict[str, str]) -> None:
    try:
        flt = LogFilter.parse(query)
    except LogFilterError as exc:
        assert str(exc).split(":")[0] in query
        return
    sql, args = flt.where()
    assert sql.count("?") == len(args) and all(isinstance(a, str | float) for a in args)


async def test_exports_and_admin_changes_at_the_command_line_are_logged(db_spec: Path | str) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "appliance.cli", "companion", *args, "--db", str(db_spec)],
                              capture_output=True, text=True, cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})

    for args in (("add-kiosk", "kiosk-x"), ("set-budget", "kiosk-x", "10"), ("export",),
                 ("export", "--kiosk", "kiosk-x"), ("revoke-kiosk", "kiosk-x")):
        assert cli(*args).returncode == 0, args
    storage = await open_storage(db_spec)
    try:
        logged = await storage.db.fetchall("SELECT username, action, subject, lessons FROM access_log ORDER BY id")
    finally:
        await storage.close()
    assert [(a, s, n) for _, a, s, n in logged] == [
        ("add-kiosk", "kiosk kiosk-x", 0), ("set-budget", "kiosk kiosk-x: 10 min", 0),
        ("export-lessons", "companion export: all lessons", 0),
        ("export-lessons", "companion export: kiosk=kiosk-x", 0),
        ("revoke-kiosk", "kiosk kiosk-x", 0)]
    assert all(u.startswith("cli:") for u, *_ in logged)
