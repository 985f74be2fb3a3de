"""The call path's stage stamps, and the costs kept off the press and off the start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.common import timeline as stages
from appliance.common import tls
from appliance.common.timeline import STAGES, CallTimeline
from appliance.core.state import State
from tests.harness import lesson_stack

ROOT = Path(__file__).resolve().parent.parent


def test_timeline_keeps_the_first_stamp_and_reports_ms_after_the_origin() -> None:
    now = [10.0]
    timeline = CallTimeline(clock=lambda: now[0])
    assert timeline.ms_since() == {}  # no press: nothing to measure from
    timeline.mark(stages.PRESSED)
    now[0] = 10.0125
    timeline.mark(stages.OFFER_BUILT)
    now[0] = 10.5
    timeline.mark(stages.OFFER_BUILT)  # seen again: the first stamp stays
    timeline.mark(stages.CHANNEL_OPEN, at=10.08)
    assert timeline.ms_since() == {"pressed": 0.0, "offer_built": 12.5, "channel_open": 80.0}
    assert list(timeline.ms_since(stages.OFFER_BUILT)) == ["pressed", "offer_built", "channel_open"]
    with pytest.raises(ValueError, match="unknown call stage 'conected'"):
        timeline.mark("conected")


async def test_a_lesson_records_every_stage_in_causal_order(tmp_path: Path) -> None:
    """Every stage of a real call (loopback WebRTC to the simulator) is stamped once, in the order the
    protocol allows, and the lesson record's headline figures agree with its stages."""
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        kiosk.press()
        await rec.until(lambda: State.CONNECTED in rec.states, what="connected")
        await rec.until(lambda: False in rec.audible, what="the greeting, heard and finished")
        kiosk.press()
        await rec.until(lambda: bool(rec.saved), what="saved")
    metrics = rec.saved[0][0]["metrics"]
    ms = metrics["stages_ms"]
    assert set(ms) == set(STAGES), f"missing: {set(STAGES) - set(ms)}"
    chain = [stages.PRESSED, stages.MATERIALS_READY, stages.OFFER_BUILT, stages.ANSWER_RECEIVED,
             stages.ICE_CONNECTED, stages.DTLS_CONNECTED, stages.CHANNEL_OPEN, stages.GREETING_SENT,
             stages.SERVER_AUDIO_STARTED, stages.FIRST_AUDIBLE]
    assert [ms[s] for s in chain] == sorted(ms[s] for s in chain), ms
    assert ms[stages.ANSWER_RECEIVED] <= ms[stages.FIRST_RTP] <= ms[stages.FIRST_FRAME] <= ms[stages.FIRST_AUDIBLE]
    # connect_ms is stamped when the kiosk handles the open channel: just after the call saw it open.
    assert ms[stages.CHANNEL_OPEN] <= metrics["connect_ms"] <= ms[stages.CHANNEL_OPEN] + 250
    assert metrics["first_audio_ms"] == pytest.approx(ms[stages.FIRST_AUDIBLE], abs=250)


async def test_opening_calls_does_not_rebuild_the_trust_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards against loading the OS trust store on every press (40–120 ms of CPU before the offer
    could be POSTed): calls share one context, built once per process."""
    tls.shared_ssl_context()
    built: list[object] = []
    original = tls.ssl_context
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, _mic):
        monkeypatch.setattr(tls, "ssl_context", lambda *a, **k: built.append(a) or original(*a, **k))
        for lesson in (1, 2):
            kiosk.press()
            await rec.until(lambda n=lesson: rec.states.count(State.CONNECTED) == n, what=f"call {lesson} connected")
            kiosk.press()
            await rec.until(lambda n=lesson: len(rec.saved) == n, what=f"lesson {lesson} saved")
    assert built == []


def test_the_daemon_reaches_ready_without_loading_the_call_stack() -> None:
    """Guards start → READY: aiortc, PyAV and aioice (~0.5–1.5 s to import) must not load on the way
    to READY; the kiosk loads them in a worker thread after (realtime.call.warm_up)."""
    code = """
import sys
import appliance.cli, appliance.core.kiosk, appliance.daemon.parts, appliance.daemon.control, appliance.store.sessions
import appliance.hardware.button, appliance.hardware.leds, appliance.uplink.client, appliance.daemon.preflight
loaded = sorted(m for m in ("aiortc", "av", "aioice") if m in sys.modules)
print(",".join(loaded))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "", f"loaded before READY: {out.stdout.strip()}"
