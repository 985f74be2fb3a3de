#!/usr/bin/env python3
"""Benchmark: the kiosk daemon's start → READY, and its CPU and memory while idle.

Starts the simulator and the companion in child processes (or uses a running simulator with
``--simulator-url``), then runs the real daemon (`stella-kiosk run`: mock pins, the scripted silent
microphone, no speaker, as on a kiosk without a sound card) ``--runs`` times under a fake service
manager: a bound NOTIFY_SOCKET that receives ``READY=1`` exactly as systemd would. For each run:

  * start → READY: from spawning the process to the ``READY=1`` datagram, ms (and the CPU time the
    daemon had used by then: on a machine shared with other work, wall time includes waiting for a core)
  * idle CPU: user+system CPU of the daemon (all its threads, /proc/PID/stat) over ``--idle`` seconds
    after READY plus a settling pause (prefetch and the first sync run once), in % of one core
  * RSS once idle (/proc/PID/status VmRSS), MB

and, for comparison, how long the bare interpreter takes to start and to import aiortc.

    .venv/bin/python scripts/bench_startup.py --runs 5 --idle 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_stack import BenchServices  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all threads (fields 14 and 15 of /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def interpreter_ms(code: str) -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    return (time.monotonic() - start) * 1000


async def one_run(toml: Path, workdir: Path, idle_s: float, settle_s: float) -> dict[str, float]:
    notify = workdir / "notify.sock"
    notify.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "PYTHONPATH": str(ROOT)}
    env.pop("WATCHDOG_USEC", None)
    env.pop("WATCHDOG_PID", None)
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "appliance.cli", "run", "--config", str(toml),
                                                env=env, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(30):
            while b"READY=1" not in (await loop.sock_recv(sock, 4096)).split(b"\n"):
                pass
        ready_ms = (time.monotonic() - start) * 1000
        ready_cpu_ms = cpu_s(proc.pid) * 1000  # CPU used to get there: less sensitive to other load than wall time
        await asyncio.sleep(settle_s)  # let the first prefetch and sync finish: idle means idle
        cpu0, t0 = cpu_s(proc.pid), time.monotonic()
        await asyncio.sleep(idle_s)  # the measured idle period
        idle = (cpu_s(proc.pid) - cpu0) / (time.monotonic() - t0)
        rss = rss_mb(proc.pid)
        proc.terminate()
        async with asyncio.timeout(15):
            code = await proc.wait()
        if code != 0:
            raise SystemExit(f"the daemon exited {code} on SIGTERM")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        sock.close()
    return {"ready_ms": ready_ms, "ready_cpu_ms": ready_cpu_ms, "idle_cpu_pct": idle * 100, "rss_mb": rss}


async def bench(args: argparse.Namespace, workdir: Path) -> list[dict[str, float]]:
    services = BenchServices(workdir, api_key=args.api_key, simulator_url=args.simulator_url)
    try:
        await services.start()
        toml = services.write_kiosk_toml(workdir / "kiosk.toml")
        runs = []
        for i in range(args.runs):
            runs.append(await one_run(toml, workdir, args.idle, args.settle))
            r = runs[-1]
            print(f"  run {i + 1}/{args.runs}: READY after {r['ready_ms']:.0f} ms, idle CPU {r['idle_cpu_pct']:.2f} %,"
                  f" RSS {r['rss_mb']:.0f} MB", file=sys.stderr)
        return runs
    finally:
        await services.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measured per run")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after READY before measuring idle")
    parser.add_argument("--simulator-url", help="use this running simulator (e.g. on the LAN) instead of a child")
    parser.add_argument("--api-key", help="the simulator's API key (with --simulator-url)")
    args = parser.parse_args()
    if args.simulator_url and not args.api_key:
        parser.error("--simulator-url needs --api-key (the key the simulator was started with)")
    bare = [interpreter_ms("pass") for _ in range(3)]
    aiortc = [interpreter_ms("import aiortc") for _ in range(3)]
    with tempfile.TemporaryDirectory() as tmp:
        runs = asyncio.run(bench(args, Path(tmp)))
    print(f"\n{args.runs} daemon starts, idle measured over {args.idle:g} s each, Python {sys.version.split()[0]}")
    print(f"{'figure':36} {'p50':>8} {'p95':>8} {'max':>8}")
    rows = (("start → READY (ms)", "ready_ms"), ("CPU used until READY (ms)", "ready_cpu_ms"),
            ("idle CPU (% of one core)", "idle_cpu_pct"), ("RSS when idle (MB)", "rss_mb"))
    for label, key in rows:
        values = [r[key] for r in runs]
        print(f"{label:36} {pct(values, 0.5):8.2f} {pct(values, 0.95):8.2f} {max(values):8.2f}")
    print(f"{'interpreter start, `pass` (ms)':36} {pct(bare, 0.5):8.0f}")
    print(f"{'interpreter start + import aiortc (ms)':36} {pct(aiortc, 0.5):8.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
