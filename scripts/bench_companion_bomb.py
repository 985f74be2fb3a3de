#!/usr/bin/env python3
"""A class change while one client sends gzip bombs: what one hostile laptop costs every other kiosk.

One companion (`stella-kiosk companion serve`, SQLite) and the fake upstream of bench_companion.py (a fixed
mint delay, in its own process). A class change is 200 kiosks asking for a Realtime token spread over 5 s
(as in bench_companion.py). It runs twice: alone, then while one client sends a gzip bomb (--bomb-mb of
zeros, about 1 KB on the wire per MB) to POST /api/planner without a key, again and again until the class
change is over. Prints p50/p99 of the token requests for both, how many bombs were sent and how they were
answered. Usage:

    .venv/bin/python scripts/bench_companion_bomb.py [--kiosks 200] [--bomb-mb 1024] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from bench_companion import SK, FakeUpstream, Result, percentile, run, timed  # noqa: E402

from appliance.daemon.preflight import write_key_file  # noqa: E402
from appliance.daemon.services import ChildServer  # noqa: E402
from tests.bomb_helpers import BombSender, gzip_bomb  # noqa: E402


class Bomber(threading.Thread):
    """Sends the bomb, one connection after another, until stopped; counts how each was answered."""

    def __init__(self, url: str, body: bytes) -> None:
        super().__init__(daemon=True)
        self.url, self.body = url, body
        self.stop = threading.Event()
        self.first_sent = threading.Event()
        self.answers: Counter[int] = Counter()

    def run(self) -> None:
        while not self.stop.is_set():
            sender = BombSender(self.url, "/api/planner", self.body)
            sender.run()  # on this thread: one bomb at a time, as one client would
            self.answers[sender.status] += 1
            self.first_sent.set()


async def class_change(session: aiohttp.ClientSession, url: str, kiosks: dict[str, str], result: Result,
                       spread_s: float, pid: int) -> None:
    await run(result, [lambda k=k: timed(session, result, "POST", f"{url}/api/realtime-token", k, {})
                       for k in kiosks.values()], spread_s=spread_s, pids=[pid])


async def main(args: argparse.Namespace) -> int:
    kiosks = {f"kiosk-{i:04d}": secrets.token_urlsafe(24) for i in range(args.kiosks)}
    bomb = gzip_bomb(args.bomb_mb)
    print(f"bench_companion_bomb: {args.kiosks} kiosks over {args.spread_s:g} s, {args.rounds} round(s), bomb "
          f"{args.bomb_mb} MB inflated / {len(bomb) / 1e6:.1f} MB on the wire, upstream delay "
          f"{args.upstream_delay_ms:g} ms, load average before: {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-bomb-") as tmp:
        workdir = Path(tmp)
        upstream = FakeUpstream(args.upstream_delay_ms, workdir / "upstream.log")
        upstream_url = await upstream.start()
        provision = workdir / "kiosks.txt"
        write_key_file(provision, "\n".join(f"{name}={key}" for name, key in kiosks.items()))
        config = workdir / "companion.toml"
        config.write_text(f'db_path = "{workdir / "companion.db"}"\nopenai_base_url = "{upstream_url}"\n'
                          f"tokens_per_hour = {10 * args.rounds + 10}\n")
        child = ChildServer("companion", ["companion", "serve", "--port", "0", "--config", str(config),
                                          "--provision-file", str(provision)], workdir / "companion.log",
                            env={"OPENAI_API_KEY": SK})
        url = await child.start(timeout_s=120)
        assert child.process is not None
        pid = child.process.pid
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                             timeout=aiohttp.ClientTimeout(total=120)) as session:
                await run(Result("warm-up"), [lambda: timed(session, Result("w"), "GET", f"{url}/api/health", None,
                                                            None) for _ in range(20)])
                alone = Result(f"class change: {args.rounds} x {args.kiosks} tokens, alone")
                bombed = Result(f"the same while one client sends {args.bomb_mb} MB gzip bombs")
                bombs: Counter[int] = Counter()
                for _ in range(args.rounds):
                    await class_change(session, url, kiosks, alone, args.spread_s, pid)
                    bomber = Bomber(url, bomb)
                    bomber.start()
                    await asyncio.to_thread(bomber.first_sent.wait, 120)  # the bomb is on the wire
                    await class_change(session, url, kiosks, bombed, args.spread_s, pid)
                    bomber.stop.set()
                    await asyncio.to_thread(bomber.join, 120)
                    bombs.update(bomber.answers)
        finally:
            await child.stop()
            await upstream.stop()
    print(alone.line())
    print(bombed.line(percentile(alone.latencies_ms, 99)).replace("companion adds", "the bombs add"))
    answered = ", ".join(f"{n} x {status or 'closed without an answer'}" for status, n in sorted(bombs.items()))
    print(f"  bombs sent: {sum(bombs.values())} ({answered})")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kiosks", type=int, default=200)
    parser.add_argument("--spread-s", type=float, default=5.0, help="the class change's spread (default 5 s)")
    parser.add_argument("--rounds", type=int, default=3, help="class changes of each kind (default 3)")
    parser.add_argument("--bomb-mb", type=int, default=1024, help="the bomb's inflated size in MB (default 1024)")
    parser.add_argument("--upstream-delay-ms", type=float, default=50.0)
    sys.exit(asyncio.run(main(parser.parse_args())))
