"""What an admin sees when the kiosk's own parts are missing: the base install without the `[kiosk]`
extra (no gpiozero, no PyAudio), or a board where no GPIO pin library loads.

Each case runs the real command line in a subprocess and expects one clear line, no traceback and an
exit code that keeps systemd from restarting into the same failure (78 for `run`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import EX_CONFIG
from tests.config_helpers import good_sections, write_toml

ROOT = Path(__file__).resolve().parent.parent

# Runs the command line as a base install sees it: importing the named modules fails as it does when
# they are not installed (ModuleNotFoundError with the module's name).
WITHOUT = """
import sys
from importlib.abc import MetaPathFinder

BLOCKED = set(sys.argv[1].split(","))

class NotInstalled(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from appliance.cli import main
sys.exit(main(sys.argv[2:]))
"""


def cli_without(modules: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("GPIOZERO_PIN_FACTORY", None)
    return subprocess.run([sys.executable, "-c", WITHOUT, modules, *args], capture_output=True, text=True,
                          timeout=120, env=env, cwd=cwd)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_demo_without_the_kiosk_extra_names_what_to_install(tmp_path: Path) -> None:
    """Before: `pip install .` then `stella-kiosk demo` ended in a ModuleNotFoundError traceback."""
    result = cli_without("gpiozero", "demo", "--output", str(tmp_path / "out"), "--quiet", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    [line] = lines(result.stderr)
    assert "gpiozero" in line and "pip install 'stella-kiosk[kiosk]'" in line and "scripts/setup.sh" in line
    assert not (tmp_path / "out").exists()  # nothing was started or written


@pytest.mark.parametrize("modules, audio", [("gpiozero", "wav"), ("pyaudio", "pyaudio")])
def test_run_without_the_kiosk_extra_names_what_to_install(tmp_path: Path, modules: str, audio: str) -> None:
    sections = good_sections(tmp_path)
    sections["audio"] = {"input": f'"{audio}"', "output": f'"{audio if audio == "pyaudio" else "null"}"'}
    config = write_toml(tmp_path / "kiosk.toml", sections)
    result = cli_without(modules, "run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == EX_CONFIG, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    [line] = lines(result.stderr)
    assert {"gpiozero": "gpiozero", "pyaudio": "PyAudio"}[modules] in line
    assert "pip install 'stella-kiosk[kiosk]'" in line


@pytest.mark.parametrize("factory", ["auto", "lgpio", "rpigpio"])
def test_run_where_no_pin_factory_loads_exits_78_with_one_line(tmp_path: Path, factory: str) -> None:
    """This machine has no GPIO, as an arm64 board without a working pin library: before, `run` printed
    gpiozero's four fallback warnings and exited 1, so systemd restarted it five times for nothing."""
    sections = good_sections(tmp_path)
    sections["gpio"] = {"pin_factory": f'"{factory}"'}
    config = write_toml(tmp_path / "kiosk.toml", sections)
    result = cli_without("", "run", "--config", str(config), cwd=tmp_path)
    assert result.returncode == EX_CONFIG, result.stderr
    assert "Traceback" not in result.stderr and "Falling back" not in result.stderr, result.stderr
    assert "Warning" not in result.stderr, result.stderr
    [line] = lines(result.stderr)
    assert line.startswith(f"config error: {config}: gpio.pin_factory: "), line
    assert 'pin_factory = "mock"' in line
