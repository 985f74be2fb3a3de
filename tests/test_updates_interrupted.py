"""SIGKILL (or power loss) at any moment of an update: 100 kills at random moments of download, build,
switch, health check and rollback; after each, what would boot is a complete version and every lesson is
there; the next rounds finish or abandon the update on their own.

The updater runs in its own process (tests/update_kill_runner.py) with the real layout, state file,
installer steps and store copy, and cheap stand-ins for pip and the kiosk service.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from appliance.updates import progress as saved
from appliance.updates.layout import Layout
from tests.update_kill_runner import BUILD_FILES, fresh_kiosk

ROOT = Path(__file__).resolve().parent.parent
KILLS = 100


def bootable(work: Path, lessons: dict[str, bytes]) -> str:
    """What a power-on now would run: assert it is a complete version and the lessons are all there."""
    layout = Layout(work / "opt")
    version = layout.version_of(layout.current)
    named = os.readlink(layout.current) if layout.current.is_symlink() else "nothing (the link is missing)"
    assert version is not None, f"current names no complete release: {named}"
    for i in range(BUILD_FILES):
        part = layout.release_dir(version) / "venv" / f"part-{i}"
        assert part.read_text() == f"{version} part {i}\n" * 200, f"{part} is not whole"
    state = work / "state"
    for name, data in lessons.items():
        assert (state / name).read_bytes() == data, f"{name} lost or changed"
    ids = {s["session_id"] for s in json.loads((state / "sessions.json").read_text())["sessions"].values()}
    assert ids == {f"lesson-{n}" for n in range(3)}
    return version


def runner(work: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.update_kill_runner", str(work), *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_100_kills_at_random_moments_leave_a_complete_version_and_every_lesson(tmp_path: Path) -> None:
    seed = int(os.environ.get("STELLA_KILL_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    kills, scenarios = 0, 0
    killed_in: dict[str, int] = {}
    while kills < KILLS:
        scenarios += 1
        work = tmp_path / f"kiosk-{scenarios}"
        lessons = fresh_kiosk(work)
        for _ in range(rng.randint(1, 3)):
            if rng.random() < 0.5:
                proc = runner(work, "--kill-at", str(rng.randint(1, 22)))
            else:  # from outside, at a random instant (mid-write, mid-rename, mid-copy)
                proc = runner(work, "--slow")
                time.sleep(rng.uniform(0.1, 0.6))
                proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=60)
            if proc.returncode == -signal.SIGKILL:
                kills += 1
                step = saved.load(Layout(work / "opt").state_file).step
                killed_in[step] = killed_in.get(step, 0) + 1
            else:
                assert proc.returncode == 0, f"seed {seed}: {err}"
            bootable(work, lessons)
        # Left alone, the updater finishes (or abandons) what was under way and settles.
        outcomes = []
        for _ in range(5):
            proc = runner(work)
            out, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, f"seed {seed}: {err}"
            outcomes.append(out.strip())
            bootable(work, lessons)
            if outcomes[-1] == "no newer release":
                break
        assert outcomes[-1] == "no newer release", f"seed {seed}: {outcomes}"
        layout = Layout(work / "opt")
        final = saved.load(layout.state_file)
        assert bootable(work, lessons) == "0.3.0" and final.step == "idle" and "0.4.0" in final.bad, \
            f"seed {seed}: {outcomes}, {final}"
        assert json.loads((work / "state" / "sessions.json").read_text())["meta"]["1"]["schema"] == 2
        assert not list(layout.releases.glob(".build-*")) and not layout.is_complete("0.4.0")
    print(f"seed {seed}: {kills} kills in {scenarios} updates; state file step at each kill: {killed_in}")
    assert len(killed_in) >= 4, killed_in  # the kills landed in many different steps
