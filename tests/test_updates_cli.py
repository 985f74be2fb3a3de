"""`stella-kiosk update --now | --loop` and the `[updates]` config: clear lines, exit 78 for a config that
restarting cannot fix, one updater at a time, a real round against a real companion."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.config import ConfigError, config_from_dict
from appliance.updates.layout import Layout
from tests.daemon_helpers import ROOT, write_daemon_config
from tests.update_helpers import ReleaseBuilds, builds, district

__all__ = ["builds"]


async def update(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "appliance.cli", "update", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode or 0, out.decode(), err.decode()


def fake_release(layout: Layout, version: str) -> None:
    """A complete release directory without a venv (enough for a round that finds nothing to take)."""
    (layout.release_dir(version) / "venv").mkdir(parents=True)
    (layout.release_dir(version) / "COMPLETE").write_text(f"{version}\n")


async def test_update_now_checks_the_signed_repository_and_says_what_it_found(
        tmp_path: Path, builds: ReleaseBuilds) -> None:
    async with district(tmp_path, builds) as d:
        d.stack.config()  # writes device.key
        d.publish("0.2.0")  # the release this kiosk already runs
        layout = Layout(tmp_path / "opt")
        fake_release(layout, "0.2.0")
        layout.point(layout.current, "0.2.0")
        toml = write_daemon_config(tmp_path / "kiosk.toml", d.stack, tmp_path / "state", tmp_path / "c.sock")
        with toml.open("a") as f:
            f.write(f'[updates]\ntrusted_root = "{d.root_file}"\nprefix = "{layout.prefix}"\n')
        code, out, err = await update("--now", "--config", str(toml))
        assert (code, out.strip()) == (0, "stella-kiosk update: nothing assigned"), err  # no channel has it yet
        await d.roll_out("0.2.0")
        code, out, err = await update("--now", "--config", str(toml))
        assert (code, out.strip()) == (0, "stella-kiosk update: 0.2.0 is the assigned version"), err

        # One updater at a time: a second one says so instead of racing the first.
        fd = os.open(layout.prefix / "update.lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            code, out, err = await update("--now", "--config", str(toml))
        finally:
            os.close(fd)
        assert code == 1 and "another update is in progress" in err

        # The service loop does nothing while updates are off.
        code, out, err = await update("--loop", "--config", str(toml))
        assert code == 0 and "updates are off" in out


async def test_a_missing_trusted_root_is_one_line_and_exit_78(tmp_path: Path) -> None:
    toml = tmp_path / "kiosk.toml"
    toml.write_text(f'[kiosk]\nstate_dir = "{tmp_path}"\n[updates]\nenabled = true\n'
                    f'trusted_root = "{tmp_path / "nope.json"}"\nprefix = "{tmp_path / "opt"}"\n')
    code, _, err = await update("--now", "--config", str(toml))
    assert code == 78 and "updates.trusted_root" in err and "does not exist" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    toml.write_text("[updates]\ncheck_hours = 0\n")
    code, _, err = await update("--now", "--config", str(toml))
    assert code == 78 and "updates.check_hours" in err and "Traceback" not in err


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(["check_hours", "jitter_minutes", "health_timeout_s", "prefix", "enabled"]),
       value=st.one_of(st.floats(allow_nan=True), st.integers(), st.text(max_size=12), st.booleans()))
def test_every_updates_value_is_accepted_or_refused_by_name(key: str, value: object) -> None:
    try:
        config = config_from_dict({"updates": {key: value}})
    except ConfigError as exc:
        assert f"updates.{key}" in str(exc)
        return
    settings_ = config.updates
    assert 0.05 <= settings_.check_hours <= 168 and 0 <= settings_.jitter_minutes <= 1440
    assert 10 <= settings_.health_timeout_s <= 900 and settings_.prefix.is_absolute()
