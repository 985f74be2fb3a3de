"""A Realtime call whose server goes silent (frozen, partitioned, SIGSTOPped) is reported closed within
5 s, a healthy but quiet call is not, and hanging up never hangs.

Real aiortc on both ends over loopback, the real simulator (in process and as a child process).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from aiortc import RTCPeerConnection
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import TypeAdapter

from appliance.call import events
from appliance.call.events import ServerEvent
from appliance.call.webrtc import CallError, RealtimeCall
from appliance.common.net import enable_loopback_candidates
from appliance.daemon.services import ChildServer
from appliance.simulator.server import RealtimeSimulator, SimulatorConfig
from tests.harness import API_KEY, mint_token

CLIENT = TypeAdapter(RealtimeClientEvent)
SERVER = TypeAdapter(RealtimeServerEvent)
DETECT_WITHIN_S = 5.0
HEALTHY_S = 8.0


class Watched:
    """A RealtimeCall with a silent microphone that records events and when (and why) it was closed."""

    def __init__(self, base_url: str, token: str, **options: object) -> None:
        self.events: list[ServerEvent] = []
        self.closes: list[tuple[float, str]] = []
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._drains: list[asyncio.Task[None]] = []
        self.call = RealtimeCall(base_url, token, lambda n: np.zeros(n, np.int16), on_event=self._event,
                                 on_remote_track=self._drain, on_closed=self._closed, **options)  # type: ignore[arg-type]

    def _event(self, event: ServerEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def _drain(self, track: object) -> None:
        async def drain() -> None:
            with contextlib.suppress(Exception):
                while True:
                    await track.recv()  # type: ignore[attr-defined]
        self._drains.append(asyncio.ensure_future(drain()))

    def _closed(self, reason: str) -> None:
        self.closes.append((time.monotonic(), reason))
        self.closed.set()

    def count(self, event_type: str) -> int:
        return sum(e.type == event_type for e in self.events)

    async def until(self, predicate: object, timeout: float = 15) -> None:
        """Wait until ``predicate()`` holds: re-checked on every event, and every 0.1 s for conditions
        that no forwarded event signals (probe counts)."""
        async with asyncio.timeout(timeout):
            while not predicate():  # type: ignore[operator]
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.1)

    async def close(self) -> None:
        for task in self._drains:
            task.cancel()
        await self.call.close()


@pytest.fixture
async def quiet_sim():
    """A simulator that sends RTP only while the tutor speaks: in silence only the probes keep a call alive."""
    sim = RealtimeSimulator(SimulatorConfig(api_keys=frozenset({API_KEY}), rtp_during_silence=False))
    await sim.start()
    yield sim
    await sim.stop()


@pytest.fixture
async def steady_sim():
    """A simulator that keeps sending silent RTP between responses (RTP alone shows it is alive)."""
    sim = RealtimeSimulator(SimulatorConfig(api_keys=frozenset({API_KEY})))
    await sim.start()
    yield sim
    await sim.stop()


@pytest.mark.slow
async def test_quiet_call_stays_up_and_frozen_call_is_reported_within_5s(
        quiet_sim: RealtimeSimulator, steady_sim: RealtimeSimulator) -> None:
    """Guards against a dead server looking connected until ICE consent expires (~30 s), and against
    the cure (probes) misfiring: a healthy call where nobody speaks for 8 s must stay up."""
    quiet = Watched(quiet_sim.base_url, await mint_token(quiet_sim.base_url))
    steady = Watched(steady_sim.base_url, await mint_token(steady_sim.base_url))
    await asyncio.gather(quiet.call.open(10), steady.call.open(10))
    try:
        await quiet.until(lambda: quiet.count("session.created") == 1)
        # The owner's own session.update is answered to the owner; probe answers never are.
        quiet.call.send(events.session_update(instructions="Be Stella."))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(asyncio.gather(quiet.closed.wait(), steady.closed.wait())),
                                   HEALTHY_S)
        assert quiet.closes == [] and steady.closes == []
        assert quiet.call.connected and steady.call.connected
        # Only probes kept the quiet call alive; the steady one's RTP made probes unnecessary.
        assert quiet.call.probes_sent >= 3
        assert steady.call.probes_sent == 0
        sim_call = quiet_sim.calls[quiet.call.call_id]
        answered = sum(e["type"] == "session.updated" for e in sim_call.sent)
        assert answered in (quiet.call.probes_sent, quiet.call.probes_sent + 1)  # the last may be in flight
        assert quiet.count("session.updated") == 1
        probes = [e for e in sim_call.received
                  if e["type"] == "session.update" and e["session"] == {"type": "realtime"}]
        assert len(probes) == quiet.call.probes_sent
        for probe in probes:
            CLIENT.validate_python(probe)
        # A session.update while a response is under way does not disturb it.
        quiet.call.send(events.user_text("I like pizza"))
        quiet.call.send(events.response_create())
        await quiet.until(lambda: quiet.count("response.created") == 1)
        quiet.call.send(events.session_update())
        await quiet.until(lambda: quiet.count("output_audio_buffer.stopped") == 1, 20)
        done = next(e for e in quiet.events if e.type == "response.done")
        assert done.data["response"]["status"] == "completed"
        assert quiet.count("session.updated") == 2

        frozen_at = time.monotonic()
        assert quiet_sim.freeze_calls() == [quiet.call.call_id]
        assert steady_sim.freeze_calls() == [steady.call.call_id]
        await asyncio.wait_for(asyncio.gather(quiet.closed.wait(), steady.closed.wait()), DETECT_WITHIN_S + 2)
        for watched in (quiet, steady):
            (closed_at, reason), = watched.closes
            assert closed_at - frozen_at <= DETECT_WITHIN_S, reason
            assert reason == "no answer from the Realtime server for 4 s"
        # New calls to a simulator whose earlier calls are frozen work normally.
        fresh = Watched(quiet_sim.base_url, await mint_token(quiet_sim.base_url))
        await fresh.call.open(10)
        try:
            await fresh.until(lambda: fresh.count("session.created") == 1)
        finally:
            await fresh.close()
    finally:
        await asyncio.gather(quiet.close(), steady.close())
    assert len(quiet.closes) == 1 and len(steady.closes) == 1  # exactly once, also after close()
    for call in [*quiet_sim.calls.values(), *quiet_sim.ended_calls.values()]:
        for event in call.sent:
            SERVER.validate_python(event)


@pytest.mark.slow
async def test_sigstopped_simulator_process_is_reported_within_5s(tmp_path: Path) -> None:
    """Guards against a frozen server process (no FIN, no RST, nothing) leaving the kiosk 'connected'."""
    enable_loopback_candidates()
    server = ChildServer("simulator", ["simulator", "--port", "0", "--api-key", API_KEY, "--voice", "synthetic"],
                         tmp_path / "simulator.log")
    base_url = await server.start()
    assert server.process is not None
    pid = server.process.pid
    stopped = False
    watched = Watched(base_url, await mint_token(base_url))
    try:
        await watched.call.open(10)
        await watched.until(lambda: watched.count("session.created") == 1)
        os.kill(pid, signal.SIGSTOP)
        stopped, stopped_at = True, time.monotonic()
        await asyncio.wait_for(watched.closed.wait(), DETECT_WITHIN_S + 2)
        (closed_at, reason), = watched.closes
        assert closed_at - stopped_at <= DETECT_WITHIN_S
        assert "no answer from the Realtime server" in reason
        # Hanging up on a frozen peer returns within the close timeout.
        started = time.monotonic()
        await watched.close()
        assert time.monotonic() - started < 3.5
    finally:
        if stopped:
            os.kill(pid, signal.SIGCONT)
        await watched.close()
        assert await server.stop() == 0


async def test_close_is_bounded_when_the_peer_connection_close_hangs(steady_sim: RealtimeSimulator) -> None:
    """Guards against a hang-up that never returns (aiortc's close waiting on a dead peer) wedging the kiosk."""
    watched = Watched(steady_sim.base_url, await mint_token(steady_sim.base_url), close_timeout_s=1.0)
    await watched.call.open(10)
    pc = watched.call._pc
    never = asyncio.Event()

    async def close_forever() -> None:
        await never.wait()

    pc.close = close_forever  # type: ignore[method-assign]
    try:
        started = time.monotonic()
        await asyncio.wait_for(watched.close(), 5)
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < 1.5
        assert not watched.call.connected and watched.closes == []
    finally:
        await RTCPeerConnection.close(pc)


async def test_no_close_report_after_close(quiet_sim: RealtimeSimulator) -> None:
    """Guards against the monitor reporting a drop for a call the owner already hung up."""
    watched = Watched(quiet_sim.base_url, await mint_token(quiet_sim.base_url), liveness_probe_s=0.2,
                      liveness_dead_s=0.6)
    await watched.call.open(10)
    quiet_sim.freeze_calls()
    await watched.close()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(watched.closed.wait(), 1.5)
    assert watched.closes == []


async def test_monitor_off_and_simulator_switches(quiet_sim: RealtimeSimulator) -> None:
    """refuse-calls makes new calls fail with a retryable 503; a frozen call heals on unfreeze; with
    both liveness settings at 0 nothing is probed or reported."""
    base = quiet_sim.base_url
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient() as http:
        r = await http.post(f"{base}/simulator/refuse-calls", headers=auth, json={"refuse": "yes"})
        assert r.status_code == 400
        r = await http.post(f"{base}/simulator/refuse-calls", json={"refuse": True})
        assert r.status_code == 401
        r = await http.post(f"{base}/simulator/refuse-calls", headers=auth, json={"refuse": True})
        assert r.json() == {"refuse_calls": True}
        refused = Watched(base, await mint_token(base))
        with pytest.raises(CallError) as failure:
            await refused.call.open(10)
        assert failure.value.status == 503 and failure.value.retryable
        await http.post(f"{base}/simulator/refuse-calls", headers=auth, json={"refuse": False})
        watched = Watched(base, await mint_token(base), liveness_probe_s=0, liveness_dead_s=0)
        await watched.call.open(10)
        try:
            await watched.until(lambda: watched.count("session.created") == 1)
            r = await http.post(f"{base}/simulator/freeze", headers=auth)
            assert r.json() == {"frozen": [watched.call.call_id]}
            assert quiet_sim.calls[watched.call.call_id].frozen
            r = await http.post(f"{base}/simulator/unfreeze", headers=auth)
            assert r.json() == {"unfrozen": [watched.call.call_id]}
            watched.call.send(events.user_text("Hello"))
            watched.call.send(events.response_create())
            await watched.until(lambda: watched.count("response.done") == 1, 20)
            assert watched.call.probes_sent == 0 and watched.closes == []
        finally:
            await watched.close()


async def test_a_stall_of_the_kiosk_loop_is_not_blamed_on_the_server(quiet_sim: RealtimeSimulator) -> None:
    """Guards against a busy kiosk (its own event loop blocked longer than the dead limit) hanging up
    a healthy call: the monitor gives the server a fresh chance after the stall."""
    watched = Watched(quiet_sim.base_url, await mint_token(quiet_sim.base_url), liveness_probe_s=0.3,
                      liveness_dead_s=0.8)
    await watched.call.open(10)
    try:
        await watched.until(lambda: watched.call.probes_sent >= 1)  # the monitor is running
        time.sleep(1.5)  # the kiosk's loop is blocked (deliberately), not waiting for anything
        probes = watched.call.probes_sent
        await watched.until(lambda: watched.call.probes_sent >= probes + 3 or bool(watched.closes), 10)
        assert watched.closes == []
    finally:
        await watched.close()


async def test_rtp_statistics_are_read_only_when_the_data_channel_is_quiet() -> None:
    """While events arrive the statistics report (every transport and stream) is not built four times a
    second for nothing; once the channel goes quiet, RTP that keeps arriving still keeps the call alive,
    and RTP that stops gets the server probed."""
    from appliance.call.liveness import LivenessMonitor

    class Receiver:
        packets = 0
        reads = 0

        async def getStats(self) -> dict[str, object]:
            self.reads += 1
            stats = type("Stats", (), {"type": "inbound-rtp", "packetsReceived": self.packets})()
            return {"in": stats}

    receiver = Receiver()
    probes: list[dict[str, object]] = []
    monitor = LivenessMonitor(1.0, 0, send=lambda event: probes.append(event) is None,
                              receivers=lambda: [receiver], on_dead=lambda reason: None)
    monitor.start("call_test")
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < 1.5:  # events every 50 ms: the tutor is talking
        monitor.note_inbound()
        await asyncio.sleep(0.05)
    assert receiver.reads == 1 and not probes  # the first reading only
    started = loop.time()
    while loop.time() - started < 1.5:  # no events, RTP flowing: alive, and read once per tick
        receiver.packets += 1
        await asyncio.sleep(0.05)
    assert not probes and 4 <= receiver.reads <= 8
    async with asyncio.timeout(3):  # RTP stops too: probed after a second of silence
        while not probes:
            await asyncio.sleep(0.05)
    monitor.stop()
    assert probes[0]["type"] == "session.update"
