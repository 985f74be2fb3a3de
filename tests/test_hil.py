"""Hardware-in-the-loop tests: real GPIO pins and a real sound card on a Raspberry Pi.

Run on the kiosk itself with `scripts/test.sh -m hil` (and the kiosk service stopped, so the pins and
the sound card are free). Elsewhere they are skipped. The config under test is
/etc/stella-kiosk/kiosk.toml, or the file named by STELLA_HIL_CONFIG.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from appliance.audio.dsp import rms_dbfs


def on_raspberry_pi() -> bool:
    try:
        return "raspberry pi" in Path("/proc/device-tree/model").read_text(errors="ignore").lower()
    except OSError:
        return False


pytestmark = [pytest.mark.hil,
              pytest.mark.skipif(not on_raspberry_pi(), reason="needs a Raspberry Pi (real GPIO and sound card)")]


@pytest.fixture
def config():
    from appliance.config import load_config

    return load_config(os.environ.get("STELLA_HIL_CONFIG", "/etc/stella-kiosk/kiosk.toml"))


def test_leds_cycle_through_states(config) -> None:
    from appliance.hardware.leds import StatusLeds
    from appliance.parts import select_pin_factory
    from appliance.state import State

    select_pin_factory(config)
    leds = StatusLeds(config.leds)
    try:
        for state in State:
            leds.show(state)
            assert leds.state is state
            done = threading.Event()
            done.wait(0.8)  # let the person watching see each pattern
    finally:
        leds.close()


def test_button_press_is_seen(config) -> None:
    from gpiozero import Button

    from appliance.parts import select_pin_factory

    select_pin_factory(config)
    button = Button(config.button.pin, pull_up=config.button.pull_up)
    try:
        print("\n>>> press the kiosk's button within 20 seconds")
        assert button.wait_for_press(timeout=20), "no press seen on the button pin"
    finally:
        button.close()


async def test_microphone_records_and_speaker_plays(config) -> None:
    from appliance.audio.earcons import Cue, Earcons
    from appliance.parts import build_microphone, build_speaker

    mic = build_microphone(config)
    speaker = build_speaker(config)
    await mic.start()
    await speaker.start()
    try:
        speaker.write(Earcons(speaker.sample_rate)[Cue.CONNECTED])
        chunks = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            chunks.append(mic.read(mic.sample_rate // 50))
            threading.Event().wait(0.02)
        level = rms_dbfs(np.concatenate(chunks))
        print(f"\nmicrophone level over 1 s: {level:.1f} dBFS")
        assert level > -100, "the microphone delivered digital silence"
    finally:
        await mic.close()
        await speaker.close()
