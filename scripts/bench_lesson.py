#!/usr/bin/env python3
"""Benchmark: N lessons of the real kiosk against the local simulator, and the bare-aiortc floor.

Prints, for the kiosk (this process: kiosk code, aiortc, the companion client) with the simulator
and the companion in child processes as they would be on other machines:
  * press → connected (data channel open), ms, p50/p95
  * press → first tutor audio at the speaker sink (the greeting), ms, p50/p95
  * CPU seconds per second of call (this process, user+system), peak RSS
and the same for a bare aiortc offer/answer pair with no kiosk code at all (the answerer in a child
process sends a tone as soon as it connects), so each figure is also a ratio to that floor.

    .venv/bin/python scripts/bench_lesson.py --lessons 10 --hold 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appliance.audio.dsp import rms_dbfs  # noqa: E402
from appliance.audio.tracks import PacedAudioTrack, frame_to_mono  # noqa: E402
from appliance.net import enable_loopback_candidates  # noqa: E402


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the kiosk ----------------------------------------------------------------------------------


async def bench_kiosk(lessons: int, hold_s: float, workdir: Path) -> dict[str, list[float]]:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from appliance.audio.wav import NullSink, ScriptedMicrophone
    from appliance.companion.client import CompanionClient
    from appliance.config import config_from_dict
    from appliance.kiosk import Kiosk
    from appliance.preflight import write_key_file
    from appliance.services import ChildServer
    from appliance.state import State
    from appliance.store import SessionStore
    from appliance.tls import ssl_context
    from tests.harness import Recorder

    api_key = "sk-bench-" + secrets.token_hex(8)
    device_key = secrets.token_urlsafe(24)
    provision = workdir / "provision.txt"
    write_key_file(provision, f"bench={device_key}")
    simulator = ChildServer("simulator", ["simulator", "--port", "0", "--api-key", api_key], workdir / "sim.log")
    companion = ChildServer("companion", ["companion", "serve", "--port", "0", "--db", str(workdir / "c.db"),
                                          "--provision-file", str(provision)], workdir / "companion.log",
                            env={"OPENAI_API_KEY": api_key})
    results: dict[str, list[float]] = {"connect_ms": [], "first_audio_ms": [], "cpu_per_call_s": []}
    try:
        sim_url = await simulator.start()
        companion.args += ["--openai-base-url", sim_url]
        comp_url = await companion.start()
        write_key_file(workdir / "device.key", device_key)
        config = config_from_dict({
            "kiosk": {"id": "bench", "state_dir": str(workdir / "state"), "log_level": "warning"},
            "companion": {"url": comp_url, "device_key_file": str(workdir / "device.key")},
            "realtime": {"base_url": sim_url, "allow_loopback_ice": True},
            "audio": {"input": "wav", "output": "null"},
            "gpio": {"pin_factory": "mock"},
        })
        Device.pin_factory = MockFactory(pin_class=MockPWMPin)
        store = SessionStore(config.kiosk.state_dir)
        client = CompanionClient(comp_url, device_key, "bench", ssl_context=ssl_context())
        rec = Recorder()
        kiosk = Kiosk(config, companion=client, store=store, mic=ScriptedMicrophone(sample_rate=48000),
                      speaker=NullSink(sample_rate=48000), observer=rec)
        ready = asyncio.Event()
        runner = asyncio.create_task(kiosk.run(ready))
        await ready.wait()
        for i in range(lessons):
            saved_before = len(rec.saved)
            connected_before = rec.states.count(State.CONNECTED)
            kiosk.press()
            await rec.until(lambda c=connected_before: rec.states.count(State.CONNECTED) > c, timeout=20)
            lesson = kiosk.lesson
            assert lesson is not None
            cpu0, t0 = cpu_s(), time.monotonic()
            await rec.until(lambda lesson=lesson: lesson.first_audio_at is not None, timeout=20)
            results["connect_ms"].append(lesson.connect_ms or 0)
            results["first_audio_ms"].append(lesson.first_audio_ms or 0)
            await asyncio.sleep(max(0.0, hold_s - (time.monotonic() - t0)))  # hold the call: the measured load
            results["cpu_per_call_s"].append((cpu_s() - cpu0) / (time.monotonic() - t0))
            kiosk.press()
            await rec.until(lambda n=saved_before: len(rec.saved) > n, timeout=20)
            print(f"  kiosk lesson {i + 1}/{lessons}: connect {results['connect_ms'][-1]:.0f} ms, "
                  f"first audio {results['first_audio_ms'][-1]:.0f} ms", file=sys.stderr)
        kiosk.shutdown()
        await runner
        await kiosk.aclose()
        store.close()
    finally:
        await companion.stop()
        await simulator.stop()
    return results


# -- the floor: bare aiortc, no kiosk code ------------------------------------------------------

ANSWERER = r"""
import asyncio, json, sys, fractions
import numpy as np, av
from aiortc import RTCPeerConnection, RTCConfiguration, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
import aioice.ice
_orig = aioice.ice.get_host_addresses
def _with_loopback(use_ipv4, use_ipv6):
    return list(_orig(use_ipv4=use_ipv4, use_ipv6=use_ipv6)) + (["127.0.0.1"] if use_ipv4 else [])
aioice.ice.get_host_addresses = _with_loopback

class Tone(MediaStreamTrack):
    kind = "audio"
    def __init__(self):
        super().__init__(); self.pts = 0; self.start = None
        t = np.arange(960) / 48000; self.samples = (8000 * np.sin(2 * np.pi * 220 * t)).astype(np.int16)
    async def recv(self):
        loop = asyncio.get_running_loop()
        if self.start is None: self.start = loop.time()
        wait = self.start + self.pts / 48000 - loop.time()
        if wait > 0: await asyncio.sleep(wait)
        f = av.AudioFrame.from_ndarray(self.samples.reshape(1, -1), format="s16", layout="mono")
        f.sample_rate = 48000; f.pts = self.pts; f.time_base = fractions.Fraction(1, 48000); self.pts += 960
        return f

async def main():
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line: return
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        @pc.on("track")
        def on_track(track):
            async def drain():
                try:
                    while True: await track.recv()
                except Exception:
                    pass
            asyncio.ensure_future(drain())
        pc.addTrack(Tone())
        await pc.setRemoteDescription(RTCSessionDescription(**json.loads(line)))
        await pc.setLocalDescription(await pc.createAnswer())
        print(json.dumps({"sdp": pc.localDescription.sdp, "type": "answer"}), flush=True)
        line = await reader.readline()  # "close"
        await pc.close()
        if not line: return
asyncio.run(main())
"""


async def bench_floor(lessons: int, hold_s: float) -> dict[str, list[float]]:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", ANSWERER, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    results: dict[str, list[float]] = {"connect_ms": [], "first_audio_ms": [], "cpu_per_call_s": []}
    try:
        for i in range(lessons):
            start = time.monotonic()
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTrack(PacedAudioTrack(lambda n: np.zeros(n, np.int16)))
            channel = pc.createDataChannel("oai-events")
            opened = asyncio.Event()
            channel.on("open", opened.set)
            first_audio: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            drains: list[asyncio.Task[None]] = []

            @pc.on("track")
            def on_track(track, first_audio=first_audio, drains=drains) -> None:
                async def drain() -> None:
                    while True:
                        frame = await track.recv()
                        if not first_audio.done() and rms_dbfs(frame_to_mono(frame)) > -40:
                            first_audio.set_result(time.monotonic())
                drains.append(asyncio.ensure_future(drain()))

            await pc.setLocalDescription(await pc.createOffer())
            proc.stdin.write((json.dumps({"sdp": pc.localDescription.sdp, "type": "offer"}) + "\n").encode())
            await proc.stdin.drain()
            answer = json.loads(await proc.stdout.readline())
            await pc.setRemoteDescription(RTCSessionDescription(**answer))
            await asyncio.wait_for(opened.wait(), 20)
            connected = time.monotonic()
            cpu0 = cpu_s()
            heard = await asyncio.wait_for(first_audio, 20)
            results["connect_ms"].append((connected - start) * 1000)
            results["first_audio_ms"].append((heard - start) * 1000)
            await asyncio.sleep(max(0.0, hold_s - (time.monotonic() - connected)))  # hold the call
            results["cpu_per_call_s"].append((cpu_s() - cpu0) / (time.monotonic() - connected))
            for task in drains:
                task.cancel()
            await pc.close()
            proc.stdin.write(b"close\n")
            await proc.stdin.drain()
            print(f"  floor call {i + 1}/{lessons}: connect {results['connect_ms'][-1]:.0f} ms", file=sys.stderr)
    finally:
        proc.stdin.close()
        await proc.wait()
    return results


def run_part(part: str, lessons: int, hold_s: float) -> dict[str, object]:
    """One side of the comparison in a fresh interpreter, so peak RSS belongs to that side alone."""
    enable_loopback_candidates()
    startup_rss = peak_rss_mb()
    if part == "floor":
        figures: dict[str, object] = dict(asyncio.run(bench_floor(lessons, hold_s)))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            figures = dict(asyncio.run(bench_kiosk(lessons, hold_s, Path(tmp))))
    figures["peak_rss_mb"] = peak_rss_mb()
    figures["startup_rss_mb"] = startup_rss
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lessons", type=int, default=10)
    parser.add_argument("--hold", type=float, default=8.0, help="seconds each call is held (CPU measurement)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--part", choices=["floor", "kiosk"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        print(json.dumps(run_part(args.part, args.lessons, args.hold)))
        return 0
    parts = {}
    for part in ("floor", "kiosk"):
        out = subprocess.run([sys.executable, __file__, "--part", part, "--lessons", str(args.lessons),
                              "--hold", str(args.hold)], check=True, stdout=subprocess.PIPE, text=True)
        parts[part] = json.loads(out.stdout.strip().splitlines()[-1])
    floor, kiosk = parts["floor"], parts["kiosk"]
    rows = [
        ("press → connected (ms)", "connect_ms", 0),
        ("press → first tutor audio (ms)", "first_audio_ms", 0),
        ("CPU s per s of call", "cpu_per_call_s", 3),
    ]
    print(f"\n{args.lessons} lessons, calls held {args.hold:g} s, Python {sys.version.split()[0]}")
    print(f"{'figure':34} {'kiosk p50':>10} {'p95':>8} {'floor p50':>10} {'p95':>8} {'ratio p50':>10}")
    summary: dict[str, dict[str, float]] = {}
    for label, key, digits in rows:
        k50, k95 = pct(kiosk[key], 0.5), pct(kiosk[key], 0.95)
        f50, f95 = pct(floor[key], 0.5), pct(floor[key], 0.95)
        ratio = k50 / f50 if f50 else float("nan")
        print(f"{label:34} {k50:10.{digits}f} {k95:8.{digits}f} {f50:10.{digits}f} {f95:8.{digits}f} {ratio:9.2f}x")
        summary[key] = {"kiosk_p50": k50, "kiosk_p95": k95, "floor_p50": f50, "floor_p95": f95}
    k_rss, f_rss = kiosk["peak_rss_mb"], floor["peak_rss_mb"]
    print(f"{'peak RSS (MB)':34} {k_rss:10.0f} {'':8} {f_rss:10.0f} {'':8} {k_rss / f_rss:9.2f}x")
    print(f"{'RSS after imports (MB)':34} {kiosk['startup_rss_mb']:10.0f} {'':8} {floor['startup_rss_mb']:10.0f}")
    summary["peak_rss_mb"] = {"kiosk": k_rss, "floor": f_rss}
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

