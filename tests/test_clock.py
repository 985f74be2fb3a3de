"""Lesson times stay true when the system clock is stepped: durations are monotonic, dates follow the
best anchor (see appliance.common.clock). A Pi without a battery-backed clock boots with a stale date and is
stepped forward by network time, often during the first lesson of the day."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.call.events import ServerEvent
from appliance.common.clock import (
    EpochTimeline,
    iso_utc,
    kernel_synchronized,
    system_synchronized,
    timesync_flag,
)
from appliance.common.httpserve import start_http
from appliance.common.redate import correct_dates
from appliance.config import load_config
from appliance.contract.record import InvalidRecord, validate_record
from appliance.core.lesson import Lesson
from appliance.core.transcript import Transcript
from appliance.daemon.control import ControlServer
from appliance.daemon.doctor import Doctor
from appliance.store.sessions import SessionStore
from tests.clock_helpers import DAY, FAKETIME_KEEP_MONOTONIC, TRUE_NOW, FakeTime, libfaketime, parse

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3600.0


def ev(type_: str, **data: object) -> ServerEvent:
    return ServerEvent(type_, {"type": type_, **data})


def test_forward_step_mid_lesson_keeps_the_true_duration_and_start() -> None:
    """Guards against duration_s = difference of two wall readings: a +3 h NTP step during a one
    minute lesson was recorded as three hours of lesson (and charged to the kiosk's daily budget)."""
    t = FakeTime()
    lesson = Lesson(kiosk_id="k1", clock=t.clock())
    t.advance(10)
    lesson.transcript.add_typed("hello")
    t.wall += 3 * HOUR  # the step: wall moves, monotonic does not
    t.advance(50)
    lesson.transcript.add_typed("bye")
    record = lesson.to_record("button")
    validate_record(record)
    assert record["metrics"]["duration_s"] == 60.0
    started, ended = parse(record["started_at"]), parse(record["ended_at"])
    assert ended == pytest.approx(t.wall, abs=0.001)
    assert started == pytest.approx(t.wall - 60, abs=0.001)
    assert [parse(turn["at"]) - started for turn in record["turns"]] == pytest.approx([10, 60], abs=0.002)
    assert record["metrics"]["clock_synced"] is True


def test_lesson_started_before_sync_gets_its_dates_corrected() -> None:
    """Guards against stale boot-time dates: a lesson begun on the clock restored at boot (two days
    behind) and ended after network time set the clock carries the true dates, found through the
    monotonic offset."""
    t = FakeTime(wall=TRUE_NOW - 2 * DAY, synced=False)
    clock = t.clock()
    assert clock.status_line() is not None and "not synchronized" in clock.status_line()  # type: ignore[operator]
    true_start = TRUE_NOW
    lesson = Lesson(kiosk_id="k1", clock=clock)
    t.advance(5)
    lesson.transcript.handle(ev("input_audio_buffer.speech_started", item_id="u1"))
    t.advance(3)
    lesson.transcript.handle(ev("conversation.item.input_audio_transcription.completed", item_id="u1",
                                transcript="I like apples"))
    lesson.add_error("late_audio", "a gap in the tutor's audio")
    t.advance(20)
    t.wall, t.synced = t.wall + 2 * DAY, True  # timesyncd steps the clock and marks it synchronized
    assert clock.status_line() is None
    t.advance(40)
    record = lesson.to_record("button")
    assert record["metrics"]["duration_s"] == 68.0
    assert record["metrics"]["clock_synced"] is True
    assert parse(record["started_at"]) == pytest.approx(true_start, abs=0.001)
    assert parse(record["turns"][0]["at"]) == pytest.approx(true_start + 5, abs=0.001)
    assert parse(record["errors"][0]["at"]) == pytest.approx(true_start + 8, abs=0.001)
    assert parse(record["ended_at"]) == pytest.approx(true_start + 68, abs=0.001)


def test_lesson_ended_before_sync_says_so_and_the_companion_accepts_it() -> None:
    """A record whose dates could not be checked is marked, so the companion can tell them apart."""
    t = FakeTime(wall=TRUE_NOW - 2 * DAY, synced=False)
    lesson = Lesson(kiosk_id="k1", clock=t.clock())
    t.advance(30)
    record = validate_record(lesson.to_record("idle"))
    assert record["metrics"]["clock_synced"] is False
    assert record["metrics"]["duration_s"] == 30.0
    assert parse(record["started_at"]) == pytest.approx(TRUE_NOW - 2 * DAY, abs=0.001)
    with pytest.raises(InvalidRecord, match="clock_synced"):
        validate_record({**record, "metrics": {**record["metrics"], "clock_synced": "no"}})
    with pytest.raises(InvalidRecord, match="clock_anchor"):
        validate_record({**record, "clock_anchor": 3})
    legacy = {**record, "metrics": {k: v for k, v in record["metrics"].items() if k != "clock_synced"}}
    assert validate_record(legacy) is legacy  # records from older kiosks still accepted


def test_backward_step_never_gives_a_negative_duration() -> None:
    t = FakeTime()
    lesson = Lesson(kiosk_id="k1", clock=t.clock())
    t.advance(12)
    t.wall -= DAY
    record = lesson.to_record("button")
    assert record["metrics"]["duration_s"] == 12.0
    assert parse(record["ended_at"]) - parse(record["started_at"]) == pytest.approx(12, abs=0.002)


def test_lost_sync_keeps_the_last_good_anchor_and_says_since_when() -> None:
    """After network time is lost, an unchecked step of the system clock is not followed."""
    t = FakeTime()
    clock = t.clock()
    assert clock.wall() == TRUE_NOW and clock.status_line() is None
    t.advance(100)
    t.synced = False
    t.wall += 5 * HOUR  # someone sets a wrong date while the network is down
    t.advance(10)
    assert clock.wall() == pytest.approx(TRUE_NOW + 110)
    line = clock.status_line()
    assert line is not None and f"since {iso_utc(TRUE_NOW)}" in line
    t.synced = True  # network time back: follow the system clock again
    assert clock.wall() == t.wall


def test_tiny_offsets_keep_the_anchor_steps_replace_it() -> None:
    """Stamps of one record must not jitter by the microseconds between two readings."""
    t = FakeTime()
    clock = t.clock()
    first = clock.anchor()
    t.mono += 1.0
    t.wall += 1.05
    assert clock.anchor() is first
    t.wall += 1.0
    assert clock.anchor() is not first and clock.anchor().wall == t.wall


def test_unknown_sync_state_trusts_the_system_clock() -> None:
    t = FakeTime(synced=None)
    clock = t.clock()
    assert clock.synchronized() and clock.status_line() is None and clock.anchor().synced


def test_transcript_with_a_plain_time_function_stamps_its_readings() -> None:
    """``Transcript(clock=callable)`` keeps giving the callable's epoch seconds as turn times."""
    transcript = Transcript(clock=lambda: TRUE_NOW)
    assert isinstance(transcript.clock, EpochTimeline)
    transcript.add_typed("hi")
    assert transcript.to_records()[0]["at"] == iso_utc(TRUE_NOW)


def test_sync_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag = tmp_path / "synchronized"
    assert timesync_flag(flag) is None  # chrony or ntpd never create it: not a proof of anything
    flag.touch()
    assert timesync_flag(flag) is True
    if sys.platform.startswith("linux"):
        assert isinstance(kernel_synchronized(), bool)
    monkeypatch.setattr("appliance.common.clock.kernel_synchronized", lambda: None)
    monkeypatch.setattr("appliance.common.clock.timesync_flag", lambda: None)
    assert system_synchronized() is None  # nothing can tell
    monkeypatch.setattr("appliance.common.clock.timesync_flag", lambda: True)
    assert system_synchronized() is True  # no adjtimex: timesyncd's flag decides
    monkeypatch.setattr("appliance.common.clock.kernel_synchronized", lambda: False)
    assert system_synchronized() is False  # the kernel's answer wins over a flag left from earlier


jumps = st.lists(st.tuples(st.floats(0, 600), st.floats(-DAY, 30 * DAY), st.sampled_from([True, False, None]),
                           st.booleans()), max_size=12)


@settings(max_examples=150, deadline=None)
@given(start_synced=st.sampled_from([True, False, None]), events=jumps, tail=st.floats(0, 600))
def test_random_steps_never_change_the_duration(start_synced: bool | None,
                                                events: list[tuple[float, float, bool | None, bool]],
                                                tail: float) -> None:
    """Whatever the system clock does (-1 day .. +30 days, at any moment, with sync coming and going),
    duration_s is the monotonic truth, never negative, and the record's dates agree with it."""
    t = FakeTime(synced=start_synced)
    lesson = Lesson(kiosk_id="k1", clock=t.clock())
    start_mono = t.mono
    for advance, jump, synced, speak in events:
        t.advance(advance)
        t.wall += jump
        t.synced = synced
        if speak:
            lesson.transcript.add_typed("hello")
    t.advance(tail)
    record = validate_record(lesson.to_record("button"))
    duration = record["metrics"]["duration_s"]
    assert duration == round(t.mono - start_mono, 3) and duration >= 0
    started, ended = parse(record["started_at"]), parse(record["ended_at"])
    assert ended - started == pytest.approx(duration, abs=0.002)
    assert all(started - 0.001 <= parse(turn["at"]) <= ended + 0.001 for turn in record["turns"])


# -- real processes under libfaketime: the system's own clocks, stepped from outside ----------------

LESSON_SCRIPT = """
import json, sys, time
from pathlib import Path
from appliance.common.clock import Clock
from appliance.core.lesson import Lesson

flag = Path(sys.argv[1]) if len(sys.argv) > 1 else None
clock = Clock(synced=lambda: flag.exists()) if flag else Clock()
m0 = time.monotonic()
lesson = Lesson(kiosk_id="k1", clock=clock) if flag else Lesson(kiosk_id="k1")
lesson.transcript.add_typed("hello")
print(json.dumps({"wall": time.time(), "monotonic": time.monotonic()}), flush=True)
sys.stdin.readline()  # the test steps the clock now
lesson.transcript.add_typed("and after the step")
record = lesson.to_record("button")
print(json.dumps({"wall": time.time(), "mono": time.monotonic() - m0, "monotonic": time.monotonic(),
                  "record": record}), flush=True)
"""


class FaketimeLesson:
    """A lesson in a real Python process whose wall clock libfaketime shifts by the offset in a file,
    re-read at every reading; CLOCK_MONOTONIC is left alone, as an NTP step does (checked at every line:
    the process's monotonic readings must fall between the test's own, since all processes of a boot
    share that clock)."""

    def __init__(self, tmp_path: Path, offset: str, *args: str) -> None:
        self.offset_file = tmp_path / "faketime.rc"
        self.offset_file.write_text(offset + "\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT), "LD_PRELOAD": libfaketime(),
               "FAKETIME_TIMESTAMP_FILE": str(self.offset_file), "FAKETIME_NO_CACHE": "1", **FAKETIME_KEEP_MONOTONIC}
        self.spawned = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-c", LESSON_SCRIPT, *args], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        text = self.proc.stdout.readline()
        if not text:
            self.proc.wait(30)
            raise AssertionError(f"lesson process died: {self.proc.stderr.read() if self.proc.stderr else ''}")
        data: dict[str, Any] = json.loads(text)
        assert self.spawned <= data["monotonic"] <= time.monotonic(), \
            "libfaketime moved the process's monotonic clock too: the test would not model an NTP step"
        return data

    def step(self, offset: str) -> dict[str, Any]:
        self.offset_file.write_text(offset + "\n")
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        result = self.line()
        assert self.proc.wait(30) == 0
        return result


def test_real_process_forward_step_records_the_monotonic_duration(tmp_path: Path) -> None:
    """The default clock (time.monotonic, time.time) of a real process: a +3 h step mid-lesson is
    seen by time.time() but not counted in duration_s."""
    lesson = FaketimeLesson(tmp_path, "+0")
    before = lesson.line()
    after = lesson.step("+3h")
    assert after["wall"] - before["wall"] >= 3 * HOUR  # the process really saw the step
    record = after["record"]
    duration = record["metrics"]["duration_s"]
    assert 0 <= duration <= after["mono"] + 0.001 and duration < 60
    started, ended = parse(record["started_at"]), parse(record["ended_at"])
    assert ended - started == pytest.approx(duration, abs=0.002)
    assert started >= before["wall"] + 3 * HOUR - 60  # placed on the stepped (newest) timeline
    assert ended <= after["wall"] + 0.01


def test_real_process_started_on_a_stale_clock_is_corrected_at_sync(tmp_path: Path) -> None:
    """A process started two days in the past (clock restored at boot) that sees network time arrive
    mid-lesson (timesyncd's flag appears, the clock steps) records today's dates."""
    flag = tmp_path / "synchronized"
    real_before = time.time()
    lesson = FaketimeLesson(tmp_path, "-2d", str(flag))
    stale = lesson.line()
    assert stale["wall"] < real_before - 2 * DAY + 60
    flag.touch()
    after = lesson.step("+0")
    real_after = time.time()
    record = after["record"]
    assert record["metrics"]["clock_synced"] is True
    started, ended = parse(record["started_at"]), parse(record["ended_at"])
    assert real_before - 0.01 <= started <= ended <= real_after + 0.01
    assert all(started <= parse(turn["at"]) <= ended for turn in record["turns"])
    assert record["metrics"]["duration_s"] <= after["mono"] + 0.001


# -- doctor and status say when the clock is not synchronized -----------------------------------------

def doctor_config(tmp_path: Path, companion_url: str) -> Path:
    (tmp_path / "device.key").write_text("dk_test_key\n")
    (tmp_path / "device.key").chmod(0o600)
    path = tmp_path / "kiosk.toml"
    path.write_text(f"""
[kiosk]
id = "kiosk-test"
state_dir = "{tmp_path / 'state'}"
[companion]
url = "{companion_url}"
device_key_file = "{tmp_path / 'device.key'}"
timeout_s = 2.0
[realtime]
base_url = "http://127.0.0.1:9"
""")
    return path


async def run_doctor(tmp_path: Path, url: str, synced: bool | None) -> list[str]:
    lines: list[str] = []
    doctor = Doctor(load_config(doctor_config(tmp_path, url)), use_hardware=False, out=lines.append,
                    synced=lambda: synced)
    await doctor.run()
    return [line for line in lines if " clock " in line]


async def test_doctor_says_when_the_clock_is_not_synchronized(tmp_path: Path) -> None:
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/api/health", health)
    runner, port = await start_http(app, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}"
    try:
        [line] = await run_doctor(tmp_path, url, synced=False)
        assert "PASS  clock" in line and "s from the companion's clock" in line
        assert "NOT synchronized" in line and "timedatectl" in line
        [line] = await run_doctor(tmp_path, url, synced=True)
        assert "PASS  clock" in line and "; synchronized to network time" in line
    finally:
        await runner.cleanup()
    [line] = await run_doctor(tmp_path, "http://127.0.0.1:9", synced=False)
    assert "FAIL  clock" in line and "no companion to compare with" in line and "NOT synchronized" in line
    [line] = await run_doctor(tmp_path, "http://127.0.0.1:9", synced=None)
    assert "PASS  clock" in line and "synchronized" not in line


class ClockStatusKiosk:
    def status(self) -> dict[str, Any]:
        return {"state": "idle", "kiosk_id": "k1", "lesson": None, "outbox": 0, "recent_lessons": [],
                "clock": FakeTime(wall=TRUE_NOW - 2 * DAY, synced=False).clock().status_line()}


async def test_status_command_prints_the_clock_line(tmp_path: Path) -> None:
    server = ControlServer(tmp_path / "control.sock", ClockStatusKiosk())  # type: ignore[arg-type]
    await server.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "appliance.cli", "status", "--socket", str(server.path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        await server.stop()
    assert proc.returncode == 0, out
    assert "clock:   not synchronized: the date may be stale" in out.decode()


# -- records saved before the clock was synchronized ------------------------------------------------

def test_saved_record_is_redated_once_the_clock_is_synchronized(tmp_path: Path) -> None:
    """Guards against stale dates reaching the companion: a lesson saved (and left in the outbox) while
    the clock still showed the boot-time date is re-dated, in the same boot, when network time arrives."""
    t = FakeTime(wall=TRUE_NOW - 2 * DAY, synced=False)
    clock = t.clock()
    lesson = Lesson(kiosk_id="k1", clock=clock)
    t.advance(4)
    lesson.transcript.add_typed("hello")
    lesson.add_error("late_audio", "gap")
    t.advance(26)
    store = SessionStore(tmp_path / "state")
    store.save(lesson.to_record("button"))
    [saved] = store.unsynced()
    assert saved["metrics"]["clock_synced"] is False and "clock_anchor" in saved
    assert correct_dates(saved, clock) is None  # still unsynchronized: nothing better to go by

    t.advance(100)
    t.wall, t.synced = t.wall + 2 * DAY, True
    fixed = correct_dates(saved, clock)
    assert fixed is not None
    store.save(validate_record(fixed))
    [stored] = store.unsynced()
    assert parse(stored["started_at"]) == pytest.approx(TRUE_NOW, abs=0.001)
    assert parse(stored["ended_at"]) == pytest.approx(TRUE_NOW + 30, abs=0.001)
    assert parse(stored["turns"][0]["at"]) == pytest.approx(TRUE_NOW + 4, abs=0.001)
    assert parse(stored["errors"][0]["at"]) == pytest.approx(TRUE_NOW + 4, abs=0.001)
    assert stored["metrics"]["clock_synced"] is True and stored["metrics"]["duration_s"] == 30.0
    assert "clock_anchor" not in stored
    assert correct_dates(stored, clock) is None  # once is enough
    store.close()


def test_saved_record_from_another_boot_keeps_its_dates() -> None:
    """After a reboot the monotonic clock restarted: the old offset means nothing, so no guess is made."""
    t = FakeTime(wall=TRUE_NOW - 2 * DAY, synced=False)
    clock = t.clock()
    record = Lesson(kiosk_id="k1", clock=clock).to_record("interrupted")
    t.wall, t.synced = TRUE_NOW, True
    assert correct_dates(record, clock, this_boot="another-boot") is None
    assert correct_dates({**record, "turns": "garbage"}, clock) is None
    assert correct_dates({**record, "clock_anchor": {"offset_s": "x"}}, clock) is None


# -- retention and clock steps -------------------------------------------------------------------------

def test_clock_step_forward_does_not_delete_lessons_delivered_under_a_stale_clock(tmp_path: Path) -> None:
    """Guards against retention aging lessons from stamps read on a stale clock: delivered while the
    clock was five years behind, they were deleted at the first retention after network time stepped
    the clock forward. They are kept their full retention period from then on, across a restart."""
    now = [TRUE_NOW - 5 * 365 * DAY]
    synced = [False]
    store = SessionStore(tmp_path, clock=lambda: now[0], synced=lambda: synced[0])
    store.save({"session_id": "early", "turns": []})
    store.mark_synced("early")
    now[0] += 40 * DAY
    assert store.apply_retention(keep_synced_days=30, max_lessons=100) == 0  # unsynchronized: no ages at all
    now[0], synced[0] = TRUE_NOW, True  # network time steps the clock forward five years
    store.save({"session_id": "late", "turns": []})
    store.mark_synced("late")
    assert store.apply_retention(keep_synced_days=30, max_lessons=100) == 0
    assert store.get("early") is not None
    store.close()

    store = SessionStore(tmp_path, clock=lambda: now[0], synced=lambda: synced[0])  # restarted
    now[0] += 29 * DAY
    assert store.apply_retention(keep_synced_days=30, max_lessons=100) == 0
    now[0] += 2 * DAY
    assert store.apply_retention(keep_synced_days=30, max_lessons=100) == 2  # both, 30 days after the step
    assert len(store) == 0


def test_clock_set_wrong_while_unsynchronized_deletes_nothing_by_age(tmp_path: Path) -> None:
    """A clock that lost network time and is then set years ahead by hand ages nothing."""
    now = [TRUE_NOW]
    synced = [True]
    store = SessionStore(tmp_path, clock=lambda: now[0], synced=lambda: synced[0])
    store.save({"session_id": "a", "turns": []})
    store.mark_synced("a")
    synced[0] = False
    now[0] += 5 * 365 * DAY
    assert store.apply_retention(keep_synced_days=30, max_lessons=100) == 0
    assert store.apply_retention(keep_synced_days=30, max_lessons=0) == 1  # the cap still holds


def test_stamp_of_an_older_kiosk_counts_as_unchecked(tmp_path: Path) -> None:
    """Index entries written before stamps said whether the clock was synchronized are re-stamped, not aged."""
    now = [TRUE_NOW]
    store = SessionStore(tmp_path, clock=lambda: now[0], synced=lambda: True)
    store.save({"session_id": "old", "turns": []})
    store.mark_synced("old")
    store.close()
    data = json.loads((tmp_path / "sessions.json").read_text())
    for doc in data["sessions"].values():
        del doc["synced_at_trusted"]
        doc["synced_at"] = TRUE_NOW - 400 * DAY
    (tmp_path / "sessions.json").write_text(json.dumps(data))
    store = SessionStore(tmp_path, clock=lambda: now[0], synced=lambda: True)
    assert store.apply_retention(keep_synced_days=30, max_lessons=100) == 0
    now[0] += 31 * DAY
    assert store.apply_retention(keep_synced_days=30, max_lessons=100) == 1
