"""A school year unattended: hostile server events in a live call, hang-ups that never return, a
wedged owner task, long uptime, a full disk at stop, two daemons on one store.

Every case asserts the end state — the kiosk idle again and the lesson kept — not just "no crash".
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.audio.health import MICROPHONE, DeviceHealth
from appliance.audio.wav import ScriptedMicrophone
from appliance.call.webrtc import RealtimeCall
from appliance.core.messages import Heartbeat
from appliance.core.state import State
from appliance.store.journal import LOST_LESSON_MARKER
from appliance.store.sessions import SessionStore, StoreError
from tests.daemon_helpers import FakeSystemd, control, control_ok, running_daemon, write_daemon_config
from tests.harness import Recorder, Stack, earlier_lesson, inject, lesson_stack, simulated_call
from tests.hostile_helpers import deep, event_like, json_values

ROOT = Path(__file__).resolve().parent.parent


class BugCatcher(logging.Handler):
    """Collects log records that carry a traceback from the kiosk's own code: a handler that raised."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.name.startswith("appliance"):
            self.records.append(record)

    def __enter__(self) -> BugCatcher:
        logging.getLogger("appliance").addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger("appliance").removeHandler(self)


def tutor_line(text: str, n: int) -> str:
    """A finished tutor transcript, JSON-escaped the way a server sends it (lone surrogates too)."""
    return json.dumps({"type": "response.output_audio_transcript.done", "event_id": f"event_t{n}",
                       "response_id": f"resp_t{n}", "item_id": f"item_t{n}", "output_index": 0,
                       "content_index": 0, "transcript": text})


async def tutor_says(stack: Stack, rec: Recorder, text: str, n: int) -> None:
    """The server sends a finished tutor transcript; wait until the kiosk has recorded the turn."""
    inject(stack, tutor_line(text, n))
    await rec.until(lambda: any(t.text == text for t in rec.turns), what=f"tutor turn {text!r}")


async def connected_lesson(stack: Stack, kiosk: Any, rec: Recorder, nth: int = 1) -> None:
    kiosk.press()
    await rec.until(lambda: rec.states.count(State.CONNECTED) >= nth, what="connected")


async def end_and_wait_saved(kiosk: Any, rec: Recorder, count: int) -> dict[str, Any]:
    kiosk.request_stop()
    await rec.until(lambda: len(rec.saved) >= count and kiosk.state is State.IDLE, timeout=20,
                    what="lesson saved and kiosk idle")
    return rec.saved[count - 1][0]


hostile_message = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    json_values.map(json.dumps),
    event_like.map(json.dumps),
    st.integers(100, 5000).map(deep),
)


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(hostile_message, min_size=5, max_size=40))
def test_hostile_server_events_in_a_live_call(messages: list[str | bytes]) -> None:
    """Random and hostile server events through the kiosk's handling of a live call: the call goes on,
    the tutor turns around them are recorded, the lesson is saved when it ends and the kiosk is idle
    and answers the next press. Nothing escapes a handler."""

    async def scenario(tmp: Path) -> None:
        async with lesson_stack(tmp) as stack, stack.kiosk() as (kiosk, rec, _mic):
            with BugCatcher() as bugs:
                await connected_lesson(stack, kiosk, rec)
                inject(stack, tutor_line("before the storm", 1))
                for message in messages:
                    inject(stack, message)
                await tutor_says(stack, rec, "after the storm", 2)
                record = await end_and_wait_saved(kiosk, rec, 1)
                texts = [t["text"] for t in record["turns"]]
                assert "before the storm" in texts and "after the storm" in texts
                assert record["end_reason"] == "stop_command"
                json.dumps(record, ensure_ascii=False).encode("utf-8")
                await connected_lesson(stack, kiosk, rec, nth=2)  # not wedged: the next lesson starts
                await end_and_wait_saved(kiosk, rec, 2)
                assert not bugs.records, [r.getMessage() for r in bugs.records]

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp)))


async def test_lone_surrogate_in_tutor_transcript_keeps_every_turn(tmp_path: Path) -> None:
    """Before: the save raised UnicodeEncodeError after the hang-up, the kiosk stayed "connected" and
    ignored every later press, and the last turns were lost."""
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        await connected_lesson(stack, kiosk, rec)
        lines = ["One \ud800 two", "Three", "Four \udfff", "Five"]
        for n, text in enumerate(lines):
            inject(stack, tutor_line(text, n))
        await rec.until(lambda: any(t.text == "Five" for t in rec.turns), what="all turns")
        record = await end_and_wait_saved(kiosk, rec, 1)
        texts = [t["text"] for t in record["turns"] if t["role"] == "tutor"]
        for expected in ("One \ufffd two", "Three", "Four \ufffd", "Five"):
            assert expected in texts
        store = SessionStore(tmp_path / "state")
        assert store.get(record["session_id"])["turns"] == record["turns"]
        await connected_lesson(stack, kiosk, rec, nth=2)
        assert kiosk.state is State.CONNECTED


async def test_deeply_nested_event_does_not_end_the_lesson(tmp_path: Path) -> None:
    """Before: RecursionError escaped the parser inside aiortc, the DTLS transport died and the lesson
    ended as an error."""
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        await connected_lesson(stack, kiosk, rec)
        inject(stack, deep(5000))
        await tutor_says(stack, rec, "still here", 1)
        assert kiosk.state is State.CONNECTED
        record = await end_and_wait_saved(kiosk, rec, 1)
        assert record["end_reason"] == "stop_command"
        assert not [e for e in record["errors"] if e["code"] == "call_dropped"]


class HangingCloseCall(RealtimeCall):
    """A call whose hang-up never returns (a peer that never answers the close)."""

    async def close(self) -> None:
        await super().close()
        await asyncio.Event().wait()


async def test_hang_up_that_never_returns_is_abandoned(tmp_path: Path) -> None:
    """Before: the owner task awaited call.close() without a timeout and the kiosk was wedged."""
    async with lesson_stack(tmp_path) as stack:
        config = stack.config()
        async with stack.kiosk(config) as (kiosk, rec, _mic):
            kiosk.parts.opener.call_factory = HangingCloseCall
            kiosk.close_timeout_s = 1.0
            await connected_lesson(stack, kiosk, rec)
            loop = asyncio.get_running_loop()
            started = loop.time()
            record = await end_and_wait_saved(kiosk, rec, 1)
            assert loop.time() - started < 8
            assert record["end_reason"] == "stop_command"
            await connected_lesson(stack, kiosk, rec, nth=2)


async def test_watchdog_pings_stop_when_the_owner_task_is_wedged(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog proves progress, not just a running loop: with the owner task stuck in a handler,
    no WATCHDOG=1 is sent (so systemd restarts the kiosk), while the event loop itself keeps running.
    Mutation seen failing: pinging after a missed heartbeat."""
    systemd = FakeSystemd(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(systemd.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # ping every 0.2 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        async with lesson_stack(tmp_path) as stack:
            config = stack.config()
            from appliance.audio.wav import NullSink, ScriptedMicrophone
            from appliance.daemon.assemble import build_kiosk
            from appliance.uplink.client import CompanionClient

            store = SessionStore(config.kiosk.state_dir)
            client = CompanionClient(config.companion.url, config.read_device_key(), config.kiosk.id)
            kiosk = build_kiosk(config, companion=client, store=store, mic=ScriptedMicrophone(), speaker=NullSink())
            runner = asyncio.create_task(kiosk.run())
            try:
                for _ in range(3):
                    await systemd.until(lambda m: m == "WATCHDOG=1", timeout=5)
                wedged = asyncio.Event()

                async def stuck(at: float) -> None:
                    wedged.set()
                    await asyncio.Event().wait()

                kiosk._on_press = stuck  # a handler that never returns, as a bug would
                missed = asyncio.Event()
                noticed = _OnLog("did not handle its heartbeat", missed.set)
                logging.getLogger("appliance.core.watchdog").addHandler(noticed)
                try:
                    kiosk.press()
                    await asyncio.wait_for(wedged.wait(), 5)
                    # A ping for a heartbeat handled just before the wedge may still arrive; once the
                    # watchdog has missed a heartbeat, no ping can be in flight any more.
                    await asyncio.wait_for(missed.wait(), 5)
                finally:
                    logging.getLogger("appliance.core.watchdog").removeHandler(noticed)
                _drain(systemd)
                loop_alive = 0
                # Observe 2 s (10 watchdog intervals): the loop keeps running, no ping is sent.
                deadline = asyncio.get_running_loop().time() + 2.0
                while asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.05)
                    loop_alive += 1
                    assert "WATCHDOG=1" not in _drain(systemd), "pinged while the owner task was wedged"
                assert loop_alive > 10  # the loop ran all along: only the owner was stuck
            finally:
                runner.cancel()
                await asyncio.gather(runner, return_exceptions=True)
                await client.aclose()
                store.close()
    finally:
        systemd.close()


class _OnLog(logging.Handler):
    """Calls ``action`` when a log message containing ``text`` is emitted (on the emitting thread)."""

    def __init__(self, text: str, action: Any) -> None:
        super().__init__(logging.DEBUG)
        self.text, self.action = text, action

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.action()


def _drain(systemd: FakeSystemd) -> list[str]:
    """Datagrams waiting on the fake NOTIFY_SOCKET, read without blocking."""
    received = []
    while True:
        try:
            received.append(systemd.sock.recv(4096).decode())
        except BlockingIOError:
            return received


async def test_long_uptime_keeps_timers_and_history_bounded(tmp_path: Path) -> None:
    """Before: every fired timer handle and every full saved record stayed in memory for ever.
    Mutation seen failing: a fired timer not removed from the map."""
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        for n in range(1, 7):
            await connected_lesson(stack, kiosk, rec, nth=n)
            await tutor_says(stack, rec, f"lesson {n}", n)
            kiosk.press()  # a short press of the button: the long-press timer is armed and then fires
            await end_and_wait_saved(kiosk, rec, n)
        # The last press's long-press timer fires long_press_s after it; fired timers must leave the map.
        async with asyncio.timeout(kiosk.config.button.long_press_s + 5):
            while "conversation:long_press" in kiosk.timers:
                await asyncio.sleep(0.05)
        assert kiosk.lessons_saved_count == 6
        assert len(kiosk.lessons_saved) == 3
        assert len(kiosk.timers) <= 2, list(kiosk.timers)
        assert len(kiosk.status()["recent_lessons"]) == 3


@pytest.fixture
def tiny_disk(tmp_path: Path):
    """A 512 KiB tmpfs: a real file system that really fills up."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(disk: Path) -> None:
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # ENOSPC: the disk is full
    finally:
        os.close(fd)


async def test_disk_full_at_stop_sends_the_lesson_to_the_companion(tmp_path: Path, tiny_disk: Path) -> None:
    """Before: "1 lesson(s) … lost at exit" although the companion was reachable, and `status` said
    outbox 0 meanwhile. Now the lesson is counted as held in memory and reaches the companion."""
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(kiosk={"state_dir": str(tiny_disk / "state")})
        async with stack.kiosk(config) as (kiosk, rec, _mic):
            kiosk.exit_save_budget_s = 1.0
            await connected_lesson(stack, kiosk, rec)
            fill(tiny_disk)
            await tutor_says(stack, rec, "on a full disk", 1)
            kiosk.request_stop()
            await rec.until(lambda: State.ERROR in rec.states, what="error shown")
            assert kiosk.status()["held_in_memory"] == 1
            session_id = kiosk.status()["recent_lessons"][-1]["session_id"]
        stored = await stack.companion.storage.sessions("kiosk-test")
        assert [r["session_id"] for r in stored] == [session_id]
        assert any(t["text"] == "on a full disk" for t in stored[0]["turns"])


async def test_disk_full_and_no_companion_at_stop_goes_to_the_journal_and_imports_back(
        tmp_path: Path, tiny_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With neither the disk nor the companion, the lesson is written into the log as one line, and
    `stella-kiosk sessions import` puts it back in the store, from where it syncs."""
    caplog.set_level(logging.INFO)
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(kiosk={"state_dir": str(tiny_disk / "state")})
        async with stack.kiosk(config) as (kiosk, rec, _mic):
            kiosk.exit_save_budget_s = 1.0
            await connected_lesson(stack, kiosk, rec)
            fill(tiny_disk)
            await tutor_says(stack, rec, "nowhere to go", 1)
            await stack.companion.stop()
            kiosk.request_stop()
            await rec.until(lambda: State.ERROR in rec.states, what="error shown")
        lines = [r.getMessage() for r in caplog.records if LOST_LESSON_MARKER in r.getMessage()]
        assert len(lines) == 1 and "nowhere to go" in lines[0]
        # The journal's text, as `journalctl -o cat` prints it, imported into a store on a good disk.
        journal = tmp_path / "journal.txt"
        journal.write_text("some other line\n" + "\n".join(lines) + "\n")
        toml = write_daemon_config(tmp_path / "kiosk.toml", stack, tmp_path / "restored", tmp_path / "c.sock")
        result = subprocess.run([sys.executable, "-m", "appliance.cli", "sessions", "--config", str(toml),
                                 "import", str(journal)], capture_output=True, text=True, timeout=60,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.returncode == 0, result.stderr
        assert "imported 1 lesson(s)" in result.stdout
        restored = SessionStore(tmp_path / "restored").unsynced()
        assert len(restored) == 1 and any(t["text"] == "nowhere to go" for t in restored[0]["turns"])


async def test_second_daemon_on_the_same_store_refuses_to_start(tmp_path: Path) -> None:
    """Before: both ran, the second silently unlinked the first one's control socket, both wrote the
    same store."""
    async with lesson_stack(tmp_path) as stack:
        stack.config()  # writes device.key
        toml = write_daemon_config(tmp_path / "kiosk.toml", stack, tmp_path / "state", tmp_path / "c.sock")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        async with running_daemon(toml, tmp_path, watchdog_usec=None) as first:
            await first.ready()
            second = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "appliance.cli", "run", "--config", str(toml), env=env,
                stderr=asyncio.subprocess.PIPE)
            try:
                _, err = await asyncio.wait_for(second.communicate(), 30)
            finally:
                if second.returncode is None:
                    second.kill()
                    await second.wait()
            assert second.returncode == 78
            lines = [line for line in err.decode().splitlines() if line.strip()]
            assert any("already running" in line for line in lines), lines
            assert "Traceback" not in err.decode()
            assert "state:   idle" in await control_ok(tmp_path / "c.sock", "status")  # the first still answers
            assert await first.stop() == 0


class FailingSaveStore(SessionStore):
    """A store whose finished-lesson writes fail as on a broken card (checkpoints still work)."""

    def save(self, record: dict[str, Any]) -> None:
        raise StoreError("cannot write: Input/output error")


async def test_status_counts_lessons_held_in_memory(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:
        config = stack.config()
        from appliance.audio.wav import NullSink, ScriptedMicrophone
        from appliance.daemon.assemble import build_kiosk
        from appliance.uplink.client import CompanionClient

        store = FailingSaveStore(config.kiosk.state_dir)
        client = CompanionClient(config.companion.url, config.read_device_key(), config.kiosk.id)
        rec = Recorder()
        kiosk = build_kiosk(config, companion=client, store=store, mic=ScriptedMicrophone(), speaker=NullSink(),
                      observer=rec)
        kiosk.exit_save_budget_s = 0.5
        ready = asyncio.Event()
        runner = asyncio.create_task(kiosk.run(ready))
        await asyncio.wait_for(ready.wait(), 10)
        try:
            await connected_lesson(stack, kiosk, rec)
            kiosk.request_stop()
            await rec.until(lambda: State.ERROR in rec.states, what="error")
            assert kiosk.status()["held_in_memory"] == 1
            await rec.until(lambda: kiosk.state is State.IDLE, what="back to idle after the error")
            await connected_lesson(stack, kiosk, rec, nth=2)  # the kiosk still takes lessons
            kiosk.request_stop()
            await rec.until(lambda: kiosk.status()["held_in_memory"] == 2, what="two held")
        finally:
            kiosk.shutdown()
            await asyncio.wait_for(runner, 30)
            await client.aclose()
        # At stop both went to the companion, which was reachable.
        assert len(await stack.companion.storage.sessions("kiosk-test")) == 2


async def test_damaged_store_never_stops_the_daemon(tmp_path: Path) -> None:
    """Before: READY sent but no control socket and SIGTERM ignored, a dead sync task, or exit 1 on
    every start (a restart loop). Now the damaged file is moved aside, the daemon starts on a repaired
    store, says so in `status`, at CRITICAL and in `doctor`, sends what was salvaged, saves new lessons and
    stops cleanly on SIGTERM.

    One damage through the real daemon: sessions.json cut off by a power cut in the middle of a write,
    after one whole lesson (the store's own tests take every kind of damage, in tests/test_store.py).
    """
    async with lesson_stack(tmp_path) as stack:
        stack.config()  # writes device.key
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        salvaged = "0b0e5a1e-0000-4000-8000-00000000beef"
        whole = {"session_id": salvaged, "state": "pending", "created_at": 1000.0, "saved_at": 1000.0,
                 "record": earlier_lesson(salvaged)}
        text = json.dumps({"sessions": {"1": whole, "2": {"session_id": "cut-off", "state": "pending"}}})
        content = text[:text.index('"cut-off"') + 4].encode()  # the second document cut off mid-write
        (state_dir / "sessions.json").write_bytes(content)
        sock = tmp_path / "c.sock"
        toml = write_daemon_config(tmp_path / "kiosk.toml", stack, state_dir, sock)
        async with running_daemon(toml, tmp_path) as daemon:
            systemd = daemon.systemd
            await daemon.ready()
            await systemd.until(lambda m: m == "WATCHDOG=1", timeout=10)
            out = await control_ok(sock, "status")
            assert "state:   idle" in out
            [aside] = state_dir.glob("sessions.json.corrupt-*")
            assert aside.read_bytes() == content
            assert f"store:   sessions.json was damaged (not JSON (truncated or garbage)); moved to {aside.name}" \
                in out, out
            await control_ok(sock, "press")  # and it still runs lessons
            await systemd.until(lambda m: m.startswith("STATUS=connected"), timeout=30)
            await control_ok(sock, "stop")
            await systemd.until(lambda m: m.startswith("STATUS=idle"), timeout=30)
            sync = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "appliance.cli", "sync", "--config",
                                                            str(toml)], capture_output=True, text=True, timeout=90,
                                           env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert sync.returncode == 0 and "outbox: 0" in sync.stdout, (sync.stdout, sync.stderr)
            assert await daemon.stop() == 0
        assert "Traceback" not in daemon.stderr and "never retrieved" not in daemon.stderr, daemon.stderr
        assert any("CRITICAL" in line and aside.name in line for line in daemon.stderr.splitlines()), daemon.stderr
        delivered = {s["session_id"]: s["end_reason"] for s in await stack.companion.storage.sessions("kiosk-test")}
        assert delivered.pop(salvaged) == "button"  # what the damaged file still held reached the companion
        assert list(delivered.values()) == ["stop_command"]  # and so did the lesson given after the repair
        assert {d["state"] for d in SessionStore(state_dir).documents()} == {"synced"}
        # On a thread: the companion the doctor asks runs on this loop.
        doctor = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "appliance.cli", "doctor", "--config",
                                                          str(toml), "--no-hardware", "--button-timeout", "0"],
                                         capture_output=True, text=True, timeout=60,
                                         env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert "moved aside" in doctor.stdout and aside.name in doctor.stdout, doctor.stdout
        assert "PASS  companion health" in doctor.stdout, doctor.stdout


@pytest.mark.parametrize("name", ["sessions.json", "synced.json", "lessons"])
async def test_an_obstruction_in_the_store_never_stops_the_daemon(tmp_path: Path, name: str) -> None:
    """``sessions.json`` (or ``synced.json``) a directory, or ``lessons`` a regular file. Before: exit 1
    at every start, so systemd's start limit (5 in 300 s) stopped the kiosk for good. Now the daemon
    starts, keeps the obstruction aside under a name that says why (never deleted), reports it in
    `status` and at CRITICAL, and saves new lessons; lessons saved before are kept."""
    async with lesson_stack(tmp_path) as stack:
        stack.config()  # writes device.key
        state_dir = tmp_path / "state"
        before = "0b0e5a1e-0000-4000-8000-000000000001"
        SessionStore(state_dir).save(earlier_lesson(before))
        obstruction = state_dir / name
        if name == "lessons":
            shutil.rmtree(obstruction)
            obstruction.write_text("a teacher's notes\n")
        else:
            obstruction.unlink(missing_ok=True)
            obstruction.mkdir()
            (obstruction / "notes.txt").write_text("a teacher's notes\n")
        sock = tmp_path / "c.sock"
        toml = write_daemon_config(tmp_path / "kiosk.toml", stack, state_dir, sock)
        async with running_daemon(toml, tmp_path) as daemon:
            systemd = daemon.systemd
            await daemon.ready()
            code, out, err = await control(sock, "status")
            assert code == 0, err
            assert "state:   idle" in out
            [moved] = state_dir.glob(f"{name}.not-a-*")
            assert f"store:   {name} " in out and moved.name in out, out
            kept = moved if name == "lessons" else moved / "notes.txt"
            assert kept.read_text() == "a teacher's notes\n"
            assert (await control(sock, "press"))[0] == 0
            await systemd.until(lambda m: m.startswith("STATUS=connected"), timeout=30)
            assert (await control(sock, "stop"))[0] == 0
            await systemd.until(lambda m: m.startswith("STATUS=idle"), timeout=30)
            assert await daemon.stop() == 0
        assert "Traceback" not in daemon.stderr, daemon.stderr
        assert any("CRITICAL" in line and moved.name in line for line in daemon.stderr.splitlines()), daemon.stderr
        store = SessionStore(state_dir)
        reasons = {d["record"]["end_reason"] for d in store.documents()}
        assert "stop_command" in reasons  # the new lesson was saved
        if name != "lessons":  # its journal was there all along
            assert store.get(before) is not None
        assert kept.read_text() == "a teacher's notes\n"


async def test_frozen_server_is_shown_within_5_s_and_the_lesson_resumes(tmp_path: Path) -> None:
    """Before: a frozen server left the kiosk "connected" for 33.6 s, then the lesson ended with the
    normal end cue. Now the drop shows within 5 s (the disconnected state: error LED and cue) and the
    same lesson goes on on a new call whose instructions carry the conversation so far."""
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        await connected_lesson(stack, kiosk, rec)
        inject(stack, tutor_line("Let us talk about your favourite fruit.", 1))
        kiosk.say("I like green apples")
        await rec.until(lambda: any(t.text == "I like green apples" for t in rec.turns), what="typed turn")
        first_call = simulated_call(stack)
        loop = asyncio.get_running_loop()
        frozen_at = loop.time()
        stack.simulator.freeze_calls()
        await rec.until(lambda: State.DISCONNECTED in rec.states, timeout=10, what="drop shown")
        assert loop.time() - frozen_at <= 5.0
        await rec.until(lambda: rec.states.count(State.CONNECTED) >= 2, timeout=20, what="resumed")
        resumed_call = simulated_call(stack)
        assert resumed_call is not first_call
        async with asyncio.timeout(10):
            while "green apples" not in str(resumed_call.session.get("instructions")):
                await asyncio.sleep(0.05)
        instructions = resumed_call.session["instructions"]
        assert "Let us talk about your favourite fruit." in instructions
        inject(stack, tutor_line("Sorry, where were we? Green apples!", 9))
        await rec.until(lambda: any("where were we" in t.text for t in rec.turns), what="turn on the new call")
        record = await end_and_wait_saved(kiosk, rec, 1)
        assert len(rec.saved) == 1  # one lesson, not two
        texts = [t["text"] for t in record["turns"]]
        assert "I like green apples" in texts and "Sorry, where were we? Green apples!" in texts
        assert record["end_reason"] == "stop_command"
        assert [e["code"] for e in record["errors"]].count("call_dropped") == 1


async def test_lesson_is_saved_as_call_dropped_when_resuming_fails(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        await connected_lesson(stack, kiosk, rec)
        await tutor_says(stack, rec, "Hello there", 1)
        stack.simulator.refuse_calls = True
        stack.simulator.freeze_calls()
        await rec.until(lambda: len(rec.saved) == 1, timeout=30, what="lesson saved")
        record = rec.saved[0][0]
        assert record["end_reason"] == "call_dropped"
        assert "Hello there" in [t["text"] for t in record["turns"]]
        codes = [e["code"] for e in record["errors"]]
        assert "call_dropped" in codes and "resume_failed" in codes
        await rec.until(lambda: kiosk.state is State.IDLE, timeout=10, what="idle after the error")
        assert rec.states[-3:] == [State.DISCONNECTED, State.ERROR, State.IDLE]
        stack.simulator.refuse_calls = False
        await connected_lesson(stack, kiosk, rec, nth=2)  # the next lesson works again


async def test_companion_request_log_is_bounded(tmp_path: Path) -> None:
    """Before: the companion kept (method, path) of every request it ever served."""
    import httpx

    from appliance.companion.server import REQUEST_LOG_SIZE

    async with lesson_stack(tmp_path) as stack:
        async with httpx.AsyncClient(base_url=stack.companion.base_url) as http:
            for _ in range(REQUEST_LOG_SIZE + 50):
                assert (await http.get("/api/health")).status_code == 200
        assert len(stack.companion.requests) == REQUEST_LOG_SIZE
        assert list(stack.companion.requests)[-1] == ("GET", "/api/health")


class VanishingMicrophone(ScriptedMicrophone):
    """A scripted microphone whose device can be pulled and plugged back, reported from a thread as the
    PortAudio backend's watch thread does."""

    def __init__(self) -> None:
        super().__init__()
        self.health = DeviceHealth(MICROPHONE)

    def set_health_callback(self, callback: Any) -> None:
        self.health.set_callback(callback)

    @property
    def healthy(self) -> bool:  # type: ignore[override]
        return self.health.healthy

    @property
    def problem(self) -> str | None:  # type: ignore[override]
        return self.health.problem

    def pull(self) -> None:
        threading.Thread(target=self.health.failed, args=("stream stopped (device removed)",)).start()

    def plug(self) -> None:
        threading.Thread(target=self.health.recovered, args=("reopened 'USB Audio'",)).start()


async def handled(kiosk: Any) -> None:
    """Wait until the owner task has handled everything posted so far (a heartbeat goes round its queue)."""
    mark = kiosk._watchdog.last_handled + 1_000_000
    kiosk.post(Heartbeat(mark))
    async with asyncio.timeout(10):
        while kiosk._watchdog.last_handled < mark:
            await asyncio.sleep(0.01)


async def test_microphone_lost_mid_lesson_saves_it_and_waits_for_the_device(tmp_path: Path) -> None:
    """A microphone that disappears mid-lesson ends the lesson saved and shown as an error; presses
    give the error cue until the device is back; then lessons work again without a restart."""
    async with lesson_stack(tmp_path) as stack:
        mic = VanishingMicrophone()
        async with stack.kiosk(mic=mic) as (kiosk, rec, _mic):
            await connected_lesson(stack, kiosk, rec)
            await tutor_says(stack, rec, "Can you hear me?", 1)
            mic.pull()
            await rec.until(lambda: len(rec.saved) == 1, what="lesson saved")
            record = rec.saved[0][0]
            assert record["end_reason"] == "error"
            assert any(e["code"] == "device_lost" and "microphone" in e["message"] for e in record["errors"])
            assert kiosk.state is State.DEVICE_MISSING
            assert "microphone" in kiosk.status()["devices"]
            kiosk.press()  # no lesson without a microphone
            await handled(kiosk)
            assert kiosk.state is State.DEVICE_MISSING and kiosk.lesson is None
            mic.plug()
            await rec.until(lambda: kiosk.state is State.IDLE, what="idle once the microphone is back")
            assert kiosk.status()["devices"] == {}
            await connected_lesson(stack, kiosk, rec, nth=2)


class LateMicrophone(ScriptedMicrophone):
    """A microphone whose card appears only after the kiosk started (USB enumeration after boot)."""

    def __init__(self, fail_starts: int) -> None:
        super().__init__()
        self.fail_starts = fail_starts
        self.starts = 0

    async def start(self) -> None:
        self.starts += 1
        if self.starts <= self.fail_starts:
            raise OSError("no input device matches 'USB' (devices present: 'pulse')")
        await super().start()


async def test_microphone_missing_at_start_is_shown_and_started_when_it_appears(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:
        mic = LateMicrophone(fail_starts=2)
        async with stack.kiosk(mic=mic) as (kiosk, rec, _mic):
            await handled(kiosk)
            assert kiosk.state is State.DEVICE_MISSING
            assert "no input device matches" in kiosk.status()["devices"]["microphone"]
            await rec.until(lambda: kiosk.state is State.IDLE, timeout=20, what="idle once the microphone starts")
            assert mic.starts == 3 and kiosk.status()["devices"] == {}
            await connected_lesson(stack, kiosk, rec)
