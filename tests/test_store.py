"""The session store: per-lesson journals plus a small tinydb index.

It survives SIGKILL at any point of a write, never loses a saved lesson, opens whatever state its
files are in (moving damaged ones aside and salvaging what they hold), and writes any record.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.store.journal import journal_name
from appliance.store.sessions import ARCHIVE_BATCH, SessionStore, StoreError

WRITER = textwrap.dedent(
    """
    import json, os, random, sys
    from appliance.store.sessions import SessionStore
    directory, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    store = SessionStore(directory)
    store.recover_interrupted()  # as the kiosk does at start
    os.write(1, ("ready " + json.dumps(store.problems) + "\\n").encode())
    sizes = [10, 4_000, 300_000, 1_500_000]  # records grow and shrink from one write to the next
    saved: list[str] = []
    for n in range(10**9):
        sid = f"r{seed}-{n}"
        turns = []
        for _ in range(rng.randint(1, 3)):
            turns.append({"role": "learner", "text": "c" * rng.choice(sizes)})
            store.checkpoint({"session_id": sid, "turns": turns, "end_reason": "interrupted"})
            os.write(1, f"checkpoint {sid} {len(turns)}\\n".encode())  # returned: it must survive
        size = rng.choice(sizes)  # the final record is often much smaller than the journal it replaces
        turns.append({"role": "tutor", "text": "s" * size})
        store.save({"session_id": sid, "turns": turns, "end_reason": "button"})
        # Only after save() returned is the lesson reported as saved.
        os.write(1, f"saved {sid} {size}\\n".encode())
        saved.append(sid)
        if rng.random() < 0.5:  # deliveries move batches out of sessions.json: the index shrinks too
            store.mark_synced(rng.choice(saved))
    """
)


def record(sid: str, text: str = "hello", reason: str = "button") -> dict:
    return {"session_id": sid, "end_reason": reason, "turns": [{"role": "learner", "text": text}]}


def old_layout(docs: dict[str, Any]) -> str:
    """sessions.json as the previous store wrote it: full records inside the tinydb file."""
    return json.dumps({"sessions": docs, "meta": {"1": {"schema": 1}}})


def old_doc(sid: str, state: str, text: str = "hello", **extra: Any) -> dict:
    return {"session_id": sid, "record": record(sid, text), "state": state, "created_at": 1000.0 + len(sid),
            "saved_at": 1000.0, "synced_at": 1001.0 if state == "synced" else None, **extra}


def assert_well_formed(store: SessionStore) -> None:
    """Whatever was on disk, callers only ever see well-formed values."""
    for r in store.unsynced():
        assert isinstance(r, dict) and isinstance(r["session_id"], str)
    for r, reason in store.parked():
        assert isinstance(r, dict) and isinstance(r["session_id"], str) and isinstance(reason, str)
    for d in store.documents():
        assert set(d) >= {"session_id", "state", "created_at", "saved_at", "synced_at", "record", "parked_reason"}
        assert isinstance(d["record"], dict) and d["record"]["session_id"] == d["session_id"]
        assert d["state"] in ("in_progress", "pending", "synced", "parked")
    for r in store.records():
        assert isinstance(r, dict) and isinstance(r["session_id"], str)
    assert isinstance(store.count_unsynced(), int) and isinstance(len(store), int)


def test_save_get_sync_roundtrip(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(record("a"))
    store.save(record("b"))
    store.save(record("a", "changed"))  # same id: replaced, not duplicated
    assert len(store) == 2
    assert store.get("a")["turns"][0]["text"] == "changed"
    store.mark_synced("a")
    assert [r["session_id"] for r in store.unsynced()] == ["b"] and store.count_unsynced() == 1
    store.close()
    reopened = SessionStore(tmp_path)
    assert reopened.is_synced("a") and not reopened.is_synced("b")
    assert reopened.problems == []


def test_checkpoint_appends_to_the_lesson_journal_only(tmp_path: Path) -> None:
    """A checkpoint used to rewrite every stored lesson (0.6 s a turn at 5,000 lessons): now it appends
    one line to its lesson's journal and leaves the index files untouched."""
    store = SessionStore(tmp_path)
    for i in range(5):
        store.save(record(f"old-{i}"))
    index_before = {p: os.stat(p).st_ino for p in (store.path, store.archive_path)}
    for n in range(1, 4):
        store.checkpoint({"session_id": "live", "turns": [{"text": "t"}] * n})
    assert {p: os.stat(p).st_ino for p in index_before} == index_before
    lines = (tmp_path / "lessons" / "live.jsonl").read_bytes().splitlines()
    assert len(lines) == 3 and len(json.loads(lines[-1])["record"]["turns"]) == 3
    assert b"old-0" not in store.path.read_bytes() or b"turns" not in store.path.read_bytes()
    assert store.state_of("live") == "in_progress" and store.count_unsynced() == 5


def test_interrupted_lesson_is_closed_at_next_start(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.checkpoint({"session_id": "cut", "turns": [1, 2], "end_reason": "interrupted"})
    reopened = SessionStore(tmp_path)
    assert reopened.state_of("cut") == "in_progress"
    [recovered] = reopened.recover_interrupted()
    assert recovered == {"session_id": "cut", "turns": [1, 2], "end_reason": "interrupted"}
    assert reopened.state_of("cut") == "pending" and reopened.recover_interrupted() == []
    assert SessionStore(tmp_path).unsynced() == [recovered]


def test_torn_last_line_is_ignored_and_the_next_append_stays_whole(tmp_path: Path) -> None:
    """A power cut mid-append leaves half a line; it must neither hide the previous checkpoint nor
    swallow the next one (an append glued to the torn line would be lost)."""
    store = SessionStore(tmp_path)
    store.checkpoint({"session_id": "t", "turns": [1]})
    journal = tmp_path / "lessons" / "t.jsonl"
    with open(journal, "ab") as f:
        f.write(b'{"v":1,"kind":"checkpoint","record":{"session_id":"t","tu')
    reopened = SessionStore(tmp_path)
    assert reopened.get("t") == {"session_id": "t", "turns": [1]}
    reopened.checkpoint({"session_id": "t", "turns": [1, 2]})
    assert SessionStore(tmp_path).get("t") == {"session_id": "t", "turns": [1, 2]}
    assert reopened.problems == []


@pytest.mark.parametrize("content", [b"", b'{"v":1,"kind":"checkpoint","created_at":1.0,"record":{"session_id":"f'])
def test_journal_cut_off_in_its_first_line_is_no_damage(tmp_path: Path, content: bytes) -> None:
    """A power cut during a lesson's first checkpoint leaves an empty journal or one torn line. Nothing
    was saved (the checkpoint never returned), so the next start drops it quietly: the store used to
    move it aside and report damage at CRITICAL after an ordinary power cut."""
    store = SessionStore(tmp_path)
    store.save(record("kept"))
    (tmp_path / "lessons" / "first.jsonl").write_bytes(content)
    reopened = SessionStore(tmp_path)
    assert reopened.problems == []
    assert sorted(p.name for p in (tmp_path / "lessons").iterdir()) == ["kept.jsonl"]
    assert [d["session_id"] for d in reopened.documents()] == ["kept"]


def test_final_journal_without_index_entry_is_pending_with_its_own_end(tmp_path: Path) -> None:
    """A crash between writing the final record and its index entry: the lesson is finished, not
    interrupted, and still waits for the companion."""
    store = SessionStore(tmp_path)
    store.save(record("done", reason="voice_stop"))
    store.path.write_text(json.dumps({"sessions": {}, "meta": {"1": {"schema": 2}}}))  # the index write lost
    reopened = SessionStore(tmp_path)
    assert reopened.state_of("done") == "pending" and reopened.recover_interrupted() == []
    assert reopened.get("done")["end_reason"] == "voice_stop"


def test_previous_layout_is_migrated_without_loss(tmp_path: Path) -> None:
    docs = {"1": old_doc("p", "pending"), "2": old_doc("s", "synced"),
            "3": old_doc("k", "parked", parked_reason="invalid_record: x"), "4": old_doc("i", "in_progress")}
    (tmp_path / "sessions.json").write_text(old_layout(docs))
    store = SessionStore(tmp_path)
    assert store.problems == []
    assert {d["session_id"]: d["state"] for d in store.documents()} == {
        "p": "pending", "s": "synced", "k": "parked", "i": "in_progress"}
    assert all(store.get(sid) == record(sid) for sid in "pski")
    assert store.parked() == [(record("k"), "invalid_record: x")]
    assert b'"record"' not in store.path.read_bytes()  # the index no longer holds records
    again = SessionStore(tmp_path)
    assert [d["session_id"] for d in again.documents()] == [d["session_id"] for d in store.documents()]
    assert again.recover_interrupted() == [dict(record("i"), end_reason="interrupted")]


TWO_GOOD = {"1": old_doc("good-1", "pending"), "2": old_doc("good-2", "synced")}


@pytest.mark.parametrize(("content", "salvaged"), [
    (b"\x8f\x00garbage\xff" * 10, set()),
    # Truncated inside the second document: its record is complete, so both lessons survive.
    (old_layout(TWO_GOOD).encode()[:-60], {"good-1", "good-2"}),
    (old_layout(TWO_GOOD).encode()[:-200], {"good-1"}),
    (b"\0" * 4096, set()),
    (b"null", set()),
    (b'{"sessions": []}', set()),
    (old_layout({**TWO_GOOD, "3": 7}).encode(), {"good-1", "good-2"}),  # a document that is not a dict
    (old_layout({**TWO_GOOD, "3": {"session_id": "x", "state": "in_progress"}}).encode(), {"good-1", "good-2"}),
    (old_layout({**TWO_GOOD, "3": {"session_id": "y", "state": "pending", "record": 5}}).encode(),
     {"good-1", "good-2"}),
])
def test_damaged_index_is_moved_aside_and_salvaged(tmp_path: Path, content: bytes, salvaged: set[str],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Each of these stopped the kiosk before (StoreError at every start, or a KeyError/TypeError in
    the sync task): the store must open, keep what can be kept, and say what happened."""
    (tmp_path / "sessions.json").write_bytes(content)
    store = SessionStore(tmp_path)
    [problem] = store.problems
    assert problem.startswith("sessions.json was damaged") and f"{len(salvaged)} lesson(s) salvaged" in problem
    [aside] = tmp_path.glob("sessions.json.corrupt-*")
    assert aside.read_bytes() == content and aside.name in problem
    assert "CRITICAL" in caplog.text
    assert {d["session_id"] for d in store.documents()} == salvaged
    assert_well_formed(store)
    store.save(record("new"))
    assert SessionStore(tmp_path).problems == [] and SessionStore(tmp_path).state_of("new") == "pending"


def cut_inside(text: str, marker: str) -> bytes:
    """``text`` cut off in the middle of ``marker`` (its first occurrence): a write a power cut interrupted."""
    return text[:text.index(marker) + len(marker) // 2].encode()


# Each damage a kiosk met at start-up, once made its daemon exit at every start or its sync task die:
# the content of sessions.json, why the store must say it was damaged, and the lessons salvaged from it.
DAMAGED_INDEXES: dict[str, tuple[bytes, str, set[str]]] = {
    "sessions-is-a-list": (b'{"sessions": []}', "wrong shape (the sessions table is a list)", set()),
    "in-progress-without-record": (b'{"sessions": {"1": {"session_id": "a", "state": "in_progress"}}}',
                                   "1 document(s) of the wrong shape", set()),
    "document-not-a-dict": (b'{"sessions": {"1": 5}}', "1 document(s) of the wrong shape", set()),
    "record-is-a-number": (b'{"sessions": {"1": {"session_id": "a", "state": "pending", "record": 5}}}',
                           "1 document(s) of the wrong shape", set()),
    "garbage": (b"\x89PNG garbage \xff\xfe", "not UTF-8 text", set()),
    "truncated": (cut_inside(old_layout({"1": old_doc("whole", "pending"), "2": old_doc("cut-off", "pending")}),
                             '"cut-off"'), "not JSON (truncated or garbage)", {"whole"}),
    "nul-bytes": (b"\0" * 4096, "not JSON (truncated or garbage)", set()),
    "null": (b"null", "not a session database (the top level is NoneType)", set()),
}


@pytest.mark.parametrize(("content", "why", "salvaged"), DAMAGED_INDEXES.values(), ids=DAMAGED_INDEXES.keys())
def test_a_damaged_index_is_set_aside_and_every_journal_kept(tmp_path: Path, content: bytes, why: str,
                                                             salvaged: set[str], caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    """The kiosk's start-up with each damage (tests/test_unattended.py runs one of them through the real
    daemon): the store opens, moves the damaged file aside byte for byte, says why at CRITICAL and in
    ``problems`` (what `status` shows), keeps every lesson whose journal is on disk and what the file still
    held, and takes new lessons on a repaired index that the next start opens without a complaint."""
    seeded = SessionStore(tmp_path)
    seeded.save(record("kept-pending", "saved before"))
    seeded.checkpoint({"session_id": "kept-live", "turns": [{"text": "said before"}], "end_reason": "interrupted"})
    seeded.close()
    (tmp_path / "sessions.json").write_bytes(content)

    store = SessionStore(tmp_path)
    [aside] = tmp_path.glob("sessions.json.corrupt-*")
    assert aside.read_bytes() == content
    assert store.problems == [f"sessions.json was damaged ({why}); moved to {aside.name}; "
                              f"{len(salvaged)} lesson(s) salvaged from it"]
    assert [r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"] == [
        f"session store: {store.problems[0]}"]
    states = {d["session_id"]: d["state"] for d in store.documents()}
    assert states == {"kept-pending": "pending", "kept-live": "in_progress", **dict.fromkeys(salvaged, "pending")}
    assert store.get("kept-pending") == record("kept-pending", "saved before")
    for sid in salvaged:
        assert store.get(sid) == record(sid)
    assert_well_formed(store)
    [recovered] = store.recover_interrupted()  # as the kiosk does next
    assert recovered["session_id"] == "kept-live" and recovered["turns"] == [{"text": "said before"}]
    store.save(record("new"))
    store.close()

    again = SessionStore(tmp_path)
    assert again.problems == []
    assert {d["session_id"]: d["state"] for d in again.documents()} == {
        "kept-pending": "pending", "kept-live": "pending", "new": "pending", **dict.fromkeys(salvaged, "pending")}
    assert [aside] == list(tmp_path.glob("sessions.json.corrupt-*"))  # nothing more moved aside


def test_lost_index_is_rebuilt_from_the_journals(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    for sid in ("a", "b", "c"):
        store.save(record(sid))
    store.mark_synced("a")
    store.checkpoint({"session_id": "live", "turns": []})
    store.path.write_bytes(b"\xff" * 100)
    store.archive_path.unlink()
    rebuilt = SessionStore(tmp_path)
    # Delivered-or-not is lost with the index; sending again is safe (the companion keys by id).
    assert {d["session_id"]: d["state"] for d in rebuilt.documents()} == {
        "a": "pending", "b": "pending", "c": "pending", "live": "in_progress"}
    assert len(rebuilt.problems) == 1


@pytest.mark.parametrize("state", ["pending", "synced", "parked"])
def test_a_journal_under_another_name_is_matched_by_its_session_id(tmp_path: Path, state: str) -> None:
    """A lesson's journal under another name than its index entry expects (restored from a copy, renamed
    by hand). Before: it was moved aside as ``*.corrupt-*`` and its entry dropped ("lost its journal
    file; it cannot be sent"): 5 of 6 lessons kept. Now the session id inside the file decides."""
    store = SessionStore(tmp_path)
    for i in range(6):
        store.save(record(f"lesson-{i}", f"text {i}"))
    if state == "synced":
        store.mark_synced("lesson-3")
    elif state == "parked":
        store.park("lesson-3", "invalid_record: turns")
    store.close()
    lessons = tmp_path / "lessons"
    (lessons / "lesson-3.jsonl").rename(lessons / "lesson-3 (copy).jsonl")
    reopened = SessionStore(tmp_path)
    assert reopened.problems == []
    docs = {d["session_id"]: d for d in reopened.documents()}
    assert sorted(docs) == [f"lesson-{i}" for i in range(6)]
    assert docs["lesson-3"]["state"] == state
    assert docs["lesson-3"]["record"]["turns"][0]["text"] == "text 3"
    assert len(reopened.unsynced()) == (6 if state == "pending" else 5)
    assert not list(tmp_path.rglob("*.corrupt-*"))
    assert sorted(p.name for p in lessons.iterdir()) == [f"lesson-{i}.jsonl" for i in range(6)]
    assert_well_formed(SessionStore(tmp_path))


def test_journal_with_a_bad_line_keeps_its_good_lines(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.checkpoint({"session_id": "j", "turns": [1]})
    store.checkpoint({"session_id": "j", "turns": [1, 2]})
    with open(tmp_path / "lessons" / "j.jsonl", "ab") as f:
        f.write(b'{"kind": "checkpoint", "record": 5}\n\x00\x00\n')
    reopened = SessionStore(tmp_path)
    assert reopened.get("j") == {"session_id": "j", "turns": [1, 2]}
    assert any("damaged line" in p for p in reopened.problems)


def test_unreadable_journal_is_moved_aside(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(record("ok"))
    store.save(record("broken"))
    (tmp_path / "lessons" / "broken.jsonl").write_bytes(b"\x00\x01 not a lesson\n")
    (tmp_path / "lessons" / "stray.jsonl").write_bytes(b"[1, 2, 3]\n")
    reopened = SessionStore(tmp_path)
    assert any("stray.jsonl" in p for p in reopened.problems)
    assert [r["session_id"] for r in reopened.unsynced()] == ["ok"]  # the broken one is reported, not returned
    assert any("broken" in p for p in reopened.problems)
    assert reopened.count_unsynced() == 1 and len(list((tmp_path / "lessons").glob("*.corrupt-*"))) == 2


def test_lone_surrogates_are_written_as_replacement_characters(tmp_path: Path) -> None:
    """A JSON event can carry "\\ud800"; writing it raised UnicodeEncodeError (not StoreError)."""
    store = SessionStore(tmp_path)
    store.checkpoint({"session_id": "u", "turns": [{"text": "a\ud800b"}]})
    store.save({"session_id": "u", "turns": [{"text": "a\ud800b", "\udfff": 1}]})
    assert SessionStore(tmp_path).get("u") == {"session_id": "u", "turns": [{"text": "a\ufffdb", "\ufffd": 1}]}


def test_unwritable_records_raise_store_error(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    for bad in ({"session_id": "s", "x": {1, 2}}, {"turns": []}, {"session_id": 5}, ["session_id"],
                {"session_id": "s", ("tuple",): 1}):
        with pytest.raises(StoreError):
            store.save(bad)  # type: ignore[arg-type]
        with pytest.raises(StoreError):
            store.checkpoint(bad)  # type: ignore[arg-type]
    loop: dict = {"session_id": "loop"}
    loop["self"] = loop
    with pytest.raises(StoreError):
        store.save(loop)
    assert len(store) == 0


def test_session_ids_never_escape_the_store(tmp_path: Path) -> None:
    store = SessionStore(tmp_path / "state")
    for sid in ("../../escape", "/etc/passwd", ".hidden", "a" * 300, "x\ud800"):
        store.save(record(sid))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]
    assert all(p.parent == tmp_path / "state" / "lessons" for p in (tmp_path / "state").rglob("*.jsonl"))
    reopened = SessionStore(tmp_path / "state")
    assert reopened.get("../../escape") == record("../../escape") and reopened.get("x\ufffd") is not None
    assert len(reopened) == 5 and reopened.problems == []


def test_import_records_adds_only_new_finished_lessons(tmp_path: Path) -> None:
    source = SessionStore(tmp_path / "a")
    for sid in ("one", "two"):
        source.save(record(sid))
    exported = [json.loads(json.dumps(r)) for r in source.records()]
    target = SessionStore(tmp_path / "b")
    target.save(record("two", "already here"))
    assert target.import_records([*exported, {"no": "id"}, 5]) == 1
    assert target.get("one") == record("one") and target.get("two")["turns"][0]["text"] == "already here"
    assert target.state_of("one") == "pending" and target.import_records(exported) == 0
    assert SessionStore(tmp_path / "b").count_unsynced() == 2


def test_delivered_lessons_move_to_the_archive_in_batches(tmp_path: Path) -> None:
    """sessions.json (rewritten at every save) stays small; synced.json takes delivered lessons."""
    store = SessionStore(tmp_path)
    for i in range(ARCHIVE_BATCH + 3):
        store.save(record(f"l{i:03}"))
        store.mark_synced(f"l{i:03}")
    active = json.loads(store.path.read_text())["sessions"]
    archived = json.loads(store.archive_path.read_text())["sessions"]
    assert len(active) == 3 and len(archived) == ARCHIVE_BATCH
    store.park("l000", "invalid_record: late")
    reopened = SessionStore(tmp_path)
    assert reopened.state_of("l000") == "parked" and reopened.state_of("l001") == "synced"
    assert len(reopened) == ARCHIVE_BATCH + 3 and reopened.count_unsynced() == 0


def test_retention_deletes_journals_too(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = SessionStore(tmp_path, clock=lambda: now[0], synced=lambda: True)
    for i in range(4):
        store.save(record(f"r{i}"))
    store.mark_synced("r0")
    store.mark_synced("r1")
    now[0] += 40 * 86400
    assert store.apply_retention(keep_synced_days=30, max_lessons=100) == 2
    assert sorted(p.name for p in (tmp_path / "lessons").iterdir()) == ["r2.jsonl", "r3.jsonl"]
    assert [d["session_id"] for d in SessionStore(tmp_path).documents()] == ["r2", "r3"]


def test_read_only_directory_gives_store_error(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(record("kept"))
    if os.geteuid() == 0:
        # root ignores directory permissions: make the index a directory so its write fails.
        (tmp_path / "sessions.json").unlink()
        (tmp_path / "sessions.json").mkdir()
        with pytest.raises(StoreError, match=r"cannot (read|write)"):
            store.save(record("new"))
        reopened = SessionStore(tmp_path)  # the next start moves the directory aside and goes on
        assert reopened.get("kept") is not None
        assert [p for p in reopened.problems if "sessions.json was a directory" in p and "not-a-file" in p]
        assert len(list(tmp_path.glob("sessions.json.not-a-file-*"))) == 1
    else:
        tmp_path.chmod(0o500)
        (tmp_path / "lessons").chmod(0o500)
        try:
            with pytest.raises(StoreError, match="cannot write"):
                store.save(record("new"))
        finally:
            tmp_path.chmod(0o700)
            (tmp_path / "lessons").chmod(0o700)


# -- property-based: any file content, any record ---------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
INDEX_LIKE = st.fixed_dictionaries({"sessions": st.dictionaries(
    st.text(max_size=3), st.one_of(JSON, st.fixed_dictionaries(
        {"session_id": st.text(max_size=6) | st.integers(), "state": JSON,
         "created_at": JSON, "record": JSON})), max_size=5)}) | JSON
HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def seeded(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir()
    store = SessionStore(path)
    store.save(record("keep-pending"))
    store.save(record("keep-parked"))
    store.park("keep-parked", "invalid_record: x")
    store.checkpoint({"session_id": "keep-live", "turns": []})
    return path


def opens_and_keeps(path: Path, expect: set[str]) -> SessionStore:
    store = SessionStore(path)
    assert_well_formed(store)
    assert expect <= {d["session_id"] for d in store.documents()}
    for sid in expect:
        assert store.get(sid) is not None
    return store


@HYPO
@given(content=st.binary(max_size=300) | INDEX_LIKE.map(lambda v: json.dumps(v).encode()))
def test_any_index_content_opens_and_keeps_every_journal(tmp_path_factory: pytest.TempPathFactory,
                                                         content: bytes) -> None:
    path = seeded(tmp_path_factory.mktemp("idx"), "state")
    (path / "sessions.json").write_bytes(content)
    (path / "synced.json").write_bytes(content)
    store = opens_and_keeps(path, {"keep-pending", "keep-parked", "keep-live"})
    store.save(record("after"))
    assert SessionStore(path).get("after") == record("after")


@HYPO
@given(content=st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode() + b"\n"),
       name=st.sampled_from(["keep-pending.jsonl", "stray.jsonl", journal_name("../x")]))
def test_any_journal_content_opens_and_keeps_the_others(tmp_path_factory: pytest.TempPathFactory,
                                                        content: bytes, name: str) -> None:
    path = seeded(tmp_path_factory.mktemp("jnl"), "state")
    (path / "lessons" / name).write_bytes(content)
    expect = {"keep-parked", "keep-live"} | ({"keep-pending"} if name != "keep-pending.jsonl" else set())
    store = opens_and_keeps(path, expect)
    store.recover_interrupted()
    assert_well_formed(store)


def files_of(path: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file and folder under ``path``: inode, mtime and (for files) content."""
    return {str(p.relative_to(path)): (p.lstat().st_ino, p.lstat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
            for p in sorted(path.rglob("*"))}


def shown(store: SessionStore) -> list[tuple[str, str, Any]]:
    return [(d["session_id"], d["state"], d["record"]) for d in store.documents()]


OBSTRUCT = st.sampled_from(["none", "sessions.json", "synced.json", "lessons"])


@HYPO
@given(index=st.binary(max_size=300) | INDEX_LIKE.map(lambda v: json.dumps(v).encode()),
       journal=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode() + b"\n"),
       name=st.sampled_from(["keep-pending.jsonl", "stray.jsonl", "renamed.jsonl"]), obstruct=OBSTRUCT)
def test_read_only_open_writes_nothing_and_shows_what_the_kiosk_will(
        tmp_path_factory: pytest.TempPathFactory, index: bytes, journal: bytes, name: str, obstruct: str) -> None:
    """Whatever the store holds (damaged index, stray or renamed journal, old layout, an obstruction), a
    read-only open changes no file, and lists exactly what the kiosk's own open will keep after its repairs."""
    path = seeded(tmp_path_factory.mktemp("ro"), "state")
    (path / "sessions.json").write_bytes(index)
    lessons = path / "lessons"
    if name == "renamed.jsonl":
        (lessons / "keep-parked.jsonl").rename(lessons / name)
    else:
        (lessons / name).write_bytes(journal)
    if obstruct == "lessons":
        shutil.rmtree(lessons)
        lessons.write_bytes(journal)
    elif obstruct != "none":
        (path / obstruct).unlink(missing_ok=True)
        (path / obstruct).mkdir()
    before = files_of(path)
    reader = SessionStore(path, read_only=True)
    seen = shown(reader)
    with pytest.raises(StoreError, match="read-only"):
        reader.save(record("never"))
    assert files_of(path) == before
    assert seen == shown(SessionStore(path))


def replaced(value: Any) -> Any:
    if isinstance(value, str):
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    if isinstance(value, dict):
        return {replaced(k): replaced(v) for k, v in value.items()}
    if isinstance(value, list):
        return [replaced(v) for v in value]
    return value


@HYPO
@given(sid=st.text(min_size=1, max_size=12), body=st.dictionaries(st.text(max_size=6), JSON, max_size=4))
def test_any_record_round_trips(tmp_path_factory: pytest.TempPathFactory, sid: str, body: dict) -> None:
    """st.text() includes lone surrogates and any id: save must take it, get must give it back."""
    path = tmp_path_factory.mktemp("rec")
    store = SessionStore(path)
    rec = {**body, "session_id": sid}
    store.checkpoint(rec)
    store.save(rec)
    assert SessionStore(path).get(sid) == replaced(rec)


# -- crash safety --------------------------------------------------------------------------------


def kill_rounds(directory: Path, rounds: int, seed: int = 1234) -> tuple[dict[str, int], dict[str, int]]:
    """Run the writer ``rounds`` times, each killed with SIGKILL 0–300 ms after its store opened.

    Returns what the writers reported durable before they were killed: lessons saved (session id →
    size of the final text) and lessons checkpointed (session id → number of turns). Fails at the first
    round whose writer found damage when it opened the store."""
    rng = random.Random(seed)
    reported: dict[str, int] = {}
    checkpointed: dict[str, int] = {}
    for i in range(rounds):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(directory), str(i)],
                                stdout=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=os.getcwd()))
        assert proc.stdout is not None
        ready = proc.stdout.readline().decode()
        assert ready.startswith("ready "), f"round {i}: the writer did not start: {ready!r}"
        assert json.loads(ready[6:]) == [], f"round {i}: the store reported damage on open: {ready}"
        # The kill moment is the point of the test, so this wait is deliberate: a random instant
        # inside the writer's loop, which lands inside writes (index, journal append, journal replace).
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=rng.uniform(0.0, 0.3))  # the writer never exits by itself
        os.kill(proc.pid, signal.SIGKILL)
        for line in proc.stdout.read().decode().splitlines():  # what was reported before the kill
            kind, sid, size = line.split()
            (reported if kind == "saved" else checkpointed)[sid] = int(size)
        proc.wait()
    return reported, checkpointed


@pytest.mark.timeout(600)
def test_sigkill_during_writes_never_corrupts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill a writer (checkpoints, saves, deliveries) at random moments inside its writes: every lesson
    it reported saved survives, whole, every reported checkpoint survives, and the store opens with no
    damage reported.

    Records grow and shrink (10 B to 1.5 MB, a final record smaller than the journal it replaces, the
    index shrinking when deliveries move to the archive), the case that breaks in-place writes.

    Guards against a non-atomic write. ``scripts/mutate_store_write.py`` runs this test with
    ``journal.write_atomic`` replaced by an in-place ``O_TRUNC`` write; recorded result (150 rounds):
    the mutant FAILS ("8 of 557 checkpointed lessons lost": a final record cut off mid-write took the
    lesson's checkpoints with it), the real code passes.
    """
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # the writer imports this tree's appliance
    rounds = int(os.environ.get("STELLA_KILL_ROUNDS", "150"))
    reported, checkpointed = kill_rounds(tmp_path, rounds)
    assert len(reported) >= rounds // 2, "too few saves before the kills to test anything"
    store = SessionStore(tmp_path)
    assert store.problems == []
    lost = []
    for sid, size in reported.items():
        rec = store.get(sid)
        if not (rec and rec["end_reason"] == "button" and rec["turns"][-1] == {"role": "tutor", "text": "s" * size}
                and store.state_of(sid) in ("pending", "synced")):
            lost.append(sid)
    assert not lost, f"{len(lost)} of {len(reported)} reported lessons lost or damaged: {lost[:5]}"
    # A lesson cut off mid-way keeps at least its last reported checkpoint (the writer's next start
    # closed it as interrupted; the last round's lesson is still in progress).
    lost = [sid for sid, turns in checkpointed.items()
            if sid not in reported and len((store.get(sid) or {}).get("turns", [])) < turns]
    assert not lost, f"{len(lost)} of {len(checkpointed)} checkpointed lessons lost: {lost[:5]}"
    assert all(r["end_reason"] == "interrupted" for r in store.recover_interrupted())


TRACED = textwrap.dedent(
    """
    import sys
    from appliance.store.sessions import SessionStore
    store = SessionStore(sys.argv[1])
    store.checkpoint({"session_id": "traced", "turns": [1], "end_reason": "interrupted"})
    store.save({"session_id": "traced", "turns": [1, 2], "end_reason": "button"})
    """
)
SYSCALL = re.compile(r"^(?:\d+\s+)?(\w+)\((.*)\)\s+=\s+(-?\d+)")
Op = tuple[str, Any, int]


def traced_ops(directory: Path, trace: Path, command: list[str] | None = None) -> list[Op]:
    """The file syscalls of a child (by default one checkpoint and one save), in order, as
    ``("open", path, fd)``, ``("write" | "fsync", fd, result)``, ``("rename", (old, new), result)`` or
    ``("sync", None, result)``."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (scripts/setup.sh installs it)")
    probe = subprocess.run([strace, "-o", os.devnull, "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here (ptrace not permitted?): {probe.stderr.strip()}")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    subprocess.run([strace, "-f", "-qq", "-s", "0", "-o", str(trace), "-e", "signal=none",
                    "-e", "trace=openat,write,fsync,fdatasync,rename,renameat2,sync",
                    *(command or [sys.executable, "-c", TRACED, str(directory)])],
                   env=env, check=True, timeout=60)
    ops: list[Op] = []
    for line in trace.read_text().splitlines():
        m = SYSCALL.match(line)
        if not m:
            continue
        name, args, result = m[1], m[2], int(m[3])
        paths = re.findall(r'"([^"]*)"', args)
        if name == "openat" and paths:
            ops.append(("open", paths[0], result))
        elif name in ("write", "fsync", "fdatasync"):
            ops.append(("write" if name == "write" else "fsync", int(args.split(",")[0]), result))
        elif name in ("rename", "renameat2") and len(paths) == 2:
            ops.append(("rename", (paths[0], paths[1]), result))
        elif name == "sync":
            ops.append(("sync", None, result))
    return ops


def uses_of(ops: list[Op], fd: int, start: int) -> list[tuple[int, str]]:
    """(index, "write" | "fsync") on ``fd`` from ``start`` until the descriptor is reused by another open."""
    found = []
    for i in range(start + 1, len(ops)):
        kind, arg, result = ops[i]
        if kind == "open" and result == fd:
            break
        if kind in ("write", "fsync") and arg == fd:
            found.append((i, kind))
    return found


def dir_fsynced_after(ops: list[Op], directory: Path, start: int, end: int | None = None) -> bool:
    """``directory`` was opened and fsynced after ``start`` (and before ``end``)."""
    end = len(ops) if end is None else end
    return any(kind == "open" and arg == str(directory)
               and any(k == "fsync" and j < end for j, k in uses_of(ops, fd, i))
               for i, (kind, arg, fd) in enumerate(ops) if start < i < end)


def check_replaced(ops: list[Op], target: Path) -> None:
    """write → fsync → rename → fsync of the directory, for the write that put ``target`` in place."""
    r = next((i for i, op in enumerate(ops) if op[0] == "rename" and op[1][1] == str(target)), None)
    assert r is not None, f"{target.name} was never renamed into place"
    tmp = ops[r][1][0]
    o = max((i for i in range(r) if ops[i][0] == "open" and ops[i][1] == tmp), default=None)
    assert o is not None, f"{tmp} renamed but never written"
    uses = [(i, k) for i, k in uses_of(ops, ops[o][2], o) if i < r]
    writes = [i for i, k in uses if k == "write"]
    syncs = [i for i, k in uses if k == "fsync"]
    assert writes, f"nothing written to {tmp}"
    assert syncs and max(syncs) > max(writes), f"{target.name} renamed into place before its data was fsynced"
    assert dir_fsynced_after(ops, target.parent, r), f"the rename to {target.name} was not made durable"


def test_atomic_writes_are_durable_in_order(tmp_path: Path) -> None:
    """Seen by strace, what SIGKILL cannot show: each replaced file (the lesson's final journal, the
    index) is written to a temporary file, fsynced, renamed over the old one, and its directory then
    fsynced; the first checkpoint is fsynced and the new journal's directory fsynced. Guards against a
    missing fsync, a rename before the data is on disk, or a rename never made durable."""
    store_dir = tmp_path / "store"
    SessionStore(store_dir).close()  # the child's open then has nothing to write
    ops = traced_ops(store_dir, tmp_path / "trace.txt")
    journal = store_dir / "lessons" / "traced.jsonl"
    first = next((i for i, op in enumerate(ops) if op[0] == "open" and op[1] == str(journal)), None)
    assert first is not None, "the checkpoint never opened its journal"
    uses = uses_of(ops, ops[first][2], first)
    assert [k for _, k in uses][:2] == ["write", "fsync"], f"checkpoint append not fsynced: {uses}"
    save = next(i for i, op in enumerate(ops) if op[0] == "open" and op[1].endswith(".tmp") and i > first)
    assert dir_fsynced_after(ops, journal.parent, uses[1][0], save), "the new journal's name was not made durable"
    check_replaced(ops, journal)
    check_replaced(ops, store_dir / "sessions.json")


def test_the_store_does_not_import_the_daemon() -> None:
    """The store sits below the daemon: importing any store module must load no ``appliance.daemon``
    module (the lost-lesson marker is the store's own constant, which the sessions command reads)."""
    code = ("import sys\n"
            "import appliance.store.sessions, appliance.store.worker, appliance.store.unsaved\n"
            "import appliance.store.lock, appliance.store.journal, appliance.store.index\n"
            "print(sorted(m for m in sys.modules if m.startswith('appliance.daemon')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_a_lessons_delivery_time_survives_a_restart(tmp_path: Path) -> None:
    """The time a lesson reached the companion is read back after a restart, from sessions.json and, once
    a batch of deliveries moved to synced.json, from there: retention then counts the lesson's age from
    it (kept the day before its period ends, deleted the day after). Mutation seen surviving before this
    test: the read-back ``synced_at`` replaced by nothing (every delivery time forgotten at a restart)."""
    now = [1_000_000.0]
    store = SessionStore(tmp_path, clock=lambda: now[0], synced=lambda: True)
    ids = [f"d{i:02d}" for i in range(ARCHIVE_BATCH + 1)]
    for sid in ids:
        store.save(record(sid))
    delivered_at = {}
    for sid in ids:
        now[0] += 60
        store.mark_synced(sid)
        delivered_at[sid] = now[0]
    store.close()
    assert len(json.loads((tmp_path / "synced.json").read_text())["sessions"]) == ARCHIVE_BATCH
    reopened = SessionStore(tmp_path, clock=lambda: now[0], synced=lambda: True)
    assert {d["session_id"]: d["synced_at"] for d in reopened.documents()} == delivered_at
    assert all(d["synced_at_trusted"] for d in reopened.documents())
    now[0] = delivered_at[ids[0]] + 30 * 86400 - 1
    assert reopened.apply_retention(keep_synced_days=30, max_lessons=1000) == 0
    now[0] = delivered_at[ids[2]] + 30 * 86400 + 1  # d00, d01, d02 are past their 30 days
    assert reopened.apply_retention(keep_synced_days=30, max_lessons=1000) == 3
    assert [d["session_id"] for d in SessionStore(tmp_path).documents()] == ids[3:]


def test_the_cap_counts_the_lessons_already_deleted_by_age(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Retention by age and the cap in one pass: the cap deletes only as many more as still exceed it,
    the oldest delivered first, never a waiting lesson. By hand: 8 lessons (2 waiting, 6 delivered, 2
    of them past the 30 days), cap 4: the 2 old ones go by age, then 8 - 2 - 4 = 2 more, the oldest
    delivered (s2, s3). Mutation seen surviving before this test: the cap ignoring the lessons already
    deleted by age (4 deleted on top of them)."""
    now = [1_000_000.0]
    store = SessionStore(tmp_path, clock=lambda: now[0], synced=lambda: True)
    for sid in ("s0", "s1", "s2", "s3", "s4", "s5", "p6", "p7"):
        now[0] += 60
        store.save(record(sid))
    for sid in ("s0", "s1"):
        store.mark_synced(sid)
    now[0] += 40 * 86400
    for sid in ("s2", "s3", "s4", "s5"):
        store.mark_synced(sid)
    assert store.apply_retention(keep_synced_days=30, max_lessons=4) == 4
    assert [d["session_id"] for d in store.documents()] == ["s4", "s5", "p6", "p7"]
    assert "session store is full" not in caplog.text  # 4 left: at the cap, not over it
    assert sorted(p.name for p in (tmp_path / "lessons").iterdir()) == ["p6.jsonl", "p7.jsonl", "s4.jsonl",
                                                                       "s5.jsonl"]


def test_imported_lessons_are_durable_before_the_index_lists_them(tmp_path: Path) -> None:
    """`stella-kiosk sessions import` and the store's batch import, seen by strace: every imported lesson's
    journal is on disk (fsynced, or flushed by one ``sync`` and its directory fsynced) before the index
    that lists it is renamed into place, and that rename is made durable. Mutation seen surviving before
    this test: the batch import's one ``sync`` removed (a power cut after it could list lessons whose
    journals never reached the disk)."""
    store_dir = tmp_path / "store"
    SessionStore(store_dir).close()
    exported = tmp_path / "export.jsonl"
    exported.write_text("".join(json.dumps({**record(sid), "turns": []}) + "\n" for sid in ("i1", "i2", "i3")))
    config = tmp_path / "kiosk.toml"
    config.write_text(f'[kiosk]\nstate_dir = "{store_dir}"\n')
    cli = [sys.executable, "-m", "appliance.cli", "sessions", "--config", str(config), "import", str(exported)]
    batch = [sys.executable, "-c", "import sys, json\nfrom appliance.store.sessions import SessionStore\n"
             "s = SessionStore(sys.argv[1])\nprint(s.import_records(json.loads(l) for l in open(sys.argv[2])))",
             str(tmp_path / "batch"), str(exported)]
    for command, directory in ((cli, store_dir), (batch, tmp_path / "batch")):
        ops = traced_ops(directory, tmp_path / "trace.txt", command)
        renames = {i: op[1][1] for i, op in enumerate(ops) if op[0] == "rename"}
        for sid in ("i1", "i2", "i3"):
            journal = directory / "lessons" / f"{sid}.jsonl"
            r = next((i for i, path in renames.items() if path == str(journal)), None)
            assert r is not None, f"{journal.name} never written"
            # the first index written after the journal is the one that lists the lesson
            index = next(i for i, path in renames.items() if path == str(directory / "sessions.json") and i > r)
            flushed = any(op[0] == "sync" and r < i < index for i, op in enumerate(ops))
            if flushed:
                assert dir_fsynced_after(ops, journal.parent, r, index), "the lessons folder was not fsynced"
            else:
                check_replaced(ops, journal)
        check_replaced(ops, directory / "sessions.json")
        assert sorted(d["session_id"] for d in SessionStore(directory).documents()) == ["i1", "i2", "i3"]


# -- the journal file itself ---------------------------------------------------------------------


def test_a_journal_line_keeps_the_format_and_the_times_of_its_lesson(tmp_path: Path) -> None:
    """A journal line is ``{"v": 1, "kind", "created_at", "saved_at", "record"}``: the lesson's times come
    back from it when the index is lost (created when its first turn was kept, saved when it ended)."""
    now = [100.0]
    store = SessionStore(tmp_path, clock=lambda: now[0])
    store.checkpoint({"session_id": "t1", "turns": []})
    now[0] = 250.0
    store.save(record("t1"))
    [saved] = store.documents()
    assert (saved["created_at"], saved["saved_at"]) == (100.0, 250.0)
    store.close()
    [line] = (tmp_path / "lessons" / "t1.jsonl").read_bytes().splitlines()
    assert json.loads(line) == {"v": 1, "kind": "final", "created_at": 100.0, "saved_at": 250.0,
                                "record": record("t1")}
    (tmp_path / "sessions.json").unlink()
    [doc] = SessionStore(tmp_path).documents()
    assert (doc["session_id"], doc["state"], doc["created_at"], doc["saved_at"]) == ("t1", "pending", 100.0, 250.0)


def test_times_that_are_not_numbers_are_read_as_unknown() -> None:
    """A hand-edited or foreign line: a time given as text, true, null or NaN is not a time (the saved
    time stands in for the creation time, 0 for an unknown saved time); the lesson is kept."""
    from appliance.store.journal import parse_entry

    for odd in ('"yesterday"', "true", "null", "NaN", "[1]"):
        raw = f'{{"kind":"final","record":{{"session_id":"a"}},"saved_at":{odd},"created_at":{odd}}}'.encode()
        entry = parse_entry(raw)
        assert entry is not None and (entry.created_at, entry.saved_at) == (0.0, 0.0), odd
    entry = parse_entry(b'{"kind":"final","record":{"session_id":"a"},"saved_at":7,"created_at":"x"}')
    assert entry is not None and (entry.created_at, entry.saved_at) == (7.0, 7.0)


def test_appending_creates_an_owner_only_file_and_says_when_it_did(tmp_path: Path) -> None:
    from appliance.store.journal import append_line

    path = tmp_path / "a.jsonl"
    old = os.umask(0o022)
    try:
        assert append_line(path, b'{"x":1}\n', check_tail=True) is True
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert append_line(path, b'{"x":2}\n', check_tail=True) is False
    assert path.read_bytes() == b'{"x":1}\n{"x":2}\n'  # no blank line between whole lines


@pytest.mark.parametrize("torn", [b"x", b'{"kind":"checkpoint","rec'])
def test_a_torn_last_line_is_never_glued_to_the_next(tmp_path: Path, torn: bytes) -> None:
    """A power cut left the last line unfinished (one byte or more): the next append starts a new line,
    when asked to look; without looking (this process's own appends are whole) it appends as it is."""
    from appliance.store.journal import append_line

    path = tmp_path / "a.jsonl"
    path.write_bytes(torn)
    assert append_line(path, b'{"x":1}\n', check_tail=True) is False
    assert path.read_bytes() == torn + b'\n{"x":1}\n'
    other = tmp_path / "b.jsonl"
    other.write_bytes(torn)
    append_line(other, b'{"x":1}\n', check_tail=False)
    assert other.read_bytes() == torn + b'{"x":1}\n'


def test_write_errors_name_the_file_and_the_reason(tmp_path: Path) -> None:
    from appliance.store.journal import append_line, encode_line, make_entry

    missing = tmp_path / "gone" / "a.jsonl"
    with pytest.raises(StoreError) as info:
        append_line(missing, b"{}\n", check_tail=True)
    assert str(info.value) == f"cannot write {missing}: No such file or directory"
    with pytest.raises(StoreError) as info:
        encode_line(make_entry("final", {"session_id": "a", "turns": {1, 2}}, 0.0, 0.0))  # type: ignore[typeddict-item]
    assert str(info.value).startswith("the lesson record cannot be stored as JSON: ")
    assert "set" in str(info.value)


def test_a_journal_is_read_from_its_last_good_line_and_counts_the_damaged_ones(tmp_path: Path) -> None:
    """The last well-formed line wins, also when a crash cut off only its newline; complete lines that are
    not entries are counted as damaged, a torn last line is not; ids that are empty or missing make no
    entry, and a creation time is read as written."""
    from appliance.store.journal import encode_line, make_entry, parse_entry, read_journal

    first = encode_line(make_entry("checkpoint", {"session_id": "a", "turns": [1]}, 3.0, 4.0))  # type: ignore[typeddict-item]
    last = encode_line(make_entry("final", {"session_id": "a", "turns": [1, 2]}, 3.0, 9.0))  # type: ignore[typeddict-item]
    path = tmp_path / "a.jsonl"
    path.write_bytes(first + last.rstrip(b"\n"))  # the final line whole but for its newline
    read = read_journal(path)
    assert read.entry is not None and (read.entry.kind, read.entry.record["turns"]) == ("final", [1, 2])
    assert (read.entry.created_at, read.entry.saved_at, read.bad_lines) == (3.0, 9.0, 0)
    path.write_bytes(first + b"garbage\n" + b'{"kind":"final"}\n' + b'{"kind":"fin')
    read = read_journal(path)
    assert read.entry is not None and read.entry.kind == "checkpoint" and read.bad_lines == 2
    for bad_record in (b'{"session_id":""}', b'{"id":"a"}', b'"a"'):
        assert parse_entry(b'{"kind":"final","record":' + bad_record + b',"saved_at":1}') is None


def test_odd_session_ids_get_a_stable_hashed_name_even_with_lone_surrogates() -> None:
    """Ids that are not plain file names are named by the first 40 hex digits of their SHA-256 (journals
    outlive versions: a changed name would be renamed at every upgrade); a lone surrogate in an id
    still gets one."""
    import hashlib

    from appliance.store.journal import journal_name, sanitize

    assert journal_name("lesson-1.a_b") == "lesson-1.a_b.jsonl"
    assert journal_name("../x") == "~" + hashlib.sha256(b"../x").hexdigest()[:40] + ".jsonl"
    odd = journal_name("\ud800")
    assert odd.startswith("~") and odd.endswith(".jsonl") and odd != journal_name("\ufffd")
    assert sanitize({1: "a\ud800", "k\udfff": ("x", None)}) == {1: "a\ufffd", "k\ufffd": ["x", None]}


def test_replacing_a_file_leaves_it_owner_only_and_no_temporary_file_on_failure(tmp_path: Path) -> None:
    from appliance.store.journal import write_atomic

    target = tmp_path / "index.json"
    old = os.umask(0o022)
    try:
        write_atomic(target, b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == b"{}"
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    with pytest.raises(StoreError) as info:
        write_atomic(blocked, b"{}")
    assert str(info.value) == f"cannot write {blocked}: Is a directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocked", "index.json"]  # the temporary file is gone


# -- reading the index files ---------------------------------------------------------------------


def test_an_index_entry_is_read_in_its_one_well_formed_shape() -> None:
    """What an entry keeps of a document: the times (a missing creation time is the saved one, a missing
    saved time the creation one, neither 0), the delivery time, trust and re-dating flag only for a
    delivered lesson (and only when exactly true), a reason only for a parked one."""
    from appliance.store.index import normalize_entry

    assert normalize_entry({"session_id": "a", "state": "pending", "saved_at": 5}) == {
        "session_id": "a", "state": "pending", "created_at": 5.0, "saved_at": 5.0, "synced_at": None,
        "synced_at_trusted": False, "redate_pending": False, "parked_reason": None}
    created_only = normalize_entry({"session_id": "a", "state": "pending", "created_at": 3})
    assert created_only is not None and (created_only["created_at"], created_only["saved_at"]) == (3.0, 3.0)
    neither = normalize_entry({"session_id": "a", "state": "parked"})
    assert neither is not None
    assert (neither["created_at"], neither["saved_at"], neither["parked_reason"]) == (0.0, 0.0, "")
    flags = {"synced_at": 9, "synced_at_trusted": True, "redate_pending": True, "parked_reason": "why"}
    pending = normalize_entry({"session_id": "a", "state": "pending", **flags})
    assert pending is not None and (pending["synced_at"], pending["synced_at_trusted"], pending["redate_pending"],
                                    pending["parked_reason"]) == (None, False, False, None)
    synced = normalize_entry({"session_id": "a", "state": "synced", **flags})
    assert synced is not None and (synced["synced_at"], synced["synced_at_trusted"], synced["redate_pending"],
                                   synced["parked_reason"]) == (9.0, True, True, None)
    loose = normalize_entry({"session_id": "a", "state": "synced", "synced_at_trusted": 1, "redate_pending": "yes"})
    assert loose is not None and (loose["synced_at_trusted"], loose["redate_pending"]) == (False, False)
    parked = normalize_entry({"session_id": "a", "state": "parked", "parked_reason": "invalid_record: x"})
    assert parked is not None and parked["parked_reason"] == "invalid_record: x"
    for bad in ({"session_id": 5, "state": "pending"}, {"session_id": "", "state": "pending"},
                {"session_id": "a", "state": "lost"}, ["a"]):
        assert normalize_entry(bad) is None, bad


def test_documents_that_carry_their_record_are_kept_with_the_records_id() -> None:
    """The previous layout's documents (and bare records salvaged from a cut file) carry the lesson: its id
    is the record's, its state the document's if it had one (else waiting to be sent again)."""
    from appliance.store.index import OldDocument, classify

    old = classify({"record": {"session_id": "r1", "turns": []}, "state": "synced", "synced_at": 4.0})
    assert isinstance(old, OldDocument) and old.state == "synced" and old.entry["session_id"] == "r1"
    assert old.entry["synced_at"] == 4.0
    stateless = classify({"session_id": "outer", "record": {"session_id": "r2"}})
    assert isinstance(stateless, OldDocument) and stateless.state == "pending"
    assert stateless.entry["session_id"] == "r2" and stateless.entry["state"] == "pending"
    running = classify({"record": {"session_id": "r3"}, "state": "in_progress"})
    assert isinstance(running, OldDocument) and running.state == "in_progress" and running.entry["state"] == "pending"
    odd_state = classify({"record": {"session_id": "r4"}, "state": "lost"})
    assert isinstance(odd_state, OldDocument) and odd_state.state == "pending"
    bare = classify({"session_id": "r5", "turns": [{"role": "learner", "text": "hi"}]})
    assert isinstance(bare, OldDocument) and bare.state == "pending" and bare.record["turns"][0]["text"] == "hi"
    for bad in ({"record": {"session_id": ""}}, {"record": "x"}, {"turns": []}, 5):
        assert classify(bad) is None, bad


def test_a_damaged_index_gives_up_every_whole_lesson_object_in_it(tmp_path: Path) -> None:
    """Salvage decodes each complete object of a cut file, from its first byte on and also objects that
    follow each other with nothing between; the newest copy of a lesson wins, whichever layout it is in;
    documents of the wrong shape are counted."""
    from appliance.store.index import load_index

    a = json.dumps({"session_id": "a", "state": "pending", "created_at": 1.0, "saved_at": 1.0})
    b_old = json.dumps({"session_id": "b", "record": {"session_id": "b"}, "state": "pending"})
    b_new = json.dumps({"session_id": "b", "state": "synced", "created_at": 2.0, "synced_at": 3.0})
    a_old = json.dumps({"session_id": "a", "record": {"session_id": "a"}, "state": "pending"})
    path = tmp_path / "sessions.json"
    path.write_text(a + b_old + b_new + ',{"session_id": "c", "state": "pen')
    loaded = load_index(path)
    assert loaded.damage == "not JSON (truncated or garbage)"
    assert sorted(loaded.entries) == ["a", "b"] and loaded.old == {} and loaded.entries["b"]["state"] == "synced"
    path.write_text(b_new + a + a_old + "]]")
    loaded = load_index(path)
    assert sorted(loaded.entries) == ["b"] and sorted(loaded.old) == ["a"]
    path.write_text(json.dumps({"sessions": {"1": json.loads(a), "2": {"state": "x"}, "3": [], "4": {}}}))
    loaded = load_index(path)
    assert loaded.damage is None and loaded.dropped == 3 and loaded.entries["a"]["created_at"] == 1.0


def test_each_kind_of_damaged_index_is_named_and_salvaged(tmp_path: Path) -> None:
    """The damage is named in words (it goes into the problem the admin reads) and whatever lessons the
    file still holds are kept: bytes that are not UTF-8, a top level that is not an object, a sessions
    table of the wrong type; the store's schema is read from its meta table only when it is a number."""
    from appliance.store.index import load_index

    entry = {"session_id": "a", "state": "pending", "created_at": 1.0, "saved_at": 1.0}
    path = tmp_path / "sessions.json"
    cases: list[tuple[bytes, str | None, list[str], int]] = [
        (b"\xff\xfe" + json.dumps(entry).encode(), "not UTF-8 text", ["a"], 0),
        (json.dumps([entry, {"state": "x"}]).encode(), "not a session database (the top level is list)", ["a"], 1),
        (b"5", "not a session database (the top level is int)", [], 0),
        (json.dumps({"sessions": [entry, 3]}).encode(), "wrong shape (the sessions table is a list)", ["a"], 1),
        (json.dumps({"sessions": "a"}).encode(), "wrong shape (the sessions table is str)", [], 0),
        (json.dumps({"meta": {"1": {"schema": 2}}}).encode(), None, [], 0),
    ]
    for raw, damage, kept, dropped in cases:
        path.write_bytes(raw)
        loaded = load_index(path)
        assert (loaded.damage, sorted(loaded.entries), loaded.dropped) == (damage, kept, dropped), raw
    for meta, schema in (({"1": {"schema": 2}}, 2), ({"1": {"schema": True}}, None), ({"1": {"schema": "2"}}, None),
                         ({"1": 2}, None), ([{"schema": 2}], None)):
        path.write_text(json.dumps({"sessions": {}, "meta": meta}))
        assert load_index(path).schema == schema, meta


# -- the store's writes and retention, in detail ----------------------------------------------------


def test_a_batch_import_takes_every_new_lesson_once_with_its_time(tmp_path: Path) -> None:
    """Known lessons and malformed records anywhere in the batch are skipped, not the end of it; a lesson
    twice in the batch is added once; the import's time is the lessons' time, in the index and in their
    journals."""
    store = SessionStore(tmp_path, clock=lambda: 500.0)
    store.save(record("known"))
    batch = [record("known"), {"no": "id"}, record("n1"), record("n1", "again"), 7, record("n2")]
    assert store.import_records(batch) == 2
    assert [(d["session_id"], d["created_at"], d["saved_at"]) for d in store.documents()] == [
        ("known", 500.0, 500.0), ("n1", 500.0, 500.0), ("n2", 500.0, 500.0)]
    assert store.get("n1") == record("n1")
    store.close()
    (tmp_path / "sessions.json").unlink()
    rebuilt = SessionStore(tmp_path, clock=lambda: 900.0)
    assert sorted((d["session_id"], d["created_at"], d["saved_at"]) for d in rebuilt.documents()) == [
        ("known", 500.0, 500.0), ("n1", 500.0, 500.0), ("n2", 500.0, 500.0)]


def test_retention_counts_age_strictly_and_skips_journals_already_gone(tmp_path: Path) -> None:
    """A lesson delivered exactly ``keep_synced_days`` ago is kept (older than, not as old as); a journal
    removed by hand does not stop retention; one that cannot be deleted is a StoreError naming it."""
    now = [1_000_000.0]
    store = SessionStore(tmp_path, clock=lambda: now[0], synced=lambda: True)
    for sid in ("a", "b", "c"):
        store.save(record(sid))
        store.mark_synced(sid)
    now[0] += 30 * 86400
    assert store.apply_retention(keep_synced_days=30, max_lessons=100) == 0
    (tmp_path / "lessons" / "a.jsonl").unlink()
    now[0] += 1
    (tmp_path / "lessons" / "b.jsonl").unlink()
    (tmp_path / "lessons" / "b.jsonl").mkdir()  # in the way: cannot be deleted as a file
    with pytest.raises(StoreError) as info:
        store.apply_retention(keep_synced_days=30, max_lessons=100)
    assert str(info.value) == f"cannot delete {tmp_path / 'lessons' / 'b.jsonl'}: Is a directory"
    (tmp_path / "lessons" / "b.jsonl").rmdir()
    assert store.apply_retention(keep_synced_days=30, max_lessons=100) == 3
    assert store.documents() == []


def test_a_full_store_is_reported_only_when_waiting_lessons_exceed_the_cap(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = SessionStore(tmp_path, synced=lambda: True)
    for sid in ("a", "b", "c"):
        store.save(record(sid))
    assert store.apply_retention(keep_synced_days=30, max_lessons=3) == 0
    assert "session store is full" not in caplog.text
    assert store.apply_retention(keep_synced_days=30, max_lessons=2) == 0
    assert "session store is full: 3 lessons waiting for the companion exceed the cap of 2" in caplog.text


def test_stale_delivery_stamps_are_restamped_in_both_index_files(tmp_path: Path) -> None:
    """Lessons delivered before the clock was synchronized, some already moved to synced.json: the first
    retention on a synchronized clock stamps them all "now" (trusted), in both files, so their period
    counts from then, also after a restart."""
    now = [1_000_000.0]
    synced = [False]
    store = SessionStore(tmp_path, clock=lambda: now[0], synced=lambda: synced[0])
    ids = [f"s{i:02d}" for i in range(ARCHIVE_BATCH + 2)]
    for sid in ids:
        store.save(record(sid))
        store.mark_synced(sid)
    assert len(json.loads((tmp_path / "synced.json").read_text())["sessions"]) == ARCHIVE_BATCH
    now[0] += 365 * 86400
    synced[0] = True
    assert store.apply_retention(keep_synced_days=30, max_lessons=1000) == 0
    store.close()
    reopened = SessionStore(tmp_path, clock=lambda: now[0], synced=lambda: True)
    assert {(d["synced_at"], d["synced_at_trusted"]) for d in reopened.documents()} == {(now[0], True)}
    now[0] += 31 * 86400
    assert reopened.apply_retention(keep_synced_days=30, max_lessons=1000) == len(ids)


def test_corrected_dates_are_kept_and_the_lesson_is_no_longer_awaited(tmp_path: Path) -> None:
    now = [100.0]
    store = SessionStore(tmp_path, clock=lambda: now[0])
    store.save(record("r1", "before"))
    now[0] = 200.0
    store.mark_synced("r1", redate=True)
    store.save(record("r2"))
    store.mark_synced("r2", redate=True)
    assert [r["session_id"] for r in store.awaiting_redate()] == ["r1", "r2"]
    store.redated(record("r1", "after"))
    store.drop_redate("r2")
    assert store.awaiting_redate() == [] and store.get("r1") == record("r1", "after")
    store.close()
    (tmp_path / "sessions.json").unlink()
    [doc, _] = SessionStore(tmp_path).documents()
    assert (doc["session_id"], doc["created_at"], doc["saved_at"]) == ("r1", 100.0, 100.0)
    assert doc["record"] == record("r1", "after")


def test_a_read_only_store_refuses_every_write_and_forgets_a_vanished_lesson(tmp_path: Path) -> None:
    """Every write raises before it touches a file, re-dating included (before: a read-only store's
    ``redated`` rewrote the lesson's journal, then refused at the index); a lesson whose journal vanished
    under it is forgotten in memory."""
    from appliance.store.sessions import READ_ONLY

    writer = SessionStore(tmp_path)
    for sid in ("a", "b"):
        writer.save(record(sid))
    writer.mark_synced("a", redate=True)
    reader = SessionStore(tmp_path, read_only=True)
    before = {p.name: p.read_bytes() for p in (tmp_path / "lessons").iterdir()}
    for write in (lambda: reader.drop_redate("a"), lambda: reader.redated(record("a", "changed")),
                  lambda: reader.mark_synced("b"), lambda: reader.import_records([record("c")])):
        with pytest.raises(StoreError) as info:
            write()
        assert str(info.value) == READ_ONLY
    assert {p.name: p.read_bytes() for p in (tmp_path / "lessons").iterdir()} == before
    (tmp_path / "lessons" / "b.jsonl").unlink()  # retention by the running kiosk, say
    assert [d["session_id"] for d in reader.documents()] == ["a"] and len(reader) == 1
    assert reader.get("b") is None and reader.state_of("b") is None


def test_a_damaged_file_is_moved_aside_under_a_new_utc_name_and_reported_at_critical(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The aside name carries the UTC time (whatever the local zone) and, when that name is taken, the next
    free number from -2; the problem is logged at CRITICAL by the kiosk, at INFO by a read-only reader."""
    import logging
    import time as clock

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    clock.tzset()
    try:
        taken = set()
        for ahead in range(0, 6):  # whichever second the store opens in, its first name is taken
            stamp = clock.strftime("%Y%m%dT%H%M%SZ", clock.gmtime(clock.time() + ahead))
            (tmp_path / f"sessions.json.corrupt-{stamp}").write_text("older damage")
            taken.add(f"sessions.json.corrupt-{stamp}")
        (tmp_path / "sessions.json").write_bytes(b"\x00garbage")
        caplog.set_level(logging.INFO)
        reader = SessionStore(tmp_path, read_only=True)
        assert [r.levelno for r in caplog.records if r.getMessage().startswith("session store: ")] == [logging.INFO]
        caplog.clear()
        store = SessionStore(tmp_path)
    finally:
        monkeypatch.delenv("TZ")
        clock.tzset()
    [aside] = [p.name for p in tmp_path.glob("sessions.json.corrupt-*") if p.name not in taken]
    assert re.fullmatch(r"sessions\.json\.corrupt-\d{8}T\d{6}Z-2", aside) and aside[:-2] in taken
    [problem] = store.problems
    assert problem.startswith("sessions.json was damaged (not JSON (truncated or garbage)); moved to " + aside)
    assert reader.problems[0].startswith("sessions.json was damaged") and "left as it is" in reader.problems[0]
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name.startswith("appliance.store.")
            and r.levelno == logging.CRITICAL] == [(logging.CRITICAL, "session store: " + problem)]


def test_a_lost_journal_is_a_problem_only_for_a_lesson_not_yet_delivered(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    for sid in ("gone-synced", "gone-pending"):
        store.save(record(sid))
    store.mark_synced("gone-synced")
    store.checkpoint({"session_id": "gone-live", "turns": []})
    for sid in ("gone-synced", "gone-pending", "gone-live"):
        (tmp_path / "lessons" / f"{sid}.jsonl").unlink()
    assert store.documents() == [] and len(store) == 0
    assert store.get("gone-pending") is None and store.state_of("gone-pending") is None
    assert store.problems == ["lesson gone-pending (pending) lost its journal file; it cannot be sent",
                              "lesson gone-live (in_progress) lost its journal file; it cannot be sent"]


def test_a_lesson_in_progress_keeps_its_start_and_last_checkpoint_across_a_crash(tmp_path: Path) -> None:
    now = [100.0]
    store = SessionStore(tmp_path, clock=lambda: now[0])
    store.checkpoint({"session_id": "live", "turns": [1]})
    now[0] = 150.0
    store.checkpoint({"session_id": "live", "turns": [1, 2]})
    expected = {"session_id": "live", "state": "in_progress", "created_at": 100.0, "saved_at": 150.0,
                "synced_at": None, "synced_at_trusted": False, "redate_pending": False, "parked_reason": None,
                "record": {"session_id": "live", "turns": [1, 2]}}
    assert store.documents() == [expected]
    store.close()
    now[0] = 400.0
    assert SessionStore(tmp_path, clock=lambda: now[0]).documents() == [expected]


def test_a_finished_lesson_taken_up_again_is_in_progress_again(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(record("again"))
    store.checkpoint({**record("again"), "turns": [{"role": "learner", "text": "more"}]})
    assert store.state_of("again") == "in_progress" and store.unsynced() == []
    store.close()
    reopened = SessionStore(tmp_path)
    assert reopened.state_of("again") == "in_progress"
    [closed] = reopened.recover_interrupted()
    assert closed["turns"] == [{"role": "learner", "text": "more"}] and reopened.state_of("again") == "pending"


def test_an_unreadable_interrupted_lesson_does_not_stop_the_others_being_closed(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.checkpoint({"session_id": "a-broken", "turns": []})
    store.checkpoint({"session_id": "b-fine", "turns": [1]})
    store.close()
    reopened = SessionStore(tmp_path)
    (tmp_path / "lessons" / "a-broken.jsonl").write_bytes(b"not json\n")
    assert [r["session_id"] for r in reopened.recover_interrupted()] == ["b-fine"]
    assert reopened.state_of("b-fine") == "pending" and reopened.state_of("a-broken") is None


def test_parking_keeps_the_reason_and_delivery_asks_for_no_correction_unless_told(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    for sid in ("p1", "p2", "s1"):
        store.save(record(sid))
    store.park("p1", "invalid_record: turns: not a list")
    store.park("p2", "")
    store.mark_synced("s1")
    assert [(r["session_id"], why) for r, why in store.parked()] == [("p1", "invalid_record: turns: not a list"),
                                                                    ("p2", "")]
    assert store.awaiting_redate() == []
    store.mark_synced("nobody")  # not a lesson here: nothing happens
    assert store.state_of("nobody") is None and len(store) == 3


def test_only_a_delivered_lesson_has_its_dates_corrected(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(record("waiting"))
    journal = (tmp_path / "lessons" / "waiting.jsonl").read_bytes()
    store.redated(record("waiting", "changed"))
    store.drop_redate("waiting")
    store.drop_redate("unknown")
    assert (tmp_path / "lessons" / "waiting.jsonl").read_bytes() == journal
    assert store.state_of("waiting") == "pending"


def test_lessons_awaiting_corrected_dates_are_listed_oldest_first_from_both_files(tmp_path: Path) -> None:
    """Delivered newest first, so the oldest sit in sessions.json and the newest moved to synced.json:
    the list is still oldest first."""
    now = [1000.0]
    store = SessionStore(tmp_path, clock=lambda: now[0])
    ids = [f"r{i:02d}" for i in range(ARCHIVE_BATCH + 3)]
    for sid in ids:
        now[0] += 1
        store.save(record(sid))
    for sid in reversed(ids):
        store.mark_synced(sid, redate=True)
    assert len(json.loads((tmp_path / "synced.json").read_text())["sessions"]) == ARCHIVE_BATCH
    assert [r["session_id"] for r in store.awaiting_redate()] == ids
    store.close()
    assert [r["session_id"] for r in SessionStore(tmp_path).awaiting_redate()] == ids


def test_an_entry_in_both_index_files_is_read_as_sessions_json_says(tmp_path: Path) -> None:
    """A crash between the archive write and the sessions.json write leaves a lesson in both files; a
    hand-edited synced.json may hold a waiting lesson. sessions.json wins; waiting lessons are counted
    wherever they are."""
    store = SessionStore(tmp_path)
    for sid in ("both", "archived-pending"):
        store.save(record(sid))
    store.close()
    entry = {"session_id": "both", "state": "synced", "created_at": 1.0, "saved_at": 1.0, "synced_at": 2.0,
             "synced_at_trusted": True, "redate_pending": True, "parked_reason": None}
    waiting = {**entry, "session_id": "archived-pending", "state": "pending", "redate_pending": False}
    (tmp_path / "synced.json").write_text(json.dumps({"sessions": {"1": entry, "2": waiting}}))
    active = {**entry, "redate_pending": False}
    (tmp_path / "sessions.json").write_text(json.dumps({"sessions": {"1": active}, "meta": {"1": {"schema": 2}}}))
    reopened = SessionStore(tmp_path)
    assert reopened.awaiting_redate() == []
    assert reopened.count_unsynced() == 1 and [r["session_id"] for r in reopened.unsynced()] == ["archived-pending"]


def test_state_changes_keep_each_index_file_to_its_lessons(tmp_path: Path) -> None:
    """A delivered lesson already in synced.json that is marked delivered again stays there with its new
    time; parked, it moves to sessions.json with its reason and no delivery time. A lesson in progress
    is never marked, and a record that is not an object is refused in words."""
    now = [1000.0]
    store = SessionStore(tmp_path, clock=lambda: now[0])
    ids = [f"a{i:02d}" for i in range(ARCHIVE_BATCH)]
    for sid in ids:
        store.save(record(sid))
        store.mark_synced(sid)

    def files() -> tuple[dict, dict]:
        read = [json.loads((tmp_path / name).read_text())["sessions"] for name in ("sessions.json", "synced.json")]
        return ({d["session_id"]: d for d in read[0].values()}, {d["session_id"]: d for d in read[1].values()})

    assert sorted(files()[1]) == ids and files()[0] == {}
    now[0] = 2000.0
    store.mark_synced("a00")
    active, archive = files()
    assert active == {} and archive["a00"]["synced_at"] == 2000.0
    store.park("a01", "conflict: taken")
    active, archive = files()
    assert "a01" not in archive
    assert (active["a01"]["state"], active["a01"]["parked_reason"]) == ("parked", "conflict: taken")
    assert active["a01"]["synced_at"] is None
    [parked] = [d for d in store.documents() if d["session_id"] == "a01"]
    assert parked["synced_at"] is None and parked["synced_at_trusted"] is False
    store.checkpoint({"session_id": "live", "turns": []})
    store.mark_synced("live")
    store.park("live", "x")
    assert store.state_of("live") == "in_progress" and "live" not in files()[0]
    with pytest.raises(StoreError) as info:
        store.save([1, 2])  # type: ignore[arg-type]
    assert str(info.value) == "a lesson record must be a JSON object, not list"


def test_a_failed_index_write_is_a_store_error_and_the_next_one_succeeds(tmp_path: Path) -> None:
    """Something in the way of the index's temporary file: the save is a StoreError naming the index
    (the lesson's journal is on disk, so it is not lost); once the way is clear the next save works and
    the index holds both lessons."""
    import threading

    store = SessionStore(tmp_path)
    blocker = tmp_path / f".sessions.json.{os.getpid()}.{threading.get_ident()}.tmp"
    blocker.mkdir()
    with pytest.raises(StoreError) as info:
        store.save(record("first"))
    assert str(info.value) == f"cannot write {tmp_path / 'sessions.json'}: Is a directory"
    blocker.rmdir()
    store.save(record("second"))
    store.close()
    assert sorted(d["session_id"] for d in SessionStore(tmp_path).documents()) == ["first", "second"]


def test_a_delivered_lesson_saved_again_leaves_the_archive_and_ids_are_cleaned(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    ids = [f"a{i:02d}" for i in range(ARCHIVE_BATCH)]
    for sid in ids:
        store.save(record(sid))
        store.mark_synced(sid)
    store.save(record("a05", "saved again"))
    archive = json.loads((tmp_path / "synced.json").read_text())["sessions"]
    assert "a05" not in {d["session_id"] for d in archive.values()} and store.state_of("a05") == "pending"
    store.save({"session_id": "odd\ud800", "turns": []})
    assert store.get("odd\ufffd") == {"session_id": "odd\ufffd", "turns": []}
    with pytest.raises(StoreError) as info:
        store.save({"turns": []})
    assert str(info.value) == "a lesson record needs a non-empty string session_id"


def test_index_files_damaged_while_the_kiosk_runs_give_clear_store_errors(tmp_path: Path) -> None:
    """While the store is open, whatever replaces sessions.json is never taken for an index: bytes that
    are not UTF-8 or JSON of the wrong shape say to restart the kiosk (which repairs it); a directory or a
    link loop is a read error naming the file; a malformed entry among good ones is skipped, not the
    entries after it."""
    store = SessionStore(tmp_path)
    store.save(record("kept"))
    index = tmp_path / "sessions.json"
    good = index.read_bytes()
    damaged = f"{index} was damaged while the kiosk ran; restart the kiosk to repair it"
    for content in (b"\xff\xfe\x00", b"[1, 2]", b'{"sessions": [1]}', b"{"):
        index.write_bytes(content)
        with pytest.raises(StoreError) as info:
            store.state_of("kept")
        assert str(info.value) == damaged, content
    index.unlink()
    index.mkdir()
    with pytest.raises(StoreError) as info:
        store.state_of("kept")
    assert str(info.value) == f"cannot read {index}: Is a directory"
    index.rmdir()
    index.symlink_to(index)
    with pytest.raises(StoreError) as info:
        store.state_of("kept")
    assert str(info.value) == f"cannot read {index}: Too many levels of symbolic links"
    index.unlink()
    entries = json.loads(good)
    entries["sessions"] = {"1": {"bogus": 1}, **{str(int(k) + 1): v for k, v in entries["sessions"].items()}}
    index.write_text(json.dumps(entries))
    assert store.state_of("kept") == "pending"


def test_a_journal_that_cannot_be_read_is_a_store_error_and_damage_is_reported_once(tmp_path: Path) -> None:
    from appliance.store.journal import encode_line, make_entry

    store = SessionStore(tmp_path)
    store.save(record("dir"))
    journal = tmp_path / "lessons" / "dir.jsonl"
    journal.unlink()
    journal.mkdir()
    with pytest.raises(StoreError) as info:
        store.get("dir")
    assert str(info.value) == f"cannot read {journal}: Is a directory"
    journal.rmdir()
    store.save(record("torn"))
    line = encode_line(make_entry("final", record("torn"), 1.0, 1.0))  # type: ignore[arg-type]
    (tmp_path / "lessons" / "torn.jsonl").write_bytes(b"garbage\n" + line + b"more garbage\n")
    assert store.get("torn") == record("torn") and store.get("torn") == record("torn")
    assert store.problems == ["lessons/torn.jsonl had 1 damaged line(s); kept its last good one"]


def test_every_lesson_in_progress_is_listed(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    for sid in ("live-1", "live-2"):
        store.checkpoint({"session_id": sid, "turns": []})
    assert [d["session_id"] for d in store.documents()] == ["live-1", "live-2"] and len(store) == 2


def test_a_read_only_store_shows_the_lessons_an_old_index_still_carries(tmp_path: Path) -> None:
    """The previous layout keeps records inside sessions.json: read-only, they are shown from there (the
    kiosk writes their journals at its next start), one of them still in progress."""
    (tmp_path / "sessions.json").write_text(old_layout({"1": old_doc("p1", "pending", "one"),
                                                        "2": old_doc("run", "in_progress", "two")}))
    reader = SessionStore(tmp_path, read_only=True)
    assert {d["session_id"]: (d["state"], d["record"]["turns"][0]["text"]) for d in reader.documents()} == {
        "p1": ("pending", "one"), "run": ("in_progress", "two")}
    assert not (tmp_path / "lessons").exists()


def test_whatever_is_in_the_stores_way_is_named_exactly(tmp_path: Path) -> None:
    """Each obstruction is named for what it is and for what the store keeps there, moved aside by the
    kiosk and only reported by a read-only reader; a healthy place is not looked at twice."""
    cases = {"dir-as-index": ("sessions.json", "mkdir", "a directory", "an index file", "not-a-file"),
             "file-as-folder": ("lessons", "file", "a regular file", "its lessons folder", "not-a-folder"),
             "dangling": ("synced.json", "symlink", "a broken symbolic link", "an index file", "not-a-file"),
             "fifo": ("synced.json", "fifo", "a special file", "an index file", "not-a-file")}
    for name, (target, kind, what, role, why) in cases.items():
        for read_only in (True, False):
            state = tmp_path / f"{name}-{read_only}"
            SessionStore(state).close()
            path = state / target
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            if kind == "mkdir":
                path.mkdir()
            elif kind == "file":
                path.write_text("x")
            elif kind == "symlink":
                path.symlink_to(state / "nowhere")
            else:
                os.mkfifo(path)
            store = SessionStore(state, read_only=read_only)
            [problem] = store.problems
            if read_only:
                assert problem == (f"{target} is {what} where the store keeps {role}; left as it is (read-only "
                                   "here: the kiosk sets it aside at its next start)")
            else:
                [aside] = [p.name for p in state.iterdir() if p.name.startswith(f"{target}.{why}-")]
                assert problem == (f"{target} was {what} where the store keeps {role}; moved to {aside} unread "
                                   "(nothing was deleted: look inside, then remove it); a new one was made")


def test_a_state_directory_that_is_a_file_cannot_be_opened(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("not a directory")
    with pytest.raises(StoreError) as info:
        SessionStore(state)
    assert str(info.value) == f"cannot open the session store in {state}: Not a directory"


def test_opening_a_healthy_store_rewrites_nothing_and_a_damaged_one_is_rewritten(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(record("ok"))
    store.close()
    index = tmp_path / "sessions.json"
    before = (index.stat().st_ino, index.read_bytes())
    SessionStore(tmp_path).close()
    assert (index.stat().st_ino, index.read_bytes()) == before
    damaged = json.loads(index.read_text())  # the current schema, with one document of the wrong shape
    damaged["sessions"]["99"] = {"state": "pending"}
    old = old_doc("carried", "pending")
    damaged["sessions"]["100"] = old
    index.write_text(json.dumps(damaged))
    reopened = SessionStore(tmp_path)
    [problem] = reopened.problems
    assert problem.startswith("sessions.json was damaged (1 document(s) of the wrong shape); "
                              "moved to sessions.json.corrupt-")
    assert problem.endswith("; 2 lesson(s) salvaged from it")
    rewritten = {d["session_id"] for d in json.loads(index.read_text())["sessions"].values()}
    assert rewritten == {"ok", "carried"} and reopened.state_of("carried") == "pending"


def test_a_migration_writes_each_index_file_in_lesson_order_and_each_journal_with_its_times(tmp_path: Path) -> None:
    """The previous layout becomes: synced.json with the delivered lessons only (no meta), sessions.json
    with the others and the schema, each oldest first from document 1; a journal per lesson with the
    old document's times, a checkpoint line for the one in progress and a final line for the others."""
    docs = {"1": old_doc("zz-p", "pending"), "2": old_doc("s", "synced"),
            "3": old_doc("kk", "parked", parked_reason="invalid_record: x"), "4": old_doc("iii", "in_progress"),
            "5": old_doc("s-2", "synced")}
    (tmp_path / "sessions.json").write_text(old_layout(docs))
    SessionStore(tmp_path).close()
    active = json.loads((tmp_path / "sessions.json").read_text())
    archive = json.loads((tmp_path / "synced.json").read_text())
    assert active["meta"] == {"1": {"schema": 2}} and "meta" not in archive
    assert [(k, d["session_id"], d["state"]) for k, d in active["sessions"].items()] == [
        ("1", "kk", "parked"), ("2", "zz-p", "pending")]  # created 1002.0, 1004.0
    assert [(k, d["session_id"], d["synced_at"]) for k, d in archive["sessions"].items()] == [
        ("1", "s", 1001.0), ("2", "s-2", 1001.0)]
    for sid, kind in (("zz-p", "final"), ("s", "final"), ("kk", "final"), ("iii", "checkpoint")):
        [line] = (tmp_path / "lessons" / f"{sid}.jsonl").read_bytes().splitlines()
        assert json.loads(line) == {"v": 1, "kind": kind, "created_at": 1000.0 + len(sid), "saved_at": 1000.0,
                                    "record": record(sid)}, sid


def test_journals_found_at_start_are_matched_and_what_is_left_is_said(tmp_path: Path) -> None:
    """A lesson in progress found by its journal keeps its times; a copy of a lesson whose own journal is
    there too is set aside and reported; a delivered lesson whose journal is gone leaves quietly, a
    waiting one is reported lost."""
    from appliance.store.journal import encode_line, make_entry

    store = SessionStore(tmp_path)
    for sid in ("waiting", "delivered", "twin"):
        store.save(record(sid))
    store.mark_synced("delivered")
    store.close()
    lessons = tmp_path / "lessons"
    (lessons / "live.jsonl").write_bytes(encode_line(make_entry("checkpoint", {"session_id": "live", "turns": []},  # type: ignore[typeddict-item]
                                                                  10.0, 20.0)))
    (lessons / "twin copy.jsonl").write_bytes((lessons / "twin.jsonl").read_bytes())
    (lessons / "waiting.jsonl").unlink()
    (lessons / "delivered.jsonl").unlink()
    reopened = SessionStore(tmp_path)
    docs = {d["session_id"]: (d["state"], d["created_at"], d["saved_at"]) for d in reopened.documents()}
    assert docs["live"] == ("in_progress", 10.0, 20.0) and sorted(docs) == ["live", "twin"]
    [twin_aside] = [p.name for p in lessons.iterdir() if p.name.startswith("twin copy.jsonl.corrupt-")]
    assert reopened.problems == [
        f"lessons/twin copy.jsonl holds lesson twin stored elsewhere too; moved to {twin_aside}",
        "lesson waiting (pending) lost its journal file; it cannot be sent"]
    assert [d["session_id"] for d in json.loads((tmp_path / "sessions.json").read_text())["sessions"].values()] \
        == ["twin"]
    assert json.loads((tmp_path / "synced.json").read_text())["sessions"] == {}
