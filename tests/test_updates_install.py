"""Installing a release beside the running one, the atomic switch, the state file and bad marks.

Real wheels of this project (bumped versions), a real hash-pinned lock, real venvs built by pip.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.updates import progress as saved
from appliance.updates.finder import Release, ReleaseFinder, UpdateRefused
from appliance.updates.install import InstallError
from appliance.updates.layout import Layout
from appliance.updates.progress import Progress
from tests.update_helpers import ReleaseBuilds, builds, first_release, install_first, installer, pip_from

__all__ = ["builds", "first_release"]  # session fixtures used below


def version_run_by(layout: Layout) -> str:
    python = layout.venv_bin(layout.current) / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(python), "-m", "appliance.cli", "--version"], capture_output=True, text=True,
                          env=env, cwd="/", timeout=60, check=True)
    return done.stdout.strip()


def test_a_release_is_built_beside_the_running_one_and_switched_atomically(
        tmp_path: Path, builds: ReleaseBuilds, first_release: Path) -> None:
    layout = install_first(tmp_path / "opt", first_release)
    running_files = sorted(p.relative_to(layout.release_dir("0.2.0")) for p in layout.release_dir("0.2.0").rglob("*"))
    assert version_run_by(layout) == "stella-kiosk 0.2.0"
    with pip_from(builds.wheelhouse):
        built = installer(layout).install(builds.release("0.3.0"))
    assert built == layout.release_dir("0.3.0") and layout.is_complete("0.3.0")
    # The lock's dependency was installed into the new venv, pinned by its hash.
    assert list((built / "venv").glob("lib/python3*/site-packages/six.py"))
    # Nothing of the running version changed, and it still runs until the switch.
    assert sorted(p.relative_to(layout.release_dir("0.2.0"))
                  for p in layout.release_dir("0.2.0").rglob("*")) == running_files
    assert version_run_by(layout) == "stella-kiosk 0.2.0"
    layout.point(layout.previous, "0.2.0")
    layout.point(layout.current, "0.3.0")
    assert os.readlink(layout.current) == "releases/0.3.0" and os.readlink(layout.previous) == "releases/0.2.0"
    assert version_run_by(layout) == "stella-kiosk 0.3.0"
    assert layout.version_of(layout.current) == "0.3.0" and sorted(layout.installed()) == ["0.2.0", "0.3.0"]


def test_a_lock_whose_hash_does_not_match_is_refused_and_nothing_is_kept(
        tmp_path: Path, builds: ReleaseBuilds, first_release: Path) -> None:
    layout = install_first(tmp_path / "opt", first_release)
    bad_lock = tmp_path / "lock.txt"
    bad_lock.write_text(f"six==1.17.0 --hash=sha256:{'ab' * 32}\n")
    with pip_from(builds.wheelhouse), pytest.raises(InstallError, match="installing the lock failed"):
        installer(layout).install(Release("0.3.0", builds.wheel("0.3.0"), bad_lock))
    assert sorted(p.name for p in layout.releases.iterdir()) == ["0.2.0"]  # no build left behind
    assert layout.version_of(layout.current) == "0.2.0"


def test_the_switch_refuses_a_release_that_is_not_completely_installed(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "opt")
    (layout.release_dir("0.2.0") / "venv").mkdir(parents=True)
    (layout.release_dir("0.2.0") / "COMPLETE").write_text("0.2.0\n")
    layout.point(layout.current, "0.2.0")
    (layout.releases / "0.3.0" / "venv").mkdir(parents=True)  # a build whose marker was never written
    layout.build_dir("0.4.0").mkdir()
    with pytest.raises(ValueError, match="not completely installed"):
        layout.point(layout.current, "0.3.0")
    assert layout.version_of(layout.current) == "0.2.0"
    assert sorted(layout.clean({"0.2.0"})) == [".build-0.4.0", "0.3.0"]
    assert [p.name for p in layout.releases.iterdir()] == ["0.2.0"]


def test_the_state_file_survives_a_restart_with_its_bad_marks(tmp_path: Path) -> None:
    path = tmp_path / "update-state.json"
    assert saved.load(path) == Progress()  # a kiosk that never updated
    progress = Progress().at("health-check", from_version="0.2.0", to_version="0.3.0").with_bad("0.3.0")
    saved.save(path, progress)
    again = saved.load(path)
    assert (again.step, again.from_version, again.to_version, again.bad) == ("health-check", "0.2.0", "0.3.0",
                                                                               ("0.3.0",))
    assert json.loads(path.read_text())["format"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["update-state.json"]  # written beside, then renamed


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.dictionaries(st.sampled_from(["format", "step", "from", "to", "state", "error", "bad",
                                                  "updated_at"]),
                                 st.one_of(st.none(), st.integers(), st.text(max_size=20),
                                           st.lists(st.one_of(st.text(max_size=8), st.integers()), max_size=4)),
                                 max_size=8).map(lambda d: json.dumps({"format": 1, **d}).encode())))
def test_any_state_file_reads_as_a_known_step_never_a_traceback(tmp_path_factory: pytest.TempPathFactory,
                                                                  raw: bytes) -> None:
    path = tmp_path_factory.mktemp("state") / "update-state.json"
    path.write_bytes(raw)
    try:
        progress = saved.load(path)
    except (TypeError, ValueError) as exc:  # a number where a time is expected
        pytest.fail(f"unreadable state file raised {exc!r}")
    assert progress.step in saved.STEPS and progress.state in saved.REPORTED
    assert all(isinstance(v, str) for v in progress.bad)


def test_a_version_marked_bad_is_never_chosen_again() -> None:
    index = [{"version": v, "wheel": f"w-{v}", "lock": f"l-{v}"} for v in ("0.3.0", "0.4.0")]
    from packaging.version import Version

    choose = ReleaseFinder._choose
    assert choose(index, Version("0.2.0"), None) == ("0.4.0", "w-0.4.0", "l-0.4.0")
    assert choose(index, Version("0.2.0"), None, frozenset({"0.4.0"})) == ("0.3.0", "w-0.3.0", "l-0.3.0")
    assert choose(index, Version("0.3.0"), None, frozenset({"0.4.0"})) is None
    with pytest.raises(UpdateRefused, match="rolled back; it is never retried"):
        choose(index, Version("0.3.0"), "0.4.0", frozenset({"0.4.0"}))


def test_the_daemons_heartbeat_repeats_the_updaters_state(tmp_path: Path) -> None:
    from appliance.uplink.fleet_report import kiosk_report

    state_file = Layout(tmp_path / "opt").state_file
    assert "update_state" not in kiosk_report({}, tmp_path, None, state_file)  # never updated
    saved.save(state_file, Progress().at("idle", state="rolled-back", error="0.4.0: exited at start " + "x" * 900))
    assert state_file.stat().st_mode & 0o777 == 0o644  # the daemon runs as another user than the updater
    report = kiosk_report({"state": "idle"}, tmp_path, None, state_file)
    assert report["update_state"] == "rolled-back" and report["update_error"].startswith("0.4.0: exited at start")
    assert len(report["update_error"]) <= 500 and report["version"] == "0.1.0"
    state_file.write_text('{"format": 1, "state": "lying", "error": 5}')
    assert "update_state" not in kiosk_report({}, tmp_path, None, state_file)
