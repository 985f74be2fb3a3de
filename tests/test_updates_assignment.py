"""What the companion's rollout assigns, as the kiosk's updater takes it: the newest signed release when
the companion has no rollout (404), exactly the assigned one otherwise, nothing when it assigns nothing,
and a channel rolled back to an earlier version: back to the previous release if it is that one,
otherwise refused with a clear line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from appliance.updates import progress as saved
from appliance.updates.finder import Release
from appliance.updates.layout import Layout
from appliance.updates.updater import Updater, UpdaterParts
from tests.update_kill_runner import CheapInstaller, FakeService, fresh_kiosk


class Idle:
    def until_idle(self, bound_s: float) -> bool:
        return True

    def release(self) -> None:
        pass


def updater(work: Path, assigned: tuple[bool, str | None], asked: list[tuple[str, str | None]]) -> Updater:
    layout = Layout(work / "opt")
    service = FakeService(layout, work / "state", work)

    def find(installed: str, wanted: str | None, skip: frozenset[str]) -> Release | None:
        asked.append((installed, wanted))
        version = wanted or "0.3.0"
        if version == installed:
            return None
        return Release(version, work / "w.whl", work / "lock.txt")

    def health(version: str) -> None:
        assert service.running.read_text() == version

    return Updater(UpdaterParts(layout=layout, state_dir=work / "state", find=find, assignment=lambda: assigned,
                                installer=CheapInstaller(layout), service=service, hold=Idle(), health=health))


def test_without_a_rollout_the_newest_release_is_taken_and_with_one_exactly_the_assigned(tmp_path: Path) -> None:
    fresh_kiosk(tmp_path)
    asked: list[tuple[str, str | None]] = []
    assert updater(tmp_path, (False, None), asked).run_once() == "updated to 0.3.0"
    assert asked == [("0.2.0", None)]
    assert updater(tmp_path, (True, None), asked).run_once() == "nothing assigned"
    assert updater(tmp_path, (True, "0.3.0"), asked).run_once() == "0.3.0 is the assigned version"
    assert updater(tmp_path, (True, "0.3.5"), asked).run_once() == "updated to 0.3.5"
    assert asked[-1] == ("0.3.0", "0.3.5")


def test_a_channel_rolled_back_returns_to_the_previous_release_or_is_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fresh_kiosk(tmp_path)
    layout = Layout(tmp_path / "opt")
    asked: list[tuple[str, str | None]] = []
    assert updater(tmp_path, (False, None), asked).run_once() == "updated to 0.3.0"
    assert layout.version_of(layout.previous) == "0.2.0"
    assert updater(tmp_path, (True, "0.2.0"), asked).run_once() == "updated to 0.2.0"
    assert (tmp_path / "running").read_text() == "0.2.0" and layout.version_of(layout.previous) == "0.3.0"
    # An assigned version older than the installed one that is not the previous release: never installed.
    with caplog.at_level(logging.ERROR):
        assert updater(tmp_path, (True, "0.1.0"), asked).run_once() == "refused to go back to 0.1.0"
    assert "older than the installed 0.2.0, which is not the previous release here; refused" in caplog.text
    assert (tmp_path / "running").read_text() == "0.2.0"
    assert saved.load(layout.state_file).state == "failed"


class Busy(Idle):
    def __init__(self) -> None:
        self.released = False

    def until_idle(self, bound_s: float) -> bool:
        return False

    def release(self) -> None:
        self.released = True


def test_a_switch_interrupted_before_its_restart_waits_for_the_lesson_or_is_undone(tmp_path: Path) -> None:
    """The updater died right after the switch; its hold died with it and a learner started a lesson on
    the old version, still running. The next start never restarts into the middle of that lesson."""
    fresh_kiosk(tmp_path)
    layout = Layout(tmp_path / "opt")
    CheapInstaller(layout).install(Release("0.3.0", tmp_path / "w.whl", tmp_path / "lock.txt"))
    saved.save(layout.state_file, saved.Progress().at("switching", from_version="0.2.0", to_version="0.3.0"))
    layout.point(layout.current, "0.3.0")
    busy = Busy()
    up = updater(tmp_path, (False, None), [])
    up.p.hold = busy
    assert up.run_once() == "a lesson did not end in time; trying again next round"
    assert layout.version_of(layout.current) == "0.2.0" and (tmp_path / "running").read_text() == "0.2.0"
    assert busy.released and saved.load(layout.state_file).step == "idle"
    # Between lessons again, the next round makes the switch for real.
    assert updater(tmp_path, (False, None), []).run_once() == "updated to 0.3.0"
