"""Sessions listing/export, the control socket protocol, earcons, LED activity patterns."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from appliance.audio.dsp import rms_dbfs
from appliance.audio.earcons import Cue, Earcons
from appliance.config import LedSettings
from appliance.core.state import State
from appliance.daemon import sessions_cli
from appliance.daemon.control import ControlServer, send_command
from appliance.hardware.leds import IDLE_LEVEL, Activity, StatusLeds
from appliance.store.sessions import SessionStore
from tests.daemon_helpers import FakeKiosk


def record(sid: str, reason: str = "button") -> dict[str, Any]:
    return {"schema": 1, "session_id": sid, "kiosk_id": "k", "started_at": "2026-11-24T10:00:00.000Z",
            "ended_at": "2026-11-24T10:05:00.000Z", "end_reason": reason, "plan_id": "p", "targets": [],
            "turns": [{"role": "learner", "text": "Hello, tutor", "at": "2026-11-24T10:00:01.000Z", "source": "voice"},
                      {"role": "tutor", "text": "Hi!", "at": "2026-11-24T10:00:02.000Z", "source": "voice"}],
            "metrics": {"duration_s": 300.0, "learner_turns": 1, "tutor_turns": 1, "est_cost_usd": 0.01},
            "errors": []}


def test_sessions_list_show_export(tmp_path: Path) -> None:
    store = SessionStore(tmp_path)
    store.save(record("aaaa-1"))
    store.save(record("bbbb-2", "voice_stop"))
    store.mark_synced("aaaa-1")
    store.save(record("cccc-3"))
    store.park("cccc-3", "invalid_record: turns[0].role")
    out = io.StringIO()
    sessions_cli.list_sessions(store, out)
    text = out.getvalue()
    assert "synced" in text and "pending" in text and "parked: invalid_record" in text
    out = io.StringIO()
    assert sessions_cli.show_session(store, "bbbb", out) == 0
    assert "learner: Hello, tutor" in out.getvalue() and "voice_stop" in out.getvalue()
    assert sessions_cli.show_session(store, "zzzz", io.StringIO()) == 1
    out = io.StringIO()
    sessions_cli.export_sessions(store, "jsonl", out)
    assert [json.loads(line)["session_id"] for line in out.getvalue().splitlines()] == ["aaaa-1", "bbbb-2", "cccc-3"]
    out = io.StringIO()
    sessions_cli.export_sessions(store, "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["state"] for r in rows] == ["synced", "pending", "parked"]
    assert rows[0]["transcript"] == "learner: Hello, tutor | tutor: Hi!"


async def test_control_socket_round_trip_and_permissions(tmp_path: Path) -> None:
    kiosk = FakeKiosk()
    server = ControlServer(tmp_path / "run" / "control.sock", kiosk)
    await server.start()
    try:
        mode = stat.S_IMODE(os.stat(server.path).st_mode)
        assert mode == 0o660
        assert (await send_command(server.path, {"command": "status"}))["status"] == {"state": "idle"}
        assert (await send_command(server.path, {"command": "say", "text": "  hi  "}))["ok"]
        assert (await send_command(server.path, {"command": "press"}))["ok"]
        assert (await send_command(server.path, {"command": "stop"}))["ok"]
        held = await send_command(server.path, {"command": "hold", "seconds": 0.05})
        assert held["ok"] and kiosk.calls[-1] == ("press", None)
        async with asyncio.timeout(5):  # the release follows after the held time
            while kiosk.calls[-1] != ("release", None):
                await asyncio.sleep(0.01)
        assert not (await send_command(server.path, {"command": "hold", "seconds": 0}))["ok"]
        assert (await send_command(server.path, {"command": "sync"}))["outbox"] == 0
        bad = await send_command(server.path, {"command": "reboot"})
        assert not bad["ok"] and "unknown command" in bad["error"]
        assert not (await send_command(server.path, {"command": "say", "text": ""}))["ok"]
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        writer.write(b"not json\n")
        assert json.loads(await reader.readline()) == {"ok": False, "error": "not JSON"}
        writer.close()
    finally:
        await server.stop()
    assert kiosk.calls == [("say", "hi"), ("press", None), ("release", None), ("stop", None), ("press", None),
                           ("release", None)]
    with pytest.raises(ConnectionError, match="no kiosk is running"):
        await send_command(server.path, {"command": "status"})


async def test_control_server_removes_only_the_socket_it_bound(tmp_path: Path) -> None:
    """A server whose socket file was replaced by another server's must leave that one alone when it stops."""
    path = tmp_path / "control.sock"
    first = ControlServer(path, FakeKiosk())
    await first.start()
    path.unlink()  # removed by hand while the first one still runs; another server takes the path
    second = ControlServer(path, FakeKiosk())
    await second.start()
    try:
        await first.stop()
        assert (await send_command(path, {"command": "status"}))["status"] == {"state": "idle"}
        never_started = ControlServer(path, FakeKiosk())
        with pytest.raises(OSError, match="already serving"):
            await never_started.start()
        await never_started.stop()
        assert (await send_command(path, {"command": "status"}))["ok"]
    finally:
        await second.stop()
    assert not path.exists()


async def test_control_server_never_replaces_a_file_that_is_not_a_socket(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("a teacher's notes\n")
    server = ControlServer(path, FakeKiosk())
    with pytest.raises(OSError, match="not a socket"):
        await server.start()
    await server.stop()
    assert path.read_text() == "a teacher's notes\n"


def test_earcons_are_short_audible_and_distinct() -> None:
    cues = Earcons(16000)
    for cue in Cue:
        samples = cues[cue]
        assert 0.1 < len(samples) / 16000 < 1.0
        assert rms_dbfs(samples) > -30
        assert abs(int(samples[0])) < 200 and abs(int(samples[-1])) < 200  # faded: no click


def note_pitches(samples: np.ndarray, rate: int) -> list[float]:
    """The notes of a cue as heard: the dominant frequency (FFT peak) of 20 ms frames, consecutive
    loud frames of the same pitch (within 4 %) merged into one note, notes under 30 ms dropped."""
    frame, hop = int(rate * 0.02), int(rate * 0.01)
    x = samples.astype(np.float64)
    loud = 0.1 * np.sqrt(np.mean(x**2)) * np.sqrt(2)
    notes: list[list[float]] = []
    previous_silent = True
    for start in range(0, len(x) - frame, hop):
        chunk = x[start:start + frame]
        if np.sqrt(np.mean(chunk**2)) < loud:
            previous_silent = True
            continue
        spectrum = np.abs(np.fft.rfft(chunk * np.hanning(frame), n=16384))
        pitch = float(np.argmax(spectrum) * rate / 16384)
        if notes and not previous_silent and abs(pitch / np.median(notes[-1]) - 1) < 0.04:
            notes[-1].append(pitch)
        else:
            notes.append([pitch])
        previous_silent = False
    return [float(np.median(n)) for n in notes if len(n) >= 3]


@pytest.mark.parametrize("rate", [16000, 48000])
def test_earcon_shapes_match_the_readme(rate: int) -> None:
    """The README's table promises shapes a learner can tell apart without a screen: ready = two
    rising notes, lesson on = three rising notes, lesson over = two falling notes, cannot reach the
    tutor = three low notes. Checked by pitch, as heard."""
    cues = Earcons(rate)
    ready, connected = note_pitches(cues[Cue.READY], rate), note_pitches(cues[Cue.CONNECTED], rate)
    ended, error = note_pitches(cues[Cue.ENDED], rate), note_pitches(cues[Cue.ERROR], rate)
    assert len(ready) == 2 and ready[1] > ready[0] * 1.1, ready
    assert len(connected) == 3 and connected[0] * 1.1 < connected[1] < connected[2] / 1.1, connected
    assert len(ended) == 2 and ended[1] < ended[0] / 1.1, ended
    assert len(error) == 3 and max(error) < 350 and max(error) / min(error) < 1.1, error
    assert max(error) < min(ready + connected + ended) / 1.5  # low: well below every other cue


def test_led_activity_patterns() -> None:
    factory = MockFactory(pin_class=MockPWMPin)
    Device.pin_factory = factory
    settings = LedSettings(level_meter=False)  # with the level meter: tests/test_level_meter.py
    leds = StatusLeds(settings)
    try:
        leds.show(State.IDLE)
        assert factory.pin(settings.idle).state == pytest.approx(IDLE_LEVEL)
        leds.show(State.CONNECTED)
        connected = factory.pin(settings.connected)
        assert connected.state == 1
        connected.clear_states()
        leds.show(State.CONNECTED, Activity.SPEAKING)
        _wait(lambda: any(0 < s.state < 1 for s in connected.states))  # a pulse fades
        leds.show(State.CONNECTED, Activity.LISTENING)
        connected.clear_states()
        _wait(lambda: len(connected.states) >= 4)
        assert {s.state for s in connected.states[1:]} <= {0, 1}  # a blink, not a fade
        leds.show(State.IDLE, Activity.SPEAKING)  # activity only shows while connected
        assert leds.activity is Activity.NONE
    finally:
        leds.close()


def _wait(predicate: Any, timeout: float = 5.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "LED pattern not seen"
        time.sleep(0.02)


def test_sessions_list_reports_store_repairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A damaged index used to make `sessions list` fail; now it is repaired and the repair is shown."""
    SessionStore(tmp_path).save(record("aaaa-1"))
    (tmp_path / "sessions.json").write_bytes(b"\0\0\0")
    out = io.StringIO()
    assert sessions_cli.list_sessions(SessionStore(tmp_path), out) == 0
    assert "aaaa-1" in out.getvalue()  # rebuilt from its journal
    err = capsys.readouterr().err
    assert "store: sessions.json was damaged" in err and "moved to sessions.json.corrupt-" in err
