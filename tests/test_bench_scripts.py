"""Every benchmark script still runs: each one, at its smallest size, as an admin would start it.

A benchmark is only read now and then, so nothing else notices when it stops working (one did, when the
companion stopped accepting keys on its command line). These runs check that each script finishes and
prints its figures; they assert no figure (a test is no place for timing), only that it was measured.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def bench(script: str, *args: str, timeout_s: float = 240) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True, text=True,
                          timeout=timeout_s, cwd=ROOT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    return output


def test_bench_startup() -> None:
    out = bench("bench_startup.py", "--runs", "1", "--idle", "1", "--settle", "0.5")
    assert "start → READY (ms)" in out and "idle CPU (% of one core)" in out


def test_bench_lesson() -> None:
    out = bench("bench_lesson.py", "--lessons", "1", "--hold", "1", "--no-pipe-floor")
    assert "press → connected" in out and "first_audible" in out


def test_bench_soak() -> None:
    out = bench("bench_soak.py", "--lessons", "3", "--warmup", "1")
    assert "every lesson completed and saved (button): 3 saved" in out and out.rstrip().endswith("PASS")


def test_bench_companion() -> None:
    out = bench("bench_companion.py", "--kiosks", "400", "--only", "sqlite-1", "--heartbeat-rate", "20",
                "--heartbeat-seconds", "2", "--spread-rounds", "1")
    assert "companion adds p99" in out and "sync burst" in out
    assert set(re.findall(r"\(5xx (\d+)\)", out)) == {"0"}


def test_bench_companion_bomb() -> None:
    out = bench("bench_companion_bomb.py", "--kiosks", "20", "--spread-s", "1", "--rounds", "1", "--bomb-mb", "64")
    assert "tokens, alone" in out and "the bombs add p99" in out and "bombs sent:" in out
    assert set(re.findall(r"\(5xx (\d+)\)", out)) == {"0"}


def test_bench_store_and_loop_stall() -> None:
    assert "| now: open (steady state) |" in bench("bench_store.py", "--sizes", "10", "--lessons", "1", "--turns", "2",
                                                   "--old-ops", "2")
    assert "store thread (kiosk)" in bench("bench_loop_stall.py", "--stored", "10", "--lessons", "1", "--turns", "2")


def cgroup_cpu_writable() -> bool:
    """A cgroup cpu controller (v1, or v2 listing ``cpu``) whose root this process may write to."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _dev, where, fstype, options, *_ = line.split()
        if fstype == "cgroup" and "cpu" in options.split(","):
            return os.access(where, os.W_OK)
        controllers = Path(where) / "cgroup.controllers"
        if fstype == "cgroup2" and controllers.exists() and "cpu" in controllers.read_text().split():
            return os.access(where, os.W_OK)
    return False


def test_bench_quota() -> None:
    out = bench("bench_quota.py", "--quotas", "50", "--periods", "100", "--calls", "1", "--hold", "2")
    if not cgroup_cpu_writable():
        assert out.startswith("quota sweep skipped: "), out
        return
    for side in ("kiosk", "floor"):
        assert re.search(rf"^ +50% {side} +\d+ +\d+ +\d+ \| +\d+ +\d+ +[\d.]+ \| +\d+ +\d+ +[\d.]+$", out, re.M), out
    assert "smallest glitch-free quota: kiosk " in out


def test_bench_quota_says_why_it_cannot_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No cgroup cpu controller mounted, or one this user cannot write: one line, no cgroup made."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_quota", ROOT / "scripts" / "bench_quota.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_quota", module)
    spec.loader.exec_module(module)
    mounts = tmp_path / "mounts"
    mounts.write_text("proc /proc proc rw 0 0\ntmpfs /sys/fs/cgroup tmpfs rw 0 0\n")
    assert module.CpuCap.create("x", mounts) == (None, "no cgroup cpu controller is mounted (neither v1 nor v2)")
    blocked = tmp_path / "cpu"
    blocked.write_text("")  # a file where the controller's directory should be: mkdir under it fails
    mounts.write_text(f"cgroup {blocked} cgroup rw,cpu,cpuacct 0 0\n")
    cap, why = module.CpuCap.create("x", mounts)
    assert cap is None and why.startswith(f"the cgroup at {blocked} is not writable here")


def test_bench_audio_path() -> None:
    out = bench("bench_audio_path.py", "--frames", "50")
    assert re.search(r"microphone, speech: +aiortc raw frame +[\d.]+ +kiosk Opus track +[\d.]+", out), out
    assert "speaker pump" in out and re.search(r"parse +[\d.]+ +conversation +[\d.]+", out), out
    assert re.search(r"with the level meter .*speech +[\d.]+ +silence +[\d.]+ +speaker pump +[\d.]+", out), out


def test_bench_memory() -> None:
    out = bench("bench_memory.py", "--hold", "1")
    assert re.search(r"^aiortc +[\d.]+ +\d+$", out, re.M), out
    assert re.search(r"high-water mark \(VmHWM\) [\d.]+ MB", out) and "where the peak's pages are" in out, out
