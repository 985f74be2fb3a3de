#!/usr/bin/env python3
"""Benchmark: the board's question — on what share of one CPU core does a lesson's call stay glitch-free?

A Raspberry Pi's core is 4–5× (Pi 4) to 8–10× (Pi 3, Zero 2 W) slower than a desktop's. This script
caps only the call's process with a CPU quota (a cgroup: v1's ``cpu`` controller or v2's ``cpu.max``,
whichever the machine has) and runs real calls at each quota, for the kiosk's own code and for a bare
aiortc client (the floor) against the same local simulator, which runs uncapped as the real service
would. The tutor speaks throughout: the kiosk types "Tell me more" whenever the tutor goes quiet, the
floor asks for another answer. Per quota and side it prints:

  * speaker: frames that came more than 40 ms after the one before (late), p99 and largest gap;
  * microphone, as heard by the simulator: late frames, p99 gap, share of the audio lost;
  * press → connected and press → first tutor audio (ms), CPU seconds per second of call;

and, per CFS period, the smallest glitch-free quota of each side (no late frame on either path and no
microphone audio lost, at that quota and every larger one tried).

    .venv/bin/python scripts/bench_quota.py                       # 100 % … 5 %, periods 100 and 10 ms
    .venv/bin/python scripts/bench_quota.py --quotas 30,20,15,10 --periods 100 --calls 2 --hold 15

It needs a cgroup it can write (root, or a delegated cgroup v2 subtree); where there is none it says
so in one line and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from appliance.common.arrival import LATE_GAP_MS, ArrivalGaps  # noqa: E402

ASK = json.dumps({"type": "response.create"})
"""What the floor sends for another answer."""
MIN_QUOTA_US = 1000
"""The kernel refuses a CFS quota under 1 ms, so a 10 ms period cannot go below 10 %."""


# -- the cgroup ---------------------------------------------------------------------------------


@dataclass
class CpuCap:
    """One cgroup that holds the call's process at a share of one core."""

    path: Path
    version: int

    @classmethod
    def create(cls, name: str, mounts_file: Path = Path("/proc/self/mounts")) -> tuple[CpuCap | None, str]:
        """A new cgroup under the machine's cpu controller, or None and why there is none."""
        mounts = [line.split() for line in mounts_file.read_text().splitlines()]
        why = "no cgroup cpu controller is mounted (neither v1 nor v2)"
        for _dev, where, fstype, options, *_ in mounts:
            if fstype == "cgroup" and "cpu" in options.split(","):
                candidate: tuple[Path, int] | None = (Path(where), 1)
            elif fstype == "cgroup2" and "cpu" in _read(Path(where) / "cgroup.controllers").split():
                candidate = (Path(where), 2)
                with contextlib.suppress(OSError):  # already enabled, or not ours to enable: mkdir tells
                    (Path(where) / "cgroup.subtree_control").write_text("+cpu")
            else:
                continue
            path = candidate[0] / name
            try:
                path.mkdir(exist_ok=True)
                cap = cls(path, candidate[1])
                cap.limit(100, 100)
                return cap, ""
            except OSError as error:
                why = f"the cgroup at {candidate[0]} is not writable here ({error.strerror})"
                with contextlib.suppress(OSError):
                    path.rmdir()
        return None, why

    def limit(self, percent: float, period_ms: float) -> None:
        period_us = int(period_ms * 1000)
        quota_us = int(period_us * percent / 100)
        if self.version == 1:
            (self.path / "cpu.cfs_period_us").write_text(str(period_us))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota_us))
        else:
            (self.path / "cpu.max").write_text(f"{quota_us} {period_us}")

    def enter(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


# -- one side, in its own (capped) process ------------------------------------------------------


def cpu_s() -> float:
    times = os.times()
    return times.user + times.system


async def simulator_mic_figures(simulator_url: str, api_key: str) -> dict[str, float]:
    """The newest call's microphone arrival, as the simulator heard it."""
    import httpx

    async with httpx.AsyncClient(timeout=10) as http:
        reply = await http.get(f"{simulator_url}/simulator/audio-arrival",
                               headers={"Authorization": f"Bearer {api_key}"})
        reply.raise_for_status()
        return dict(reply.json()["calls"][-1])


async def kiosk_side(settings: dict[str, Any], cap: CpuCap, calls: int, hold_s: float,
                     api_key: str) -> list[dict[str, Any]]:
    """The kiosk's own code (``build_kiosk``, mock pins, a silent microphone, a timed null speaker)."""
    from bench_lesson import BenchObserver
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from appliance.audio.wav import NullSink, ScriptedMicrophone
    from appliance.call.webrtc import warm_up
    from appliance.common.tls import ssl_context
    from appliance.config import config_from_dict
    from appliance.core.state import State
    from appliance.daemon.assemble import build_kiosk
    from appliance.store.sessions import SessionStore
    from appliance.uplink.client import CompanionClient

    class TimedSink(NullSink):
        """A null speaker that notes when each frame reaches it."""

        def __init__(self, sample_rate: int) -> None:
            super().__init__(sample_rate=sample_rate)
            self.arrival = ArrivalGaps()

        def write(self, samples: Any) -> None:  # a cue is one long write: it covers the gap after it
            self.arrival.frame(time.monotonic(), holds_ms=len(samples) * 1000 / self.sample_rate)
            super().write(samples)

    class Talker(BenchObserver):
        """Keeps the tutor talking: a typed message each time it goes quiet."""

        talking = False

        def tutor_audible(self, audible: bool) -> None:
            super().tutor_audible(audible)
            if self.talking and not audible:
                kiosk.say("Tell me more, please.")

    warm_up()
    config = config_from_dict(settings)
    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    store = SessionStore(config.kiosk.state_dir)
    client = CompanionClient(config.companion.url, Path(settings["companion"]["device_key_file"]).read_text().strip(),
                             config.kiosk.id, ssl_context=ssl_context())
    sink, rec = TimedSink(sample_rate=48000), Talker()
    kiosk = build_kiosk(config, companion=client, store=store, mic=ScriptedMicrophone(sample_rate=48000),
                        speaker=sink, observer=rec)
    ready = asyncio.Event()
    runner = asyncio.create_task(kiosk.run(ready))
    await ready.wait()
    cap.enter(os.getpid())  # from here on, the board's budget
    results = []
    try:
        for _ in range(calls):
            if kiosk.parts.opener.prefetcher is not None:
                await asyncio.wait_for(kiosk.parts.opener.prefetcher.filled.wait(), 60)
            saved, connected = len(rec.saved), rec.states.count(State.CONNECTED)
            sink.arrival = ArrivalGaps()
            kiosk.press()
            await rec.until(lambda c=connected: rec.states.count(State.CONNECTED) > c, timeout=60)
            lesson = kiosk.lesson
            assert lesson is not None
            cpu0, t0 = cpu_s(), time.monotonic()
            await rec.until(lambda lesson=lesson: lesson.first_audio_at is not None, timeout=60)
            rec.talking = True
            await asyncio.sleep(max(0.0, hold_s - (time.monotonic() - t0)))  # the call's load is the measure
            cpu = (cpu_s() - cpu0) / (time.monotonic() - t0)
            speaker = sink.arrival.summary()
            rec.talking = False
            kiosk.press()
            await rec.until(lambda n=saved: len(rec.saved) > n, timeout=60)
            results.append({"connect_ms": lesson.connect_ms or 0.0, "first_audio_ms": lesson.first_audio_ms or 0.0,
                            "cpu_per_call_s": cpu, "speaker": speaker,
                            "mic": await simulator_mic_figures(settings["realtime"]["base_url"], api_key)})
    finally:
        kiosk.shutdown()
        await runner
        await kiosk.aclose()
        store.close()
    return results


async def floor_side(simulator_url: str, api_key: str, cap: CpuCap, calls: int,
                     hold_s: float) -> list[dict[str, Any]]:
    """Bare aiortc: the offer POSTed to the simulator, a silent microphone, frames drained and timed,
    and another answer asked for whenever the last one has played."""
    import httpx
    import numpy as np
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from appliance.audio.dsp import rms_dbfs
    from appliance.audio.tracks import PacedAudioTrack, frame_to_mono

    results = []
    cap.enter(os.getpid())
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(calls):
            start = time.monotonic()
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTrack(PacedAudioTrack(lambda n: np.zeros(n, np.int16)))
            channel = pc.createDataChannel("oai-events")
            opened = asyncio.Event()
            loop = asyncio.get_running_loop()
            first_audio: asyncio.Future[float] = loop.create_future()
            speaker = ArrivalGaps()
            drains: list[asyncio.Task[None]] = []

            @channel.on("open")
            def on_open(channel: Any = channel, opened: asyncio.Event = opened) -> None:
                opened.set()
                channel.send(ASK)

            @channel.on("message")
            def on_message(message: Any, channel: Any = channel) -> None:
                if isinstance(message, str) and '"output_audio_buffer.stopped"' in message:
                    channel.send(ASK)

            @pc.on("track")
            def on_track(track: Any, first_audio: asyncio.Future[float] = first_audio,
                         speaker: ArrivalGaps = speaker, drains: list[asyncio.Task[None]] = drains) -> None:
                async def drain() -> None:
                    while True:
                        frame = await track.recv()
                        speaker.frame(time.monotonic())
                        if not first_audio.done() and rms_dbfs(frame_to_mono(frame)) > -40:
                            first_audio.set_result(time.monotonic())
                drains.append(asyncio.ensure_future(drain()))

            await pc.setLocalDescription(await pc.createOffer())
            reply = await http.post(f"{simulator_url}/v1/realtime/calls", content=pc.localDescription.sdp.encode(),
                                    headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {api_key}"})
            reply.raise_for_status()
            await pc.setRemoteDescription(RTCSessionDescription(sdp=reply.text, type="answer"))
            await asyncio.wait_for(opened.wait(), 60)
            connected, cpu0 = time.monotonic(), cpu_s()
            heard = await asyncio.wait_for(first_audio, 60)
            await asyncio.sleep(max(0.0, hold_s - (time.monotonic() - connected)))
            cpu = (cpu_s() - cpu0) / (time.monotonic() - connected)
            figures = speaker.summary()
            for task in drains:
                task.cancel()
            location = reply.headers.get("Location", "")
            if location:
                await http.post(f"{simulator_url}{location}/hangup", headers={"Authorization": f"Bearer {api_key}"})
            await pc.close()
            results.append({"connect_ms": (connected - start) * 1000, "first_audio_ms": (heard - start) * 1000,
                            "cpu_per_call_s": cpu, "speaker": figures,
                            "mic": await simulator_mic_figures(simulator_url, api_key)})
    return results


def run_side(args: argparse.Namespace) -> int:
    from appliance.common.net import enable_loopback_candidates

    enable_loopback_candidates()
    cap = CpuCap(Path(args.cgroup), args.cgroup_version)
    settings = json.loads(Path(args.settings).read_text())
    if args.side == "kiosk":
        out = asyncio.run(kiosk_side(settings, cap, args.calls, args.hold, args.api_key))
    else:
        out = asyncio.run(floor_side(settings["realtime"]["base_url"], args.api_key, cap, args.calls, args.hold))
    print(json.dumps(out))
    return 0


# -- the sweep ----------------------------------------------------------------------------------


def glitch_free(calls: list[dict[str, Any]]) -> bool:
    return all(c["speaker"]["late_frames"] == 0 and c["mic"]["late_frames"] == 0 and c["mic"]["lost_share"] == 0
               for c in calls)


def smallest_glitch_free(rows: list[tuple[float, list[dict[str, Any]] | None]]) -> float | None:
    """The smallest quota that was glitch-free with every larger quota tried also glitch-free."""
    best = None
    for quota, calls in sorted(rows, key=lambda r: -r[0]):
        if calls is None or not glitch_free(calls):
            break
        best = quota
    return best


def describe(calls: list[dict[str, Any]] | None) -> str:
    if calls is None:
        return f"{'(failed: see the log above)':>62}"
    spk_late = sum(c["speaker"]["late_frames"] for c in calls)
    spk_p99 = max(c["speaker"]["p99_gap_ms"] for c in calls)
    spk_max = max(c["speaker"]["max_gap_ms"] for c in calls)
    mic_late = sum(c["mic"]["late_frames"] for c in calls)
    mic_p99 = max(c["mic"]["p99_gap_ms"] for c in calls)
    lost = max(c["mic"]["lost_share"] for c in calls) * 100
    connect = max(c["connect_ms"] for c in calls)
    first = max(c["first_audio_ms"] for c in calls)
    cpu = sum(c["cpu_per_call_s"] for c in calls) / len(calls)
    return (f"{spk_late:4d} {spk_p99:5.0f} {spk_max:5.0f} | {mic_late:4d} {mic_p99:5.0f} {lost:5.1f} | "
            f"{connect:5.0f} {first:5.0f} {cpu:5.3f}")


def sweep(args: argparse.Namespace) -> int:
    cap, why = CpuCap.create(f"stella-bench-{os.getpid()}")
    if cap is None:
        print(f"quota sweep skipped: {why}; run it as root on a machine with a cgroup cpu controller")
        return 0
    from bench_stack import BenchServices

    quotas = sorted({float(q) for q in args.quotas.split(",")}, reverse=True)
    periods = [float(p) for p in args.periods.split(",")]
    sides = args.sides.split(",")
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        services = BenchServices(workdir)

        async def start() -> None:
            await services.start()
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(start())
            settings_file = workdir / "kiosk.json"
            settings_file.write_text(json.dumps(services.kiosk_settings()))
            print(f"{args.calls} call(s) × {args.hold:g} s per quota and side; tutor speaking throughout; "
                  f"late = a frame more than {LATE_GAP_MS:g} ms after the one before; cgroup v{cap.version}")
            for period in periods:
                print(f"\nCFS period {period:g} ms")
                print(f"{'':>7} {'side':6} {'speaker: late p99 max':>22} | {'mic: late p99 lost%':>19} | "
                      f"{'connect first-audio CPU/s':>25}")
                rows: dict[str, list[tuple[float, list[dict[str, Any]] | None]]] = {side: [] for side in sides}
                for quota in quotas:
                    if period * 1000 * quota / 100 < MIN_QUOTA_US:
                        print(f"{quota:6g}% (under the kernel's 1 ms minimum quota at this period: skipped)")
                        continue
                    for side in sides:
                        cap.limit(quota, period)
                        calls = run_capped(side, cap, settings_file, services.api_key, args, workdir)
                        rows[side].append((quota, calls))
                        print(f"{quota:6g}% {side:6} {describe(calls)}", flush=True)
                    cap.limit(100, 100)
                smallest = {side: smallest_glitch_free(rows[side]) for side in sides}
                print("smallest glitch-free quota: " + ", ".join(
                    f"{side} {'none tried' if q is None else f'{q:g} %'}" for side, q in smallest.items()))
                report[f"{period:g}ms"] = {"rows": {side: rows[side] for side in sides}, "smallest": smallest}
        finally:
            loop.run_until_complete(services.stop())
            loop.close()
            cap.remove()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def run_capped(side: str, cap: CpuCap, settings_file: Path, api_key: str, args: argparse.Namespace,
               workdir: Path) -> list[dict[str, Any]] | None:
    """One side's calls in a fresh process that puts itself in the cgroup once its helpers run."""
    state = workdir / "state"
    state.mkdir(exist_ok=True)
    budget_s = 120 + args.calls * (args.hold + 180)  # a starved process is slow, never stuck for ever
    try:
        done = subprocess.run([sys.executable, __file__, "--side", side, "--cgroup", str(cap.path),
                               "--cgroup-version", str(cap.version), "--settings", str(settings_file),
                               "--api-key", api_key, "--calls", str(args.calls), "--hold", str(args.hold)],
                              capture_output=True, text=True, timeout=budget_s)
    except subprocess.TimeoutExpired:
        print(f"{side}: no result within {budget_s:g} s", file=sys.stderr)
        return None
    if done.returncode != 0:
        print(done.stderr[-2000:], file=sys.stderr)
        return None
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quotas", default="100,50,30,20,15,10,5", help="shares of one core, in %%")
    parser.add_argument("--periods", default="100,10", help="CFS periods, in ms")
    parser.add_argument("--sides", default="kiosk,floor")
    parser.add_argument("--calls", type=int, default=2, help="calls per quota and side")
    parser.add_argument("--hold", type=float, default=15.0, help="seconds each call is held")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--side", choices=["kiosk", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--cgroup", help=argparse.SUPPRESS)
    parser.add_argument("--cgroup-version", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        return run_side(args)
    return sweep(args)


if __name__ == "__main__":
    sys.exit(main())
