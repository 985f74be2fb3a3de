"""Commands that touch the lesson store while a kiosk runs on it: `sync` from the command line and the
`sessions` commands. The running kiosk owns its store; nothing else may write to it or repair it.

Each test runs a real daemon and the real command line in subprocesses, and compares every file of
the state directory (name, inode, size, modification time, bytes) before and after.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

from appliance.store.journal import encode_line, journal_name, make_entry
from appliance.store.sessions import SessionStore
from tests.daemon_helpers import running_daemon, write_daemon_config
from tests.harness import KIOSK_ID, earlier_lesson, lesson_stack

ROOT = Path(__file__).resolve().parent.parent
BEFORE = "0b0e5a1e-0000-4000-8000-000000000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(state_dir: Path) -> dict[str, tuple[int, int, int, bytes]]:
    """Every file under the state directory (the lock file aside): inode, size, mtime and content."""
    files = {}
    for path in sorted(state_dir.rglob("*")):
        if path.is_file() and path.name != "kiosk.lock":
            info = path.stat()
            files[str(path.relative_to(state_dir))] = (info.st_ino, info.st_size, info.st_mtime_ns, path.read_bytes())
    return files


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appliance.cli", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def offline_kiosk_config(path: Path, stack: object, state_dir: Path, sock: Path) -> Path:
    """The running kiosk's config: its companion is down, so its lessons stay waiting on its disk."""
    toml = write_daemon_config(path, stack, state_dir, sock)
    url = stack.companion.base_url  # type: ignore[attr-defined]
    toml.write_text(toml.read_text().replace(f'url = "{url}"', f'url = "http://127.0.0.1:{free_port()}"'))
    return toml


async def test_sync_never_opens_a_running_kiosks_store(tmp_path: Path) -> None:
    """`sync` whose config names another control socket than the running kiosk's (edited since it
    started): the socket does not answer, and `sync` used to open the kiosk's store without its lock,
    deliver its lessons and rewrite its index underneath it. Now it refuses and says why."""
    async with lesson_stack(tmp_path) as stack:
        stack.config()  # writes device.key
        state_dir = tmp_path / "state"
        SessionStore(state_dir).save(earlier_lesson(BEFORE))
        kiosk_toml = offline_kiosk_config(tmp_path / "kiosk.toml", stack, state_dir, tmp_path / "kiosk.sock")
        sync_toml = write_daemon_config(tmp_path / "edited.toml", stack, state_dir, tmp_path / "other.sock")
        async with running_daemon(kiosk_toml, tmp_path, watchdog_usec=None) as daemon:
            await daemon.ready()
            before = snapshot(state_dir)
            code, out, err = await cli("sync", "--config", str(sync_toml))
            assert code == 1, (out, err)
            assert "Traceback" not in err
            [line] = [line for line in err.splitlines() if line.strip()]
            assert "running" in line and str(state_dir) in line and str(tmp_path / "other.sock") in line, line
            assert snapshot(state_dir) == before
            assert await stack.companion.storage.sessions(KIOSK_ID) == []
            assert await daemon.stop() == 0
        # With the kiosk stopped, the same command syncs from here, under the lock.
        code, out, err = await cli("sync", "--config", str(sync_toml))
        assert code == 0, err
        assert [s["session_id"] for s in await stack.companion.storage.sessions(KIOSK_ID)] == [BEFORE]


async def test_sessions_commands_never_write_to_a_running_kiosks_store(tmp_path: Path) -> None:
    """`sessions list/show/export` opened the store as the kiosk does, repairs included: with a kiosk
    running, a lesson it had just finished (journal written, index entry not yet) made them rewrite
    the index, and a damaged journal was moved aside under it. Now they only read."""
    async with lesson_stack(tmp_path) as stack:
        stack.config()  # writes device.key
        state_dir = tmp_path / "state"
        SessionStore(state_dir).save(earlier_lesson(BEFORE))
        toml = offline_kiosk_config(tmp_path / "kiosk.toml", stack, state_dir, tmp_path / "kiosk.sock")
        async with running_daemon(toml, tmp_path, watchdog_usec=None) as daemon:
            await daemon.ready()
            # What the kiosk's store holds for an instant while it saves a lesson: the final journal,
            # before the index entry. And a journal damaged on the card.
            just_saved = {**earlier_lesson("5a7ed000-0000-4000-8000-000000000002"), "end_reason": "voice_stop"}
            lessons = state_dir / "lessons"
            (lessons / journal_name(just_saved["session_id"])).write_bytes(
                encode_line(make_entry("final", just_saved, 1.0, 2.0)))
            (lessons / "damaged.jsonl").write_bytes(b"\x00\x00 not a lesson\n")
            before = snapshot(state_dir)
            code, listing, err = await cli("sessions", "--config", str(toml), "list")
            assert code == 0, err
            assert BEFORE in listing and just_saved["session_id"] in listing
            assert "damaged.jsonl" in err and "Traceback" not in err, err
            code, shown, err = await cli("sessions", "--config", str(toml), "show", "5a7ed")
            assert code == 0 and "voice_stop" in shown, err
            code, exported, err = await cli("sessions", "--config", str(toml), "export")
            assert code == 0, err
            assert {json.loads(line)["session_id"] for line in exported.splitlines()} == {
                BEFORE, just_saved["session_id"]}
            assert snapshot(state_dir) == before
            assert await daemon.stop() == 0
