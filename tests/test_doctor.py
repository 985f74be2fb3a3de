"""`stella-kiosk doctor` against a real companion and simulator (mock pins, WAV audio)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from appliance.companion.models import DEFAULT_MODELS
from tests.audio_helpers import PulseServer, pulse  # noqa: F401
from tests.harness import lesson_stack


async def run_doctor(config: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "appliance.cli", "doctor", "--config", str(config), "--button-timeout", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


def write_config(tmp_path: Path, companion_url: str, realtime_url: str) -> Path:
    path = tmp_path / "kiosk.toml"
    path.write_text(f"""
[kiosk]
id = "kiosk-test"
state_dir = "{tmp_path / 'state'}"
[companion]
url = "{companion_url}"
device_key_file = "{tmp_path / 'device.key'}"
timeout_s = 2.0
[realtime]
base_url = "{realtime_url}"
[audio]
input = "wav"
output = "wav"
output_wav = "{tmp_path / 'chime.wav'}"
[gpio]
pin_factory = "mock"
""")
    return path


async def test_doctor_passes_on_a_healthy_kiosk_and_names_failures(tmp_path: Path) -> None:
    async with lesson_stack(tmp_path) as stack:
        stack.config()  # writes device.key
        (tmp_path / "device.key").chmod(0o600)
        code, out = await run_doctor(write_config(tmp_path, stack.companion.base_url, stack.simulator.base_url))
        assert code == 0, out
        for name in ("config", "device key", "storage", "companion health", "clock", "lesson + token",
                     "realtime reachable", "speaker", "microphone", "LEDs"):
            assert f"PASS  {name}" in out, (name, out)
        assert (tmp_path / "chime.wav").stat().st_size > 1000  # the chime was played
        assert stack.device_key not in out

        (tmp_path / "device.key").chmod(0o644)
        code, out = await run_doctor(write_config(tmp_path, "http://127.0.0.1:9", stack.simulator.base_url))
    assert code == 1
    assert "FAIL  companion health" in out and "cannot reach http://127.0.0.1:9" in out
    assert "FAIL  device key" in out and "chmod 600" in out


async def test_doctor_names_the_missing_sound_device_and_lists_those_present(
        tmp_path: Path, pulse: PulseServer) -> None:  # noqa: F811
    """Guards against a bare traceback-like line (and a skipped microphone check) when the configured
    card is not plugged in: each missing device is named with the devices that could replace it."""
    config = write_config(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9")
    text = config.read_text().replace('input = "wav"\noutput = "wav"\n',
                                      'input = "pyaudio"\noutput = "pyaudio"\ninput_device = "USB"\n'
                                      'output_device = "pulse"\n')
    config.write_text(text)
    code, out = await run_doctor(config)
    assert code == 1
    line = next(row for row in out.splitlines() if "FAIL  microphone" in row)
    assert "microphone 'USB' not found: devices present: 'pulse' (in " in line, out
    assert "input_device" in line
    assert "PASS  speaker" in out and "PASS  sound devices" in out

    config.write_text(text.replace('input_device = "USB"', 'input_device = "pulse"')
                      .replace('output_device = "pulse"', 'output_device = "seeed-voicecard"'))
    code, out = await run_doctor(config)
    assert code == 1
    assert "speaker 'seeed-voicecard' not found: devices present: 'pulse'" in out, out
    mic = next(row for row in out.splitlines() if "  microphone" in row)
    assert "1 s recorded" in mic, out  # still measured (the idle virtual mic is digital silence)



async def test_the_kiosks_doctor_says_why_the_companion_is_not_healthy(tmp_path: Path) -> None:
    """Every realtime model retired: the companion's health is 503 and the doctor line carries its reason."""
    retired = dict.fromkeys(DEFAULT_MODELS["realtime"], "2026-01-01")
    async with lesson_stack(tmp_path, model_shutdowns=retired) as stack:
        await asyncio.wait_for(stack.companion.models_checked.wait(), 10)
        stack.config()  # writes device.key
        (tmp_path / "device.key").chmod(0o600)
        code, out = await run_doctor(write_config(tmp_path, stack.companion.base_url, stack.simulator.base_url))
    assert code == 1
    line = next(x for x in out.splitlines() if "companion health" in x)
    assert line.split()[0] == "FAIL" and "answered 503: no realtime model works: " in line, out


async def test_doctor_cycles_the_hat_pixels(tmp_path: Path) -> None:
    """A ReSpeaker 4-mic HAT's pixels (`[leds] kind = "apa102"`) through the daemon's own pin factory choice
    (mock pins: gpiozero's bit-banged SPI): the doctor's LED row passes, as it does for single LEDs."""
    config = write_config(tmp_path, "http://127.0.0.1:9", "http://127.0.0.1:9")
    config.write_text(config.read_text() + '[leds]\nkind = "apa102"\npixels = 12\npower_pin = 5\n')
    _code, out = await run_doctor(config)  # 1: no companion here; the LED row is what is checked
    assert "PASS  LEDs" in out, out
    assert "Traceback" not in out
