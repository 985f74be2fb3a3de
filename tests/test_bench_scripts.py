"""Every benchmark script still runs: each one, at its smallest size, as an admin would start it.

A benchmark is only read now and then, so nothing else notices when it stops working (one did, when the
companion stopped accepting keys on its command line). These runs check that each script finishes and
prints its figures; they assert no figure (a test is no place for timing), only that it was measured.
"""

from __future__ import annotations

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


def test_bench_store_and_loop_stall() -> None:
    assert "| now: open (steady state) |" in bench("bench_store.py", "--sizes", "10", "--lessons", "1", "--turns", "2",
                                                   "--old-ops", "2")
    assert "store thread (kiosk)" in bench("bench_loop_stall.py", "--stored", "10", "--lessons", "1", "--turns", "2")
