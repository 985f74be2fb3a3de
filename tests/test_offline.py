"""Never lose a lesson: prefetch, offline outbox with backoff, and recovery after a SIGKILL."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from pathlib import Path

import pytest

from appliance.companion.server import CompanionConfig, CompanionServer
from appliance.core.state import State
from appliance.daemon.preflight import write_key_file
from appliance.store.sessions import SessionStore
from appliance.uplink.client import CompanionClient
from appliance.uplink.sync import Syncer
from tests.daemon_helpers import control_ok, running_daemon, write_daemon_config
from tests.harness import API_KEY, KIOSK_ID, lesson_stack, numbered_lesson

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_prefetched_press_skips_the_companion(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        assert kiosk.parts.opener.prefetcher is not None
        await asyncio.wait_for(kiosk.parts.opener.prefetcher.filled.wait(), 10)
        before = list(stack.companion.requests)
        assert before.count(("POST", "/api/realtime-token")) == 1
        kiosk.press()
        await rec.until(lambda: State.CONNECTED in rec.states)
        assert list(stack.companion.requests) == before, "the press went to the companion"
        kiosk.press()
        await rec.until(lambda: bool(rec.saved))
        # After the lesson the next plan + token are fetched for the next press.
        await asyncio.wait_for(kiosk.parts.opener.prefetcher.filled.wait(), 10)
        assert stack.companion.requests.count(("POST", "/api/realtime-token")) == 2


async def test_outbox_survives_a_companion_outage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="appliance.uplink.sync")
    port = free_port()
    store = SessionStore(tmp_path / "state")
    records = [numbered_lesson(i) for i in range(20)]
    for r in records:
        store.save(r)
    key = "device-key-0123456789abcdef"
    client = CompanionClient(f"http://127.0.0.1:{port}", key, KIOSK_ID, timeout_s=2)
    syncer = Syncer(store, client, batch_size=7, base_backoff_s=0.05, max_backoff_s=0.4)
    task = asyncio.create_task(syncer.run())
    try:
        syncer.kick()
        # The companion is down: attempts fail and back off, nothing is lost.
        async with asyncio.timeout(10):
            while syncer.failures < 4:
                syncer.round_done.clear()
                await syncer.round_done.wait()
        assert len(store.unsynced()) == 20
        assert "sync: will retry in" in caplog.text
        companion = CompanionServer(CompanionConfig(port=port, db_path=tmp_path / "c.db", openai_api_key=API_KEY))
        await companion.start()
        await companion.provision(KIOSK_ID, key)
        try:
            await asyncio.wait_for(syncer.idle.wait(), 10)
            stored = await companion.storage.sessions(KIOSK_ID)
            assert [r["session_id"] for r in stored] == [r["session_id"] for r in records]  # once, in order
            assert store.unsynced() == []
            batches = [p for m, p in companion.requests if p == "/api/sessions/batch"]
            assert len(batches) == 3
            # Sending again (a batch that was interrupted half-way) stores nothing twice.
            results = await client.send_batch(records[:5])
            assert all(r["stored"] for r in results) and len(await companion.storage.sessions(KIOSK_ID)) == 20
        finally:
            await companion.stop()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()


async def test_a_journal_under_another_name_is_still_sent(tmp_path: Path) -> None:
    """Before: a journal renamed (e.g. restored from a copy) was moved aside as damaged and its lesson
    never sent: the companion got 5 of 6."""
    async with lesson_stack(tmp_path) as stack:
        state_dir = tmp_path / "state"
        store = SessionStore(state_dir)
        records = [numbered_lesson(i) for i in range(6)]
        for r in records:
            store.save(r)
        store.close()
        renamed = records[2]["session_id"]
        (state_dir / "lessons" / f"{renamed}.jsonl").rename(state_dir / "lessons" / "from-backup.jsonl")
        store = SessionStore(state_dir)
        client = CompanionClient(stack.companion.base_url, stack.device_key, KIOSK_ID)
        try:
            assert await Syncer(store, client).drain()
        finally:
            await client.aclose()
        stored = await stack.companion.storage.sessions(KIOSK_ID)
        assert sorted(s["session_id"] for s in stored) == sorted(r["session_id"] for r in records)
        assert store.unsynced() == [] and store.problems == []
        assert not list(state_dir.rglob("*.corrupt-*"))


async def test_invalid_record_is_parked_not_retried(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:
        store = SessionStore(tmp_path / "state")
        good, bad = numbered_lesson(1), {**numbered_lesson(2), "end_reason": "meteor"}
        store.save(good)
        store.save(bad)
        client = CompanionClient(stack.companion.base_url, stack.device_key, KIOSK_ID)
        assert await Syncer(store, client).drain()
        await client.aclose()
        assert store.state_of(good["session_id"]) == "synced"
        assert store.state_of(bad["session_id"]) == "parked"
        assert "end_reason" in store.parked()[0][1]


async def test_sigkill_mid_lesson_keeps_completed_turns(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:
        stack.config()  # writes device.key
        state_dir = tmp_path / "state"
        sock = tmp_path / "control.sock"
        toml = write_daemon_config(tmp_path / "kiosk.toml", stack, state_dir, sock)
        (tmp_path / "first").mkdir()
        (tmp_path / "second").mkdir()

        async with running_daemon(toml, tmp_path / "first", watchdog_usec=None) as daemon:
            await daemon.ready()
            await control_ok(sock, "press")
            await daemon.systemd.until(lambda m: m.startswith("STATUS=connected"))
            await control_ok(sock, "say", "I like green apples")
            # Wait until the typed turn and the tutor's answer are checkpointed on disk.
            async with asyncio.timeout(20):
                while True:
                    # The newest checkpoint line of the lesson's journal (one line per completed turn).
                    text = "".join(p.read_text().split("\n")[-2:][0] for p in (state_dir / "lessons").glob("*.jsonl"))
                    if "I like green apples" in text and text.count('"role":"tutor"') >= 2:
                        break
                    await asyncio.sleep(0.05)  # polling a file another process writes
            daemon.proc.send_signal(signal.SIGKILL)
            assert await daemon.proc.wait() == -signal.SIGKILL
        [kept] = SessionStore(state_dir).documents()
        assert kept["state"] == "in_progress"

        # Restart: the lesson is closed as interrupted and delivered to the companion.
        async with running_daemon(toml, tmp_path / "second", watchdog_usec=None) as daemon:
            await daemon.ready()
            async with asyncio.timeout(20):
                while not await stack.companion.storage.sessions(KIOSK_ID):
                    await asyncio.sleep(0.05)  # polling the companion's database
            assert await daemon.stop() == 0
        [delivered] = await stack.companion.storage.sessions(KIOSK_ID)
        assert delivered["session_id"] == kept["session_id"]
        assert delivered["end_reason"] == "interrupted"
        texts = [t["text"] for t in delivered["turns"]]
        assert "I like green apples" in texts and len(texts) >= 3


def test_retention_never_deletes_unsynced(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Checks WHICH lessons go, not only how many: synced ones past the retention first, then the
    oldest synced ones (by lesson age, whatever order they were delivered in), never an unsynced one."""
    now = [1_000_000.0]
    store = SessionStore(tmp_path, clock=lambda: now[0], synced=lambda: True)  # a clock synchronized throughout
    records = [numbered_lesson(i) for i in range(12)]
    ids = [r["session_id"] for r in records]
    for r in records:
        now[0] += 60  # lessons 0..11 from oldest to newest
        store.save(r)
    store.mark_synced(ids[0])
    now[0] += 40 * 86400
    for sid in reversed(ids[1:6]):  # delivered newest first: delivery order must not decide
        now[0] += 1
        store.mark_synced(sid)

    def left() -> list[str]:
        return sorted((r["session_id"] for r in store.records()), key=ids.index)

    # Synced lessons older than the retention go; pending ones stay whatever their age.
    assert store.apply_retention(keep_synced_days=30, max_lessons=100) == 1
    assert left() == ids[1:]
    # Over the cap: oldest synced first, never the unsynced; a cap below the unsynced count is reported.
    assert store.apply_retention(keep_synced_days=30, max_lessons=8) == 3
    assert left() == ids[4:]
    assert store.apply_retention(keep_synced_days=30, max_lessons=4) == 2
    assert left() == ids[6:] and sorted(r["session_id"] for r in store.unsynced()) == sorted(ids[6:])
    assert "session store is full" in caplog.text
    assert left() == sorted((r["session_id"] for r in SessionStore(tmp_path).records()), key=ids.index)


async def test_unwritable_store_keeps_the_lesson_and_retries(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        kiosk.save_retry_s = 0.2
        kiosk.press()
        await rec.until(lambda: State.CONNECTED in rec.states)
        store_file = tmp_path / "state" / "sessions.json"
        store_file.rename(tmp_path / "state" / "moved.json")
        store_file.mkdir()  # the store can be neither read nor written now
        kiosk.press()
        await rec.until(lambda: State.ERROR in rec.states, what="error shown")
        assert not rec.saved
        store_file.rmdir()
        (tmp_path / "state" / "moved.json").rename(store_file)
        await rec.until(lambda: bool(rec.saved), what="saved after the retry")
        record_, synced = rec.saved[0]
        assert synced and record_["end_reason"] == "button"
        assert SessionStore(tmp_path / "state").is_synced(record_["session_id"])


async def test_companion_killed_while_the_outbox_drains(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SIGKILL the companion process after its first stored batch; restart it; nothing is lost or doubled."""
    import sqlite3

    from appliance.daemon.services import ChildServer

    caplog.set_level(logging.INFO, logger="appliance.uplink.sync")
    port, db, key = free_port(), tmp_path / "c.db", "device-key-0123456789abcdef"
    provision = tmp_path / "provision.txt"
    write_key_file(provision, f"{KIOSK_ID}={key}")
    args = ["companion", "serve", "--port", str(port), "--db", str(db), "--provision-file", str(provision)]
    env = {"OPENAI_API_KEY": API_KEY, "PYTHONPATH": str(ROOT)}

    def stored_ids() -> list[str]:
        if not db.exists():
            return []
        with sqlite3.connect(db) as conn:
            return [row[0] for row in conn.execute("SELECT session_id FROM sessions ORDER BY seq")]

    store = SessionStore(tmp_path / "state")
    records = [numbered_lesson(i) for i in range(20)]
    for r in records:
        store.save(r)
    companion = ChildServer("companion", args, tmp_path / "c1.log", env=env)
    await companion.start()
    client = CompanionClient(f"http://127.0.0.1:{port}", key, KIOSK_ID, timeout_s=2)
    syncer = Syncer(store, client, batch_size=4, base_backoff_s=0.05, max_backoff_s=0.3)
    task = asyncio.create_task(syncer.run())
    try:
        syncer.kick()
        async with asyncio.timeout(10):
            while not stored_ids():
                await asyncio.sleep(0.005)  # watching another process's database
        assert companion.process is not None
        companion.process.kill()  # SIGKILL, mid-drain
        await companion.process.wait()
        async with asyncio.timeout(10):
            while syncer.failures < 2:
                syncer.round_done.clear()
                await syncer.round_done.wait()
        assert len(store.unsynced()) > 0
        restarted = ChildServer("companion", args, tmp_path / "c2.log", env=env)
        await restarted.start()
        try:
            await asyncio.wait_for(syncer.idle.wait(), 15)
        finally:
            await restarted.stop()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
    assert stored_ids() == [r["session_id"] for r in records]
    assert store.unsynced() == []
    assert "sync: will retry in" in caplog.text


async def test_prefetch_retries_until_the_companion_is_back(tmp_path: Path) -> None:
    from appliance.uplink.prefetch import Prefetcher

    port, key = free_port(), "device-key-0123456789abcdef"
    client = CompanionClient(f"http://127.0.0.1:{port}", key, KIOSK_ID, timeout_s=1)
    async with lesson_stack(tmp_path) as stack:
        prefetcher = Prefetcher(client, "A2", retry_base_s=0.05, retry_max_s=0.2)
        task = asyncio.create_task(prefetcher.run())
        try:
            async with asyncio.timeout(10):
                while prefetcher.failures < 3:  # the companion is down: retries with backoff
                    await asyncio.sleep(0.02)
            companion = CompanionServer(CompanionConfig(port=port, db_path=tmp_path / "p.db",
                                                        openai_base_url=stack.simulator.base_url,
                                                        openai_api_key=API_KEY))
            await companion.start()
            await companion.provision(KIOSK_ID, key)
            try:
                await asyncio.wait_for(prefetcher.filled.wait(), 10)
                plan, token = prefetcher.take()
                assert token.token.startswith("ek_") and plan.targets
            finally:
                await companion.stop()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.aclose()


async def test_sync_now_command_without_a_running_kiosk(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:
        stack.config()  # device.key
        config = write_daemon_config(tmp_path / "kiosk.toml", stack, tmp_path / "state", tmp_path / "control.sock")
        store = SessionStore(tmp_path / "state")
        store.save(numbered_lesson(1))
        store.close()

        async def sync_now() -> tuple[int, str]:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "appliance.cli", "sync", "--now", "--config", str(config),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            return proc.returncode or 0, out.decode() + err.decode()

        code, out = await sync_now()  # no kiosk running: syncs from the command itself
        assert code == 0 and "outbox: 0" in out
        assert len(await stack.companion.storage.sessions(KIOSK_ID)) == 1


def test_expiring_prefetched_token_is_not_used() -> None:
    from appliance.uplink.client import LessonPlan, RealtimeToken
    from appliance.uplink.prefetch import Prefetcher

    now = [1000.0]  # the kiosk's monotonic clock: token deadlines are on it, whatever the wall clock says
    prefetcher = Prefetcher(None, "A2", usable_margin_s=20, monotonic=lambda: now[0])  # type: ignore[arg-type]
    plan = LessonPlan("plan_1", "t", ())
    prefetcher._ready = (plan, RealtimeToken("ek_x", 0.0, "m", "v", deadline=1015.0))  # 15 s left: too late
    assert prefetcher.take() is None
    fresh = (plan, RealtimeToken("ek_x", 0.0, "m", "v", deadline=1100.0))
    prefetcher._ready = fresh
    assert prefetcher.take() == fresh
    assert prefetcher.take() is None  # each pair serves one lesson


async def test_retention_runs_at_start_up(tmp_path: Path) -> None:
    """A kiosk that starts over a store with lessons synced long ago deletes them before its first
    lesson (the unsynced one stays). Mutation seen failing: retention only after a lesson."""
    import time as _time

    async with lesson_stack(tmp_path) as stack:
        config = stack.config(kiosk={"keep_synced_days": 30}, companion={"url": "http://127.0.0.1:9"})
        past = _time.time() - 40 * 86400
        old = SessionStore(config.kiosk.state_dir, clock=lambda: past, synced=lambda: True)
        records = [numbered_lesson(i) for i in range(3)]
        for r in records:
            old.save(r)
        old.mark_synced(records[0]["session_id"])
        old.mark_synced(records[1]["session_id"])
        old.close()
        # The kiosk's clock is synchronized (ages count only then), whatever this machine's kernel says.
        store = SessionStore(config.kiosk.state_dir, synced=lambda: True)
        async with stack.kiosk(config, store=store) as (kiosk, _rec, _mic):
            left = [r["session_id"] for r in await kiosk.parts.keeper.store.run("records")]
    assert left == [records[2]["session_id"]]
    journals = sorted(p.stem for p in (config.kiosk.state_dir / "lessons").iterdir())
    assert journals == [records[2]["session_id"]]
