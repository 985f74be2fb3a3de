#!/usr/bin/env python3
"""Soak benchmark: one real kiosk daemon through hundreds of lessons, or one very long call.

Why: a kiosk runs for a school year without anyone restarting it. A few lessons in a test cannot
show a slow leak (memory, file descriptors, threads, asyncio tasks or timers) or a store that gets
slower as lessons pile up; this script drives ONE daemon process (`stella-kiosk run`) the way a
teacher would over its control socket and watches those figures after every lesson.

The simulator and the companion run in child processes (as in bench_lesson.py); the kiosk is a real
daemon process with mock pins, the scripted (silent) microphone and no speaker, on loopback ICE.

Soak (default): N lessons back-to-back, each: press, wait until connected and the tutor's greeting
is in the transcript, type one or two lines (each waits for the tutor's answer), press again, wait until
idle and the lesson is saved with end reason "button". After every lesson it samples the daemon's
RSS, open fds and threads (/proc) and, from `status`, its tasks, timers, queue and checkpoint
latency. PASS when, after the warm-up, RSS grew at most --max-rss-growth-mb, fds/threads/tasks/
timers stayed flat, checkpoint p99 stayed flat and every lesson completed; exit status 1 otherwise.

Long call (--long-call MINUTES): one lesson held open that long against the simulator's ICE-lite
consent emulation (on by default) with the kiosk's consent fix (on by default), a typed line every
--line-every seconds. PASS when the call is still connected at the end, the tutor answers the last
line, and the lesson is saved with end reason "button" once ended with a press.

    .venv/bin/python scripts/bench_soak.py --lessons 300
    .venv/bin/python scripts/bench_soak.py --long-call 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_stack import BenchServices  # noqa: E402

from appliance.daemon.services import ServiceError  # noqa: E402

LINES = [
    "Hello, my name is Sam and I like football.",
    "Yesterday I went to the market with my mother.",
    "I would like to practise ordering food in a cafe.",
    "My favourite subject at school is science.",
    "Can you help me with the past tense, please?",
    "We play in the park after school.",
]
POLL_S = 0.05
"""Status poll interval while waiting for a condition (each poll is one control-socket round trip)."""
STEP_TIMEOUT_S = 20.0
"""Deadline for one step of a lesson (connect, a tutor answer, back to idle)."""
START_TIMEOUT_S = 60.0
"""How long the daemon may take from exec to answering `status` idle (imports on a loaded machine)."""
FLAT_TOLERANCE = {"fds": 3, "threads": 3, "tasks": 2, "timers": 2}
"""How far a count may wander after warm-up and still be flat: transients such as a control
connection being closed, a prefetch request in flight or a pending long-press timer."""
TREND_ALLOWANCE = {"threads": 1}
"""How much the median of the last window may exceed the first: thread pools (asyncio's default
executor, DNS look-ups) start threads lazily up to a fixed cap, so one more thread late in a run is
a pool warming up, not a leak; a leak keeps climbing and breaks the range tolerance."""


class StepTimeout(Exception):
    """A condition was not reached before its deadline; the message says which and the last status."""


# -- talking to the daemon ------------------------------------------------------------------------


class Control:
    """The daemon's control socket, in this process (one JSON request and reply per connection)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def request(self, payload: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.path)), timeout_s)
        try:
            writer.write((json.dumps(payload) + "\n").encode())
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout_s)
            # Read to EOF: the daemon has closed its end, so its fd count no longer includes this connection.
            await asyncio.wait_for(reader.read(), timeout_s)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"the kiosk refused {payload}: {reply.get('error')}")
        return reply

    async def status(self) -> dict[str, Any]:
        return (await self.request({"command": "status"}))["status"]  # type: ignore[no-any-return]

    async def until(self, predicate: Callable[[dict[str, Any]], bool], what: str,
                    timeout_s: float = STEP_TIMEOUT_S) -> dict[str, Any]:
        """Poll `status` until ``predicate`` holds; StepTimeout (with the last status) at the deadline."""
        deadline = time.monotonic() + timeout_s
        status: dict[str, Any] = {}
        while True:
            status = await self.status()
            if predicate(status):
                return status
            if time.monotonic() >= deadline:
                brief = {k: status.get(k) for k in ("state", "lesson", "held_in_memory")}
                raise StepTimeout(f"{what}: not within {timeout_s:g} s (last status {brief})")
            await asyncio.sleep(POLL_S)


def turns(status: dict[str, Any]) -> int:
    lesson = status.get("lesson")
    return int(lesson["turns"]) if isinstance(lesson, dict) else -1


def in_lesson(session_id: str, state: str = "connected") -> Callable[[dict[str, Any]], bool]:
    def check(status: dict[str, Any]) -> bool:
        lesson = status.get("lesson")
        if not isinstance(lesson, dict) or lesson.get("session_id") != session_id:
            raise StepTimeout(f"lesson {session_id[:8]} ended unexpectedly (state {status.get('state')}, "
                              f"recent {status.get('recent_lessons', [])[-1:]})")
        return status.get("state") == state
    return check


# -- the daemon process ---------------------------------------------------------------------------


@dataclass
class Sample:
    lesson: int
    elapsed_s: float
    rss_kb: int
    fds: int
    threads: int
    tasks: int
    timers: int
    queue: int
    outbox: int
    held_in_memory: int
    checkpoints: int
    checkpoint_p50_ms: float
    checkpoint_p99_ms: float


def proc_status(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def sample(pid: int, status: dict[str, Any], lesson: int, elapsed_s: float) -> Sample:
    fields = proc_status(pid)
    internals = status.get("internals") or {}
    checkpoints = internals.get("checkpoint_ms") or {}
    return Sample(lesson=lesson, elapsed_s=round(elapsed_s, 1), rss_kb=int(fields["VmRSS"].split()[0]),
                  fds=len(os.listdir(f"/proc/{pid}/fd")), threads=int(fields["Threads"]),
                  tasks=int(internals.get("tasks", -1)), timers=int(internals.get("timers", -1)),
                  queue=int(internals.get("queue", -1)), outbox=int(status.get("outbox", -1)),
                  held_in_memory=int(status.get("held_in_memory", -1)),
                  checkpoints=int(checkpoints.get("count", 0)),
                  checkpoint_p50_ms=float(checkpoints.get("p50", math.nan)),
                  checkpoint_p99_ms=float(checkpoints.get("p99", math.nan)))


def kiosk_sections(*, max_minutes: float, idle_limit_s: float, max_stored: int | None,
                   consent_fix: bool = True) -> dict[str, dict[str, Any]]:
    """What the soak sets on top of the benchmarks' kiosk config."""
    retention = {"max_stored_lessons": max_stored, "keep_synced_days": 0} if max_stored else {}
    return {"kiosk": retention, "realtime": {"ice_lite_consent_fix": consent_fix},
            "lesson": {"max_minutes": max_minutes, "idle_limit_s": idle_limit_s}}


class Stack:
    """Simulator + companion (children) and one kiosk daemon process, all in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        # The companion's per-kiosk guard (60 tokens an hour) would refuse a soak.
        self.services = BenchServices(workdir, "soak", companion_args=("--tokens-per-hour", "1000000"))
        self.daemon: asyncio.subprocess.Process | None = None
        self.control = Control(workdir / "control.sock")
        self.daemon_log = workdir / "kiosk.log"

    async def start(self, **config: Any) -> None:
        await self.services.start()
        toml = self.services.write_kiosk_toml(self.workdir / "kiosk.toml", **kiosk_sections(**config))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)
        with open(self.daemon_log, "wb") as log_file:
            self.daemon = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "appliance.cli", "run", "--config", str(toml), stderr=log_file, env=env)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # up when its control socket answers `status` with idle
            if self.daemon.returncode is not None:
                raise RuntimeError(f"the kiosk exited at start (code {self.daemon.returncode}): {self.log_tail()}")
            with contextlib.suppress(OSError, TimeoutError, RuntimeError, ValueError):
                if (await self.control.status()).get("state") == "idle":
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the kiosk was not idle within {START_TIMEOUT_S:g} s: {self.log_tail()}")
            await asyncio.sleep(POLL_S)

    @property
    def pid(self) -> int:
        assert self.daemon is not None
        if self.daemon.returncode is not None:
            raise RuntimeError(f"the kiosk died (code {self.daemon.returncode}): {self.log_tail()}")
        return self.daemon.pid

    async def stop(self) -> int | None:
        """SIGTERM the daemon (it saves any lesson in progress) and stop the children."""
        code = None
        try:
            if self.daemon is not None and self.daemon.returncode is None:
                self.daemon.send_signal(signal.SIGTERM)
                try:
                    code = await asyncio.wait_for(self.daemon.wait(), 30)
                except TimeoutError:
                    self.daemon.kill()
                    code = await self.daemon.wait()
            elif self.daemon is not None:
                code = self.daemon.returncode
        finally:
            await self.services.stop()
        return code

    def log_tail(self, lines: int = 10) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.daemon_log.read_text(errors="replace").strip().splitlines()[-lines:])
        return "(no log)"

    def log_count(self, text: str) -> int:
        with contextlib.suppress(OSError):
            return self.daemon_log.read_text(errors="replace").count(text)
        return 0

    def tracebacks(self) -> int:
        return self.log_count("Traceback")


# -- one lesson -----------------------------------------------------------------------------------


async def start_lesson(control: Control) -> tuple[str, dict[str, Any]]:
    """Press; wait until connected and the greeting is in the transcript. Returns the session id."""
    await control.until(lambda s: s.get("state") == "idle" and s.get("lesson") is None, "idle before press")
    await control.request({"command": "press"})
    status = await control.until(lambda s: s.get("state") == "connected" and s.get("lesson") is not None,
                                 "press → connected")
    session_id = status["lesson"]["session_id"]
    # Typing before the greeting is out would be refused by the server (one response at a time).
    status = await control.until(lambda s: in_lesson(session_id)(s) and turns(s) >= 1, "the tutor's greeting")
    return session_id, status


async def say_and_wait(control: Control, session_id: str, text: str) -> dict[str, Any]:
    """Type one line; wait until it and the tutor's answer are both turns of the lesson."""
    before = turns(await control.until(in_lesson(session_id), "connected before typing"))
    await control.request({"command": "say", "text": text})
    return await control.until(lambda s: in_lesson(session_id)(s) and turns(s) >= before + 2,
                               f"the tutor's answer to {text[:24]!r}…")


async def stop_lesson(control: Control, session_id: str) -> dict[str, Any]:
    """Press again, as the learner ends a lesson (saved as "button"; `stella-kiosk stop` would save it as
    "stop_command"); wait until idle and the lesson is among the recent ones; returns its summary.

    The learner waits for the tutor to finish first: a press while the tutor speaks interrupts it instead."""
    await control.until(lambda s: in_lesson(session_id)(s) and not s["lesson"].get("tutor_speaking"),
                        "the tutor done speaking")
    await control.request({"command": "press"})

    def saved(s: dict[str, Any]) -> bool:
        return s.get("state") == "idle" and s.get("lesson") is None and any(
            r.get("session_id") == session_id for r in s.get("recent_lessons") or [])
    status = await control.until(saved, "stop → idle and saved")
    return next(r for r in status["recent_lessons"] if r.get("session_id") == session_id)


async def recover(control: Control) -> None:
    """After a failed step: end whatever is in progress and get back to idle (or give up)."""
    with contextlib.suppress(Exception):
        await control.request({"command": "stop"})
    await control.until(lambda s: s.get("state") == "idle" and s.get("lesson") is None,
                        "back to idle after a failure", timeout_s=60)


# -- soak -----------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def print_table_header() -> None:
    print(f"{'lesson':>6} {'min':>5} {'RSS MB':>7} {'fds':>4} {'thr':>4} {'tasks':>5} {'timers':>6} {'queue':>5} "
          f"{'outbox':>6} {'ckpts':>5} {'ckpt p50':>8} {'ckpt p99':>8}", flush=True)


def print_row(s: Sample) -> None:
    print(f"{s.lesson:6d} {s.elapsed_s / 60:5.1f} {s.rss_kb / 1024:7.1f} {s.fds:4d} {s.threads:4d} {s.tasks:5d} "
          f"{s.timers:6d} {s.queue:5d} {s.outbox:6d} {s.checkpoints:5d} {s.checkpoint_p50_ms:8.2f} "
          f"{s.checkpoint_p99_ms:8.2f}", flush=True)


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    stack = Stack(workdir)
    samples: list[Sample] = []
    failures: list[str] = []
    reasons: dict[str, int] = {}
    try:
        await stack.start(max_minutes=2, idle_limit_s=60, max_stored=args.max_stored)
        control = stack.control
        baseline = sample(stack.pid, await control.status(), 0, 0.0)
        print(f"kiosk daemon pid {stack.pid}, RSS at start {baseline.rss_kb / 1024:.1f} MB; "
              f"{args.lessons} lessons, {args.lines} typed line(s) each", flush=True)
        print_table_header()
        started = time.monotonic()
        consecutive = 0
        for i in range(1, args.lessons + 1):
            try:
                session_id, _ = await start_lesson(control)
                for k in range(args.lines):
                    await say_and_wait(control, session_id, LINES[(i + k) % len(LINES)])
                summary = await stop_lesson(control, session_id)
                reasons[summary["end_reason"]] = reasons.get(summary["end_reason"], 0) + 1
                if summary["end_reason"] != "button" or summary["turns"] < 1 + 2 * args.lines:
                    failures.append(f"lesson {i}: saved as {summary}")
                consecutive = 0
            except (StepTimeout, RuntimeError, OSError, TimeoutError) as exc:
                failures.append(f"lesson {i}: {exc}; kiosk log: {stack.log_tail(2)}")
                print(f"  lesson {i} FAILED: {failures[-1]}", file=sys.stderr, flush=True)
                consecutive += 1
                if consecutive >= 3:
                    failures.append("three lessons in a row failed; soak aborted")
                    break
                try:
                    await recover(control)
                except (StepTimeout, RuntimeError, OSError, TimeoutError) as again:
                    failures.append(f"the kiosk did not get back to idle: {again}; soak aborted")
                    break
            try:
                samples.append(sample(stack.pid, await control.status(), i, time.monotonic() - started))
            except (RuntimeError, OSError, TimeoutError) as exc:
                failures.append(f"after lesson {i}: {exc}; soak aborted")
                break
            if i % 50 == 0 or i == args.lessons:
                print_row(samples[-1])
        elapsed = time.monotonic() - started
        final_status = {}
        with contextlib.suppress(RuntimeError, OSError, TimeoutError, ValueError):
            final_status = await control.status()
    finally:
        exit_code = await stack.stop()
    return {"samples": samples, "failures": failures, "elapsed_s": elapsed, "end_reasons": reasons,
            "lessons_saved": (final_status.get("internals") or {}).get("lessons_saved"),
            "daemon_exit_code": exit_code, "tracebacks": stack.tracebacks(), "baseline": baseline}


def verdict(args: argparse.Namespace, result: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    samples: list[Sample] = result["samples"]
    n = len(samples)
    if not samples:
        for failure in result["failures"]:
            print(f"  failure: {failure}")
        print("FAIL: no lesson completed")
        return False, {"lessons": 0}
    warmup = args.warmup if args.warmup is not None else min(30, max(1, math.ceil(args.lessons * 0.1)))
    warmup = min(warmup, max(0, n - 1))
    after = samples[warmup:] if n > warmup else samples
    checks: list[tuple[str, bool, str]] = []
    figures: dict[str, Any] = {"lessons": n, "warmup": warmup}

    rss0 = samples[warmup - 1].rss_kb if warmup else result["baseline"].rss_kb
    rss1 = samples[-1].rss_kb
    growth = (rss1 - rss0) / 1024
    figures.update(rss_warmup_mb=round(rss0 / 1024, 1), rss_end_mb=round(rss1 / 1024, 1),
                   rss_growth_mb=round(growth, 1), rss_max_mb=round(max(s.rss_kb for s in after) / 1024, 1))
    checks.append(("RSS growth after warm-up", growth <= args.max_rss_growth_mb,
                   f"{rss0 / 1024:.1f} → {rss1 / 1024:.1f} MB ({growth:+.1f} MB; goal ≤ {args.max_rss_growth_mb:g})"))

    # Flat: the range stays within a small tolerance AND the last window is not above the first
    # (a slow leak of one per 50 lessons would pass the range check on a short run, not the trend).
    window = max(1, min(50, len(after) // 3))
    for name, tolerance in FLAT_TOLERANCE.items():
        values = [getattr(s, name) for s in after]
        lo, hi = min(values), max(values)
        first, last = statistics.median(values[:window]), statistics.median(values[-window:])
        figures[name] = {"min": lo, "max": hi, "median_first": first, "median_last": last}
        ok = hi - lo <= tolerance and last <= first + TREND_ALLOWANCE.get(name, 0)
        checks.append((f"{name} flat", ok, f"min {lo}, max {hi}, median first/last {window}: {first:g}/{last:g}"))

    # The daemon reports p99 over its last 500 checkpoints (~6 per lesson here): read after lesson 50
    # it covers the first 50 lessons; read at the end, roughly the last 80.
    early = samples[min(50, n) - 1].checkpoint_p99_ms
    late = samples[-1].checkpoint_p99_ms
    figures.update(checkpoint_p99_first_ms=early, checkpoint_p99_last_ms=late,
                   checkpoint_p50_first_ms=samples[min(50, n) - 1].checkpoint_p50_ms,
                   checkpoint_p50_last_ms=samples[-1].checkpoint_p50_ms)
    ok = not math.isnan(late) and late <= 2 * early + 2.0
    checks.append(("checkpoint p99 flat", ok, f"after lesson {min(50, n)} {early:.2f} ms, at the end {late:.2f} ms "
                                              "(goal: last ≤ 2 × first + 2 ms)"))
    per_minute = n / (result["elapsed_s"] / 60) if result["elapsed_s"] else math.nan
    figures["lessons_per_minute"] = round(per_minute, 1)

    clean = not result["failures"] and result["lessons_saved"] == args.lessons
    checks.append(("every lesson completed and saved (button)", clean,
                   f"{result['lessons_saved']} saved, end reasons {result['end_reasons']}, "
                   f"{len(result['failures'])} failure(s)"))
    stopped_clean = result["daemon_exit_code"] == 0 and not result["tracebacks"]
    checks.append(("daemon stopped cleanly, no tracebacks", stopped_clean,
                   f"exit code {result['daemon_exit_code']}, {result['tracebacks']} traceback(s) in its log"))

    print(f"\n{n} lessons in {result['elapsed_s'] / 60:.1f} min ({per_minute:.1f} lessons/min); "
          f"warm-up {warmup} lessons")
    for failure in result["failures"][:10]:
        print(f"  failure: {failure}")
    for label, ok, detail in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}: {detail}")
    passed = all(ok for _, ok, _ in checks)
    print("PASS" if passed else "FAIL")
    figures["checks"] = [{"check": label, "pass": ok, "detail": detail} for label, ok, detail in checks]
    return passed, figures


# -- long call ------------------------------------------------------------------------------------


async def long_call(args: argparse.Namespace, workdir: Path) -> tuple[bool, dict[str, Any]]:
    minutes: float = args.long_call
    if minutes + 2 > 60:
        raise SystemExit("--long-call: at most 58 minutes (lesson.max_minutes is capped at 60)")
    stack = Stack(workdir)
    figures: dict[str, Any] = {"minutes": minutes}
    checks: list[tuple[str, bool, str]] = []
    try:
        # The lesson limit must not end the call first (and the tutor's wrap-up comes a minute before
        # it); typed lines count as activity, so an idle limit of a few line intervals never fires.
        await stack.start(max_minutes=minutes + 2, idle_limit_s=max(120.0, 4 * args.line_every), max_stored=None,
                          consent_fix=not args.no_consent_fix)
        control = stack.control
        first = sample(stack.pid, await control.status(), 0, 0.0)
        session_id, status = await start_lesson(control)
        started = time.monotonic()
        end_at = started + minutes * 60
        print(f"lesson {session_id[:8]} connected; holding it {minutes:g} min, a line every "
              f"{args.line_every:g} s", flush=True)
        lines = 0
        answered_last = False
        connected_at_end = False
        problem = ""
        try:
            while True:
                status = await say_and_wait(control, session_id, LINES[lines % len(LINES)])
                lines += 1
                now = time.monotonic()
                if now >= end_at:
                    answered_last = True
                    connected_at_end = status.get("state") == "connected"
                    break
                if lines % 4 == 0:
                    s = sample(stack.pid, status, lines, now - started)
                    print(f"  {s.elapsed_s / 60:5.1f} min: {lines} lines, {turns(status)} turns, "
                          f"RSS {s.rss_kb / 1024:.1f} MB, fds {s.fds}, threads {s.threads}", flush=True)
                # Pace the lines; meanwhile watch the call stay up (a drop fails at once, not at the end).
                next_line = min(end_at, now + args.line_every)
                while time.monotonic() < next_line:
                    status = await control.status()
                    in_lesson(session_id)(status)
                    if status.get("state") != "connected":
                        raise StepTimeout(f"the call left connected ({status.get('state')}) between lines")
                    await asyncio.sleep(min(1.0, max(0.0, next_line - time.monotonic())))
        except StepTimeout as exc:
            problem = str(exc)
            print(f"  FAILED after {(time.monotonic() - started) / 60:.1f} min: {exc}", flush=True)
        held_s = time.monotonic() - started
        last = sample(stack.pid, await control.status(), lines, held_s)
        turns_before_stop = turns(status)
        try:
            summary = await stop_lesson(control, session_id)
        except StepTimeout as exc:
            summary = {"end_reason": f"not saved: {exc}", "turns": 0}
        figures.update(held_min=round(held_s / 60, 2), lines=lines, turns=turns_before_stop,
                       saved=summary, rss_start_mb=round(first.rss_kb / 1024, 1),
                       rss_end_mb=round(last.rss_kb / 1024, 1), fds_start=first.fds, fds_end=last.fds,
                       threads_start=first.threads, threads_end=last.threads)
        # A dropped call is resumed on a new one within a second or so, which a poll can miss: the
        # kiosk's log says so either way.
        drops = stack.log_count("the call dropped")
        figures["call_drops"] = drops
        checks.append(("still connected at the end, never dropped", connected_at_end and not drops,
                       f"held {held_s / 60:.1f} of {minutes:g} min, {drops} drop(s)"
                       + (f"; {problem}" if problem else "")))
        checks.append(("the tutor answered the last line", answered_last,
                       f"{lines} lines typed, {turns_before_stop} turns"))
        checks.append(("saved with end reason button", summary.get("end_reason") == "button"
                       and summary.get("turns", 0) >= turns_before_stop,
                       f"{summary}"))
    finally:
        exit_code = await stack.stop()
    checks.append(("daemon stopped cleanly, no tracebacks", exit_code == 0 and not stack.tracebacks(),
                   f"exit code {exit_code}, {stack.tracebacks()} traceback(s) in its log"))
    print(f"\nlong call: RSS {figures.get('rss_start_mb')} → {figures.get('rss_end_mb')} MB, "
          f"fds {figures.get('fds_start')} → {figures.get('fds_end')}, "
          f"threads {figures.get('threads_start')} → {figures.get('threads_end')}")
    for label, ok, detail in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}: {detail}")
    passed = all(ok for _, ok, _ in checks)
    print("PASS" if passed else "FAIL")
    figures["checks"] = [{"check": label, "pass": ok, "detail": detail} for label, ok, detail in checks]
    return passed, figures


# -- main -----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lessons", type=int, default=300, help="lessons in the soak (default 300)")
    parser.add_argument("--lines", type=int, default=2, choices=[1, 2, 3], help="typed lines per lesson")
    parser.add_argument("--warmup", type=int, help="lessons before the baseline (default: 30 or 10%%, the fewer)")
    parser.add_argument("--max-rss-growth-mb", type=float, default=10.0)
    parser.add_argument("--max-stored", type=int, metavar="N",
                        help="kiosk.max_stored_lessons = N and keep_synced_days = 0 (default: the kiosk's "
                             "defaults, so every lesson stays in the store as on a school day)")
    parser.add_argument("--long-call", type=float, nargs="?", const=10.0, metavar="MINUTES",
                        help="instead of the soak: hold one lesson open this long (default 10)")
    parser.add_argument("--line-every", type=float, default=30.0, help="long call: seconds between typed lines")
    parser.add_argument("--no-consent-fix", action="store_true",
                        help="long call: turn the kiosk's ICE-lite consent fix off (shows what the check catches)")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it (logs, store)")
    parser.add_argument("--json", type=Path, help="also write the figures (and every sample) as JSON here")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="soak-")))
        commit = git_commit()
        print(f"commit {commit}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs", flush=True)
        try:
            if args.long_call is not None:
                passed, figures = asyncio.run(long_call(args, workdir))
            else:
                result = asyncio.run(soak(args, workdir))
                passed, figures = verdict(args, result)
        except (RuntimeError, ServiceError) as exc:
            print(f"the benchmark could not run: {exc}", file=sys.stderr)
            return 2
            figures["samples"] = [asdict(s) for s in result["samples"]]
            figures["failures"] = result["failures"]
        if args.json:
            args.json.write_text(json.dumps({"pass": passed, "commit": commit, **figures}, indent=1))
    return 0 if passed else 1


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
