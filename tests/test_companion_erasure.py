"""Erasing lessons (a parent's or a school's request) and reducing them by retention leave none of the
children's words in the database files: SQLite's file, WAL and shared-memory index, and PostgreSQL's heap and
TOAST files, each scanned byte by byte for words only that lesson held. Real companions over real HTTP, the
kiosk's real sync path, the real CLI in its own process; SQLite as a build without SECURE_DELETE behaves."""

from __future__ import annotations

import asyncio
import base64
import os
import pty
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.companion.storage import open_storage
from appliance.store.sessions import SessionStore
from appliance.uplink.client import CompanionClient
from appliance.uplink.sync import Syncer
from tests.console_helpers import (
    ADMIN,
    ADMIN_PASSWORD,
    KEYS,
    TEACHER,
    TEACHER_PASSWORD,
    ConsoleStack,
    console_stack,
    csrf_of,
    lesson_record,
    signed_in,
    sync_lessons,
)
from tests.erasure_helpers import database_bytes, marker, plain_sqlite_build, sqlite_bytes

ROOT = Path(__file__).resolve().parent.parent
DAY = 86400.0


@pytest.fixture(params=["sqlite", "postgres"])
def db_spec(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path | str:
    """SQLite as a build without SECURE_DELETE (the companion must not rely on the distribution's), or a fresh
    PostgreSQL database."""
    if request.param == "sqlite":
        plain_sqlite_build(monkeypatch)
        return tmp_path / "c.db"
    return str(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
async def stack(db_spec: Path | str) -> AsyncIterator[ConsoleStack]:
    async with console_stack(db_spec) as s:
        yield s


def long_words() -> str:
    """A transcript turn long enough for SQLite overflow pages and PostgreSQL's TOAST table, and not
    compressible (so a scan of the files would see it if it were there)."""
    return f"{marker()} " + base64.b64encode(os.urandom(6000)).decode()


async def count(stack: ConsoleStack, where: str, *args: Any) -> int:
    row = await stack.db.fetchone(f"SELECT COUNT(*) FROM sessions WHERE {where}", args)
    return int(row[0])


async def erasures_logged(stack: ConsoleStack) -> list[tuple[str, str, str, int]]:
    """The access log's erase rows: who, which action, what, how many lessons."""
    rows = await stack.db.fetchall("SELECT username, action, subject, lessons FROM access_log "
                                   "WHERE action IN ('erase-lesson', 'erase-kiosk-lessons') ORDER BY id")
    return [(r[0], r[1], r[2], int(r[3])) for r in rows]


# -- erasing one lesson from the console ------------------------------------------------------------
async def test_console_erases_one_lesson_and_its_words_leave_the_database_files(
        stack: ConsoleStack, db_spec: Path | str) -> None:
    gone, kept = marker(), marker()
    erased = lesson_record(words=(f"My best friend is {gone}.", "Tell me more about your friend!"))
    other = lesson_record(words=(f"I like {kept}.", "Lovely!"))
    # The erased lesson is stored last: on PostgreSQL its row then sits in the page's free space once
    # dead, where a plain VACUUM leaves it (it only moves the live rows).
    await sync_lessons(stack, other, erased)
    before = await database_bytes(db_spec)
    assert gone.encode() in before and kept.encode() in before  # the scan does see stored words
    sid = erased["session_id"]
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        assert f"/console/lessons/{sid}/erase" in (await admin.get(f"/console/lessons/{sid}")).text
        confirm = await admin.get(f"/console/lessons/{sid}/erase")
        assert confirm.status_code == 200 and "cannot be undone" in confirm.text
        assert await count(stack, "session_id = ?", sid) == 1  # asking is not erasing
        done = await admin.post(f"/console/lessons/{sid}/erase", {"csrf": csrf_of(confirm.text)})
        assert done.status_code == 200, done.text
        assert "Erased 1 lesson" in done.text and gone not in done.text
        assert (await admin.get(f"/console/lessons/{sid}")).status_code == 404
        assert (await admin.get(f"/console/lessons/{sid}/erase")).status_code == 404
    assert await count(stack, "session_id = ?", sid) == 0
    after = await database_bytes(db_spec)
    assert gone.encode() not in after
    assert kept.encode() in after  # only the erased lesson went
    assert await erasures_logged(stack) == [(ADMIN, "erase-lesson", f"lesson {sid}", 1)]


async def test_console_erases_every_lesson_of_a_kiosk_after_its_name_is_typed(
        stack: ConsoleStack, db_spec: Path | str) -> None:
    long_turn, short, theirs = long_words(), marker(), marker()
    await sync_lessons(stack, lesson_record("kiosk-b", words=(f"I am {theirs}.", "Hi!")))
    await sync_lessons(stack, lesson_record(words=(long_turn, "What a long story!")),
                       lesson_record(words=(f"Call me {short}.", "Hello!")))
    before = await database_bytes(db_spec)
    long_mark = long_turn.split()[0].encode()
    assert long_mark in before and short.encode() in before and theirs.encode() in before
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        assert "/console/kiosks/kiosk-a/erase" in (await admin.get("/console/fleet")).text
        confirm = await admin.get("/console/kiosks/kiosk-a/erase")
        assert confirm.status_code == 200 and "2 lessons" in confirm.text and "cannot be undone" in confirm.text
        wrong = await admin.post("/console/kiosks/kiosk-a/erase", {"csrf": csrf_of(confirm.text), "confirm": "kiosk-b"})
        assert wrong.status_code == 400 and "kiosk-a" in wrong.text and 'role="alert"' in wrong.text
        assert await count(stack, "kiosk_id = ?", "kiosk-a") == 2  # a typo erases nothing
        done = await admin.post("/console/kiosks/kiosk-a/erase", {"csrf": csrf_of(confirm.text), "confirm": "kiosk-a"})
        assert done.status_code == 200 and "Erased 2 lessons" in done.text, done.text
    assert await count(stack, "kiosk_id = ?", "kiosk-a") == 0
    assert await count(stack, "kiosk_id = ?", "kiosk-b") == 1
    after = await database_bytes(db_spec)
    assert long_mark not in after and short.encode() not in after
    assert theirs.encode() in after
    assert await erasures_logged(stack) == [(ADMIN, "erase-kiosk-lessons", "every lesson of kiosk kiosk-a", 2)]


async def test_only_an_admin_with_the_form_token_can_erase(stack: ConsoleStack) -> None:
    lesson = lesson_record()
    await sync_lessons(stack, lesson)
    path = f"/console/lessons/{lesson['session_id']}/erase"
    async with signed_in(stack, TEACHER, TEACHER_PASSWORD) as teacher:
        assert f"{path}" not in (await teacher.get(f"/console/lessons/{lesson['session_id']}")).text
        assert (await teacher.get(path)).status_code == 403
        page = await teacher.get("/console/lessons")
        assert (await teacher.post(path, {"csrf": csrf_of(page.text)})).status_code == 403
        assert (await teacher.get("/console/kiosks/kiosk-a/erase")).status_code == 403
    async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
        assert (await admin.post(path, {})).status_code == 403  # no CSRF token: refused
        assert (await admin.post(path, {"csrf": "forged"})).status_code == 403
        assert (await admin.get("/console/lessons/0b8f6c1e-3d4a-4f43-9a61-2b7f0f1a9c11/erase")).status_code == 404
        assert (await admin.get("/console/kiosks/no-such-kiosk/erase")).status_code == 404
    assert await count(stack, "session_id = ?", lesson["session_id"]) == 1


# -- a kiosk sending an erased lesson again ----------------------------------------------------------
async def test_an_erased_lesson_sent_again_by_its_kiosk_is_acknowledged_but_not_stored(
        stack: ConsoleStack, db_spec: Path | str, tmp_path: Path) -> None:
    """A kiosk restored from an image taken before its lesson was delivered (or one that crashed before
    recording the delivery) sends it again after the erasure: the companion must not keep it again, and
    must say it has it, or the kiosk would retry forever."""
    words = marker()
    lesson = lesson_record(words=(f"My address is {words}.", "Let's not share addresses."))
    store = SessionStore(tmp_path / "kiosk")
    store.save(lesson)
    store.close()
    shutil.copytree(tmp_path / "kiosk", tmp_path / "kiosk-image")
    client = CompanionClient(stack.base_url, KEYS["kiosk-a"], "kiosk-a")
    try:
        store = SessionStore(tmp_path / "kiosk")
        assert await Syncer(store, client).drain()
        assert store.is_synced(lesson["session_id"])
        store.close()
        async with signed_in(stack, ADMIN, ADMIN_PASSWORD) as admin:
            done = await admin.submit(f"/console/lessons/{lesson['session_id']}/erase",
                                      f"/console/lessons/{lesson['session_id']}/erase", {})
            assert done.status_code == 200, done.text
        restored = SessionStore(tmp_path / "kiosk-image")
        assert not restored.is_synced(lesson["session_id"])
        assert await Syncer(restored, client).drain()
        assert restored.is_synced(lesson["session_id"])  # acknowledged: the kiosk stops sending it
        restored.close()
        results = await client.send_batch([lesson])  # and answered the same way every time
        assert results == [{"session_id": lesson["session_id"], "stored": True, "duplicate": True}]
    finally:
        await client.aclose()
    assert await count(stack, "session_id = ?", lesson["session_id"]) == 0
    assert words.encode() not in await database_bytes(db_spec)
    fresh = lesson_record()  # the kiosk's new lessons are stored as ever
    await sync_lessons(stack, fresh)
    assert await count(stack, "session_id = ?", fresh["session_id"]) == 1


async def test_a_lesson_sent_again_while_it_is_being_erased_is_not_stored_again(db_spec: Path | str) -> None:
    """Guards against the race of an erase and the same lesson arriving again at that moment (two companions,
    or the CLI beside the service): whichever comes first, the lesson ends up erased, never stored again."""
    storage = await open_storage(db_spec)
    other = await open_storage(db_spec)  # a second companion on the same database
    try:
        for _ in range(15):
            lessons = [lesson_record() for _ in range(5)]
            assert await storage.store_sessions(lessons) == ["stored"] * 5  # type: ignore[arg-type]
            await asyncio.gather(storage.erase_kiosk("kiosk-a", "tester"),
                                 other.store_sessions(lessons))  # type: ignore[arg-type]
            row = await storage.db.fetchone("SELECT COUNT(*) FROM sessions")
            assert row == (0,)
    finally:
        await other.close()
        await storage.close()


# -- retention ---------------------------------------------------------------------------------------
class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_retention_leaves_none_of_the_old_words_in_the_database_files(db_spec: Path | str) -> None:
    """Guards against reduced transcripts surviving where nobody looks: in PostgreSQL heap pages (a dead
    row version stays until the table is rewritten) and, on a SQLite build without SECURE_DELETE, in the
    database file's free space and the WAL."""
    from tests.companion_helpers import SK, FakeOpenAI

    upstream = FakeOpenAI()
    url = await upstream.start()
    clock = FakeClock()
    server = CompanionServer(CompanionConfig(db_path=db_spec, openai_base_url=url, openai_api_key=SK,
                                             transcript_days=30), clock=clock)
    await server.start()
    try:
        await server.provision("kiosk-a", KEYS["kiosk-a"])
        # Enough lessons to fill heap pages: a reduced row's new version then lands on another page, and a
        # plain VACUUM would leave the old version's bytes behind in the page it empties.
        short = [marker() for _ in range(24)]
        long_turn = long_words()
        old = [lesson_record(words=(f"My sister is {m}. " + "We play football after school. " * 10, "Nice!"),
                             metrics={"duration_s": 60.0}) for m in short]
        old.append(lesson_record(words=(long_turn, "Wow."), metrics={"duration_s": 90.0}))
        stack = ConsoleStack(server, upstream)
        await sync_lessons(stack, *old)
        clock.now += 31 * DAY
        newer = marker()
        await sync_lessons(stack, lesson_record(words=(f"Today I met {newer}.", "Great!")))
        marks = [m.encode() for m in short] + [long_turn.split()[0].encode()]
        before = await database_bytes(db_spec)
        assert all(m in before for m in marks)
        await server.maintain()
        assert await count(stack, "reduced_at IS NOT NULL") == len(old) and await count(stack, "1 = 1") == len(old) + 1
        after = await database_bytes(db_spec)
        assert [m for m in marks if m in after] == []
        assert newer.encode() in after  # within the period: kept
        policy = (await server.storage.retention_policy())
        assert policy["transcript_days"] == 30
    finally:
        await server.stop()
        await upstream.runner.cleanup()


async def test_every_sqlite_connection_turns_secure_delete_on_whatever_the_build(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain_sqlite_build(monkeypatch)
    storage = await open_storage(tmp_path / "c.db")
    try:
        assert await storage.db.fetchone("PRAGMA secure_delete") == (1,)
    finally:
        await storage.close()


async def test_an_erase_the_files_could_not_follow_says_so_and_finishes_when_run_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process reading the SQLite database (a second companion, a backup) keeps the WAL's old page
    images in use: the erase must not claim the words are gone, and running it again must finish it."""
    from appliance.companion import db as db_module

    plain_sqlite_build(monkeypatch)
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "c.db"
    words = marker()
    lesson = lesson_record(words=(f"My name is {words}.", "Hello!"))
    storage = await open_storage(path)
    try:
        assert await storage.store_session(lesson)  # type: ignore[arg-type]
        reader = sqlite3.connect(path)
        try:
            reader.execute("BEGIN")
            assert reader.execute("SELECT COUNT(*) FROM sessions").fetchone() == (1,)  # holds its snapshot
            held = await storage.erase_lesson(lesson["session_id"], "tester")
            assert held.erased == 1 and held.left == 0 and not held.scrub.complete
            assert "NOT complete" in held.line()
            assert words.encode() in sqlite_bytes(path)  # and indeed the WAL still holds them
        finally:
            reader.close()
        again = await storage.erase_lesson(lesson["session_id"], "tester")
        assert again.erased == 0 and again.scrub.complete and again.line().endswith("; done")
        assert words.encode() not in sqlite_bytes(path)
    finally:
        await storage.close()


async def test_retention_the_files_could_not_follow_is_scrubbed_at_the_next_round(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.companion import db as db_module

    plain_sqlite_build(monkeypatch)
    monkeypatch.setattr(db_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "c.db"
    words = marker()
    clock = FakeClock()
    storage = await open_storage(path)
    try:
        storage.clock = clock
        storage.transcript_days = 30
        assert await storage.store_session(lesson_record(words=(f"I live at {words}.", "Ok.")))  # type: ignore[arg-type]
        clock.now += 31 * DAY
        reader = sqlite3.connect(path)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM sessions").fetchone()
            assert await storage.reduce_old_transcripts() == 1
            assert words.encode() in sqlite_bytes(path)
        finally:
            reader.close()
        assert await storage.reduce_old_transcripts() == 0  # nothing new to reduce, but the scrub is finished
        assert words.encode() not in sqlite_bytes(path)
    finally:
        await storage.close()


# -- the CLI -----------------------------------------------------------------------------------------
def companion_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "companion", *args], capture_output=True,
                          text=True, cwd=ROOT, input=stdin, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


async def test_cli_erases_a_lesson_or_a_kiosks_lessons_and_says_what_it_did(db_spec: Path | str) -> None:
    words = [marker() for _ in range(4)]
    lessons = [lesson_record(words=(f"I am {words[0]}.", "Hi!")), lesson_record(words=(f"I am {words[1]}.", "Hi")),
               lesson_record(words=(f"I am {words[2]}.", "Hi!")), lesson_record("kiosk-b", words=(words[3], "Hi"))]
    storage = await open_storage(db_spec)
    try:
        for lesson in lessons:
            assert await storage.store_session(lesson)  # type: ignore[arg-type]
    finally:
        await storage.close()
    before = await database_bytes(db_spec)
    assert all(w.encode() in before for w in words)
    one = companion_cli("erase", "--lesson", lessons[0]["session_id"], "--db", str(db_spec), "--yes")
    assert one.returncode == 0, one.stderr
    assert "erased 1 lesson" in one.stdout and "0 left" in one.stdout
    kiosk = companion_cli("erase", "--kiosk", "kiosk-a", "--db", str(db_spec), "--yes")
    assert kiosk.returncode == 0, kiosk.stderr
    assert "erased 2 lessons" in kiosk.stdout and "kiosk-a" in kiosk.stdout
    after = await database_bytes(db_spec)
    assert not any(w.encode() in after for w in words[:3]) and words[3].encode() in after
    again = companion_cli("erase", "--lesson", lessons[0]["session_id"], "--db", str(db_spec), "--yes")
    assert again.returncode == 0 and "erased 0 lessons" in again.stdout  # erased before: only scrubbed again
    never = companion_cli("erase", "--lesson", "0b8f6c1e-3d4a-4f43-9a61-2b7f0f1a9c11", "--db", str(db_spec), "--yes")
    assert never.returncode == 1 and "no lesson" in never.stderr and "Traceback" not in never.stderr


def test_cli_erase_asks_for_confirmation_and_refuses_bad_names(tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    unconfirmed = companion_cli("erase", "--kiosk", "kiosk-a", "--db", db)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    for bad in (("--lesson", "not-a-uuid"), ("--kiosk", "a b")):
        refused = companion_cli("erase", *bad, "--db", db, "--yes")
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    neither = companion_cli("erase", "--db", db, "--yes")
    assert neither.returncode == 2


# -- the policy in the console -----------------------------------------------------------------------
@pytest.mark.parametrize("user", [(TEACHER, TEACHER_PASSWORD), (ADMIN, ADMIN_PASSWORD)])
async def test_the_console_shows_the_retention_policy(db_spec: Path | str, user: tuple[str, str]) -> None:
    async with console_stack(db_spec, transcript_days=45) as stack, signed_in(stack, *user) as browser:
        page = await browser.get("/console/lessons")
        assert page.status_code == 200
        assert "transcripts are kept 45 days after the companion received them" in page.text
        assert "erase" in page.text.lower()  # and what erasing removes
        lesson = lesson_record()
        await sync_lessons(stack, lesson)
        assert "kept 45 days" in (await browser.get(f"/console/lessons/{lesson['session_id']}")).text


def companion_cli_at_a_terminal(*args: str, typed: str) -> subprocess.CompletedProcess[str]:
    """The CLI with a real terminal (a pseudo-terminal) as its input, as an admin at a console runs it."""
    main_fd, terminal_fd = pty.openpty()
    try:
        os.write(main_fd, typed.encode() + b"\n")  # held by the terminal until the CLI reads its answer
        return subprocess.run([sys.executable, "-m", "appliance.cli", "companion", *args], capture_output=True,
                              stdin=terminal_fd, text=True,
                              cwd=ROOT, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    finally:
        os.close(main_fd)
        os.close(terminal_fd)


async def test_cli_erase_at_a_terminal_erases_only_once_the_name_is_typed(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    lesson = lesson_record()
    storage = await open_storage(db)
    try:
        assert await storage.store_session(lesson)  # type: ignore[arg-type]
    finally:
        await storage.close()
    typo = companion_cli_at_a_terminal("erase", "--kiosk", "kiosk-a", "--db", str(db), typed="kiosk-b")
    assert typo.returncode == 1 and "nothing was erased" in typo.stderr, typo.stderr
    assert "Type kiosk-a to confirm" in typo.stdout
    confirmed = companion_cli_at_a_terminal("erase", "--kiosk", "kiosk-a", "--db", str(db), typed="kiosk-a")
    assert confirmed.returncode == 0 and "erased 1 lesson" in confirmed.stdout, confirmed.stderr
