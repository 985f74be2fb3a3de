"""The newcomer's demo runs green, also on a machine whose only network interface is loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def loopback_only_prefix() -> list[str]:
    """`unshare -n` gives a network namespace with nothing but `lo` (needs root)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        return []
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "demo"] if probe.returncode == 0 else []


@pytest.mark.timeout(240)
def test_demo_runs_a_whole_lesson(tmp_path: Path) -> None:
    prefix = loopback_only_prefix()
    result = subprocess.run([*prefix, sys.executable, "-m", "appliance.cli", "demo", "--output", str(tmp_path)],
                            capture_output=True, text=True, timeout=200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    for expected in ("state connecting", "state connected", "learner speaks into the microphone",
                     "teacher types", "press → connected:", "press → first tutor audio:", "(received)"):
        assert expected in out, expected
    record = json.loads((tmp_path / "session.json").read_text())
    # The learner's spoken "Stop." ends the lesson; the demo's fallback press must not be needed
    # (accepting "button" too would hide a stop word that no longer works).
    assert record["end_reason"] == "voice_stop", out[-2000:]
    assert (tmp_path / "tutor.wav").stat().st_size > 48000 * 2  # more than a second of audio
    if prefix:
        print("ran inside a loopback-only network namespace")


def test_demo_deadline_stretches_the_lesson_limit(tmp_path: Path) -> None:
    """Guards against a slow machine's demo (given a long --deadline) being cut by the lesson's own
    3-minute limit, sized for a fast machine; the default run keeps the packaged limit."""
    from appliance.demo import demo_config

    default = demo_config(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2")
    assert default.lesson.max_minutes == 3.0
    slow = demo_config(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", deadline_s=900)
    assert slow.lesson.max_minutes == 15.0
    capped = demo_config(tmp_path, "http://127.0.0.1:1", "http://127.0.0.1:2", deadline_s=7200)
    assert capped.lesson.max_minutes == 60.0  # the config's own upper bound


def test_demo_refuses_a_nonpositive_deadline(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "appliance.cli", "demo", "--output", str(tmp_path), "--deadline",
                             "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--deadline must be a positive" in result.stderr
    assert "Traceback" not in result.stderr
