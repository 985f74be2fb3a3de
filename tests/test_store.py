"""The session store survives SIGKILL at any point of a write and never loses a saved session."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance.store import SessionStore, StoreError

WRITER = textwrap.dedent(
    """
    import os, sys, uuid
    from appliance.store import SessionStore
    store = SessionStore(sys.argv[1])
    padding = "x" * int(sys.argv[2])
    while True:
        sid = str(uuid.uuid4())
        store.save({"session_id": sid, "turns": [{"text": padding}]})
        # Only after save() returned is the session reported as saved.
        os.write(1, (sid + "\\n").encode())
    """
)


def record(sid: str, text: str = "hello") -> dict:
    return {"session_id": sid, "turns": [{"role": "learner", "text": text}]}


def test_save_get_sync_roundtrip(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(record("a"))
    store.save(record("b"))
    store.save(record("a", "changed"))  # same id: replaced, not duplicated
    assert len(store) == 2
    assert store.get("a")["turns"][0]["text"] == "changed"
    store.mark_synced("a")
    assert [r["session_id"] for r in store.unsynced()] == ["b"]
    store.close()
    reopened = SessionStore(tmp_path)
    assert reopened.is_synced("a") and not reopened.is_synced("b")


def test_corrupt_file_is_reported_and_kept(tmp_path: Path) -> None:
    (tmp_path / "sessions.json").write_text('{"sessions": {"1": ')
    with pytest.raises(StoreError, match="not valid JSON"):
        SessionStore(tmp_path)
    assert (tmp_path / "sessions.json").read_text() == '{"sessions": {"1": '


def test_read_only_directory_gives_store_error(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(record("kept"))
    if os.geteuid() == 0:
        # root ignores directory permissions: make the target a directory so the rename fails.
        (tmp_path / "sessions.json").unlink()
        (tmp_path / "sessions.json").mkdir()
        with pytest.raises(StoreError, match=r"cannot (read|write)"):
            store.save(record("new"))
    else:
        tmp_path.chmod(0o500)
        try:
            with pytest.raises(StoreError, match="cannot write"):
                store.save(record("new"))
        finally:
            tmp_path.chmod(0o700)


def test_sigkill_during_writes_never_corrupts(tmp_path: Path) -> None:
    """Kill a writer process at random moments; the store must open with every reported session."""
    rounds = int(os.environ.get("STELLA_KILL_ROUNDS", "200"))
    rng = random.Random(1234)
    reported: list[str] = []
    for i in range(rounds):
        # Growing and shrinking payloads exercise the "file shrinks" case that breaks in-place writes.
        padding = rng.choice([10, 2000, 50000])
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(padding)],
                                stdout=subprocess.PIPE)
        assert proc.stdout is not None
        # Wait for a random number of completed saves (an event, not a sleep), then kill mid-stream.
        for _ in range(rng.randint(1, 4)):
            line = proc.stdout.readline()
            if not line:
                break
            reported.append(line.decode().strip())
        os.kill(proc.pid, signal.SIGKILL)
        rest = proc.stdout.read()  # anything reported before the kill landed
        reported.extend(x for x in rest.decode().split("\n") if x.strip() and len(x.strip()) == 36)
        proc.wait()
        data = json.loads((tmp_path / "sessions.json").read_text())
        assert "sessions" in data, f"round {i}"
    store = SessionStore(tmp_path)
    ids = {r["session_id"] for r in store.records()}
    missing = [sid for sid in reported if sid not in ids]
    assert not missing, f"{len(missing)} reported sessions lost"
    assert len(reported) >= rounds
