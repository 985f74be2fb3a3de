"""One update round in its own process, with cheap stand-ins for pip and the kiosk service, that SIGKILLs
itself at its k-th step (or is killed from outside after a random delay): the subject of
tests/test_updates_interrupted.py.

    python -m tests.update_kill_runner WORK [--kill-at K] [--slow]

The releases on offer: 0.3.0 (healthy) and 0.4.0 (migrates the store's format forward, then exits at
start). A build writes its files one by one; the "service" runs whatever ``current`` names.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

from appliance.updates.finder import Release
from appliance.updates.health import Unhealthy
from appliance.updates.install import Installer
from appliance.updates.layout import Layout
from appliance.updates.updater import Updater, UpdaterParts

OFFERED = ("0.3.0", "0.4.0")
BROKEN = "0.4.0"
BUILD_FILES = 5


class Steps:
    def __init__(self, kill_at: int | None, slow: bool) -> None:
        self.kill_at = kill_at
        self.slow = slow
        self.count = 0

    def __call__(self, name: str) -> None:
        self.count += 1
        if self.count == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.slow:
            time.sleep(0.004)


class CheapInstaller(Installer):
    """The real install steps (build directory, marker written last, rename) without pip."""

    def _build(self, release: Release, build: Path) -> None:
        for i in range(BUILD_FILES):
            (build / "venv").mkdir(exist_ok=True)
            (build / "venv" / f"part-{i}").write_text(f"{release.version} part {i}\n" * 200)
            self.checkpoint(f"build-{i}")


class FakeService:
    """Runs whatever ``current`` names (recorded in WORK/running); the broken release migrates the store's
    format forward and exits at start."""

    def __init__(self, layout: Layout, state_dir: Path, work: Path) -> None:
        self.layout, self.state_dir, self.running = layout, state_dir, work / "running"

    def restart(self) -> None:
        version = self.layout.version_of(self.layout.current)
        assert version is not None, "restarted into an incomplete release"
        self.running.write_text(version)
        if version == BROKEN:
            sessions = self.state_dir / "sessions.json"
            data = json.loads(sessions.read_text())
            data["meta"]["1"]["schema"] = 3
            sessions.write_text(json.dumps(data))

    def ready(self) -> bool:
        return self.running.read_text() != BROKEN

    def failed(self) -> str | None:
        return "exited at start" if self.running.read_text() == BROKEN else None


def fresh_kiosk(work: Path) -> dict[str, bytes]:
    """0.2.0 installed and running, a store with lessons in it; returns the lessons' files."""
    layout = Layout(work / "opt")
    release = layout.release_dir("0.2.0")
    (release / "venv").mkdir(parents=True)
    for i in range(BUILD_FILES):
        (release / "venv" / f"part-{i}").write_text(f"0.2.0 part {i}\n" * 200)
    (release / "COMPLETE").write_text("0.2.0\n")
    layout.point(layout.current, "0.2.0")
    (work / "running").write_text("0.2.0")
    (work / "downloads").mkdir()
    state = work / "state"
    (state / "lessons").mkdir(parents=True)
    lessons = {f"lessons/lesson-{n}.jsonl": f'{{"session_id": "lesson-{n}", "turns": {n}}}\n'.encode() * 20
               for n in range(3)}
    for name, data in lessons.items():
        (state / name).write_bytes(data)
    (state / "sessions.json").write_text(json.dumps({"meta": {"1": {"schema": 2}}, "sessions": {
        str(n): {"session_id": f"lesson-{n}"} for n in range(3)}}))
    return lessons


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--slow", action="store_true")
    args = parser.parse_args()
    work: Path = args.work
    layout = Layout(work / "opt")
    state_dir = work / "state"
    steps = Steps(args.kill_at, args.slow)
    service = FakeService(layout, state_dir, work)
    downloads = work / "downloads"

    def find(installed: str, wanted: str | None, skip: frozenset[str]) -> Release | None:
        newer = [v for v in OFFERED if v not in skip and tuple(map(int, v.split("."))) >
                 tuple(map(int, installed.split(".")))]
        if not newer:
            return None
        version = max(newer, key=lambda v: tuple(map(int, v.split("."))))
        return Release(version, downloads / f"stella_kiosk-{version}-py3-none-any.whl", downloads / "lock.txt")

    def health(version: str) -> None:
        if (why := service.failed()) is not None:
            raise Unhealthy(why)
        if service.running.read_text() != version:
            raise Unhealthy(f"running {service.running.read_text()}, not {version}")

    class Idle:
        def until_idle(self, bound_s: float) -> bool:
            return True

        def release(self) -> None:
            pass

    parts = UpdaterParts(layout=layout, state_dir=state_dir, find=find, assignment=lambda: (False, None),
                         installer=CheapInstaller(layout, checkpoint=steps), service=service, hold=Idle(),
                         health=health, checkpoint=steps)
    print(Updater(parts).run_once(), flush=True)


if __name__ == "__main__":
    main()
