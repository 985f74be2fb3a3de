"""Kiosk config: the shipped files load; every mistake gives one clear line and exit 78."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import EX_CONFIG, ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parent.parent


def test_example_and_demo_configs_load() -> None:
    example = load_config(ROOT / "config" / "kiosk.example.toml")
    assert example.button.pin == 17
    assert example.realtime.base_url == "https://api.openai.com"
    assert example.realtime.allow_loopback_ice is False
    demo = load_config(ROOT / "appliance" / "data" / "demo.toml")
    assert demo.gpio.pin_factory == "mock"
    assert demo.kiosk.state_dir == ROOT / "appliance" / "data" / "state"  # relative paths resolve next to the file


@pytest.mark.parametrize(
    ("toml", "key", "fragment"),
    [
        ("[button]\npin = 99\n", "button.pin", "BCM number 0-27"),
        ("[button]\npin = \"seventeen\"\n", "button.pin", "whole number"),
        ("[button]\npins = 4\n", "button.pins", "unknown key"),
        ("[buttons]\npin = 4\n", "buttons", "unknown section"),
        ("[realtime]\nbase_url = \"api.openai.com\"\n", "realtime.base_url", "not an http(s) URL"),
        ("[companion]\nurl = \"ftp://x\"\n", "companion.url", "not an http(s) URL"),
        ("[audio]\nvolume = 140\n", "audio.volume", "0-100"),
        ("[audio]\ninput = \"mic\"\n", "audio.input", "use one of: pyaudio, wav"),
        ("[leds]\nidle = 17\n", "leds.idle", "already used by button.pin"),
        ("[lesson]\nlevel = \"Z9\"\n", "lesson.level", "use one of"),
        ("[lesson]\ngreeting = \"yes\"\n", "lesson.greeting", "true or false"),
        ("[kiosk]\nid = \"room 12\"\n", "kiosk.id", "letters, digits"),
        ("[realtime]\nice_servers = [\"example.org\"]\n", "realtime.ice_servers[0]", "STUN/TURN"),
        ("button = 3\n", "button", "must be a table"),
    ],
)
def test_bad_values_name_file_key_and_rule(tmp_path: Path, toml: str, key: str, fragment: str) -> None:
    path = tmp_path / "kiosk.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == key
    assert fragment in info.value.message
    assert str(path) in str(info.value)


def test_missing_key_file_is_a_config_error(tmp_path: Path) -> None:
    config = config_from_dict({"companion": {"device_key_file": str(tmp_path / "nope.key")}})
    with pytest.raises(ConfigError, match=r"companion\.device_key_file: cannot read"):
        config.read_device_key()


@pytest.mark.parametrize(
    "content",
    [
        "[button]\npin = 99\n",                 # bad pin
        "[button]\nbounce = 5\n",               # unknown key
        "[audio]\nvolume = \"loud\"\n",         # wrong type
        "[realtime]\nbase_url = \"nowhere\"\n",  # bad URL
        "[kiosk\nid = 1\n",                     # not TOML
        None,                                   # missing file
        # missing key file (a state_dir next to the file: the start-up checks create a missing one)
        "[kiosk]\nstate_dir = \"state\"\n[companion]\ndevice_key_file = \"/nonexistent/device.key\"\n",
    ],
)
def test_cli_exits_78_with_one_line_and_no_traceback(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "kiosk.toml"
    if content is not None:
        path.write_text(content)
    result = subprocess.run([sys.executable, "-m", "appliance.cli", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == EX_CONFIG, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("config error: ") and str(path) in lines[0]
    assert "Traceback" not in result.stderr


def test_check_config_command(tmp_path: Path) -> None:
    # --static: the example names /etc/stella-kiosk/device.key, which this machine does not have
    # (tests/test_preflight.py runs the full check against real files).
    ok = subprocess.run([sys.executable, "-m", "appliance.cli", "check-config", "--static",
                         str(ROOT / "config" / "kiosk.example.toml")], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "OK" in ok.stdout


def test_rgb_led_needs_three_free_pins() -> None:
    ok = config_from_dict({"leds": {"kind": "rgb", "red": 5, "green": 6, "blue": 13, "idle": 17}})
    assert ok.leds.kind == "rgb"  # single-LED pins are ignored for an RGB LED
    with pytest.raises(ConfigError, match="red, green and blue"):
        config_from_dict({"leds": {"kind": "rgb", "red": 5}})
    with pytest.raises(ConfigError) as info:
        config_from_dict({"leds": {"kind": "rgb", "red": 5, "green": 5, "blue": 13}})
    assert info.value.key == "leds.green"
