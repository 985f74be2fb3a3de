"""Hardware-in-the-loop tests: real GPIO pins and a real sound card on a Raspberry Pi.

Run on the kiosk itself with `scripts/test.sh -m hil` (and the kiosk service stopped, so the pins and
the sound card are free). Elsewhere they are skipped. The config under test is
/etc/stella-kiosk/kiosk.toml, or the file named by STELLA_HIL_CONFIG.

What is asserted is physical: the level on each LED's pad read back by the SoC's own pin tool
(`pinctrl`, or `raspi-gpio` on older images) while the kiosk drives it, a press and release made by a
finger on the button, and the speaker's tone heard by the microphone a few centimetres away.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from appliance.audio.dsp import rms_dbfs
from tests.audio_helpers import peak_hz, tone


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


def pad_reader() -> tuple[str, ...]:
    """The command that reads a GPIO pad's level without claiming the pin (the kiosk keeps driving it)."""
    for tool in ("pinctrl", "raspi-gpio"):
        if shutil.which(tool):
            return (tool, "get")
    pytest.skip("neither pinctrl nor raspi-gpio is installed (apt: raspi-utils or raspi-gpio)")


def pad_is_high(reader: tuple[str, ...], pin: int) -> bool:
    out = subprocess.run([*reader, str(pin)], capture_output=True, text=True, timeout=5, check=True).stdout
    # pinctrl: "23: op dh pd | hi // GPIO23 = output"; raspi-gpio: "GPIO 23: level=1 fsel=1 func=OUTPUT"
    match = re.search(r"\|\s*(hi|lo)\b|level=([01])", out)
    assert match, f"cannot read the level of GPIO{pin} from {out!r}"
    return match.group(1) == "hi" or match.group(2) == "1"


def sample_pad(reader: tuple[str, ...], pin: int, seconds: float) -> tuple[float, int]:
    """(fraction of samples high, level changes per second) of one pad over ``seconds``."""
    levels = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # as fast as the tool answers (a few hundred reads per second)
        levels.append(pad_is_high(reader, pin))
    changes = sum(a != b for a, b in itertools.pairwise(levels))
    return sum(levels) / len(levels), round(changes / seconds)


def test_leds_show_each_state_on_the_pads(config) -> None:
    """Each state lights only its own LED, with the pattern the README promises: idle dim (PWM, mostly
    low), connecting blinking about 4 times a second, connected steady on, error flickering."""
    from appliance.core.state import State
    from appliance.daemon.parts import select_pin_factory
    from appliance.hardware.leds import StatusLeds

    if config.leds.kind != "single":
        pytest.skip("the pad check reads one LED per state (leds.kind = \"single\")")
    reader = pad_reader()
    select_pin_factory(config)
    leds = StatusLeds(config.leds)
    try:
        for state in (State.IDLE, State.CONNECTING, State.CONNECTED, State.ERROR):
            pin = leds.pin_for(state)
            if pin is None:
                continue
            leds.show(state)
            high, changes_per_s = sample_pad(reader, pin, 2.0)
            print(f"\n{state.value}: GPIO{pin} high {high:.0%} of the time, {changes_per_s} changes/s")
            if state is State.IDLE:
                assert 0.02 < high < 0.5, "idle should be a dim (PWM) light"
            elif state is State.CONNECTING:
                assert 0.3 < high < 0.7 and 5 <= changes_per_s <= 11, "connecting should blink ~4 times a second"
            elif state is State.CONNECTED:
                assert high == 1.0, "connected should be steadily on"
            else:
                assert 0.25 < high < 0.75 and changes_per_s >= 5, "error should flicker"
            for other in {p for s in State if (p := leds.pin_for(s)) not in (None, pin)}:
                assert not pad_is_high(reader, other), f"GPIO{other} is lit while showing {state.value}"
        leds.show(State.DISCONNECTED)
        lit = [p for s in State if (p := leds.pin_for(s)) is not None and pad_is_high(reader, p)]
        assert lit == [], f"LEDs still lit while disconnected: {lit}"
    finally:
        leds.close()


def test_respeaker_hat_pixels(config) -> None:
    """A ReSpeaker 2-mic / 4-mic HAT's APA102 pixels (``[leds] kind = "apa102"``) through the kiosk's own
    driver: on the hardware SPI bus (spidev's /dev/spidev0.1, not gpiozero's bit-banged fallback), every
    state and a level-meter sweep drawn, the 4-mic HAT's power pin high on its pad while lit and the pixels
    dark after. A person watching sees each state's colour in turn. (The HAT's button on GPIO17 is the
    button test below: it is the [button] default pin.)"""
    from appliance.core.ports import Activity
    from appliance.core.state import State
    from appliance.daemon.parts import select_pin_factory
    from appliance.hardware.pixels import PixelStatusLight

    if config.leds.kind != "apa102":
        pytest.skip('the HAT check needs leds.kind = "apa102"')
    assert Path("/dev/spidev0.1").exists(), "SPI is off: add dtparam=spi=on to /boot/firmware/config.txt, reboot"
    reader = pad_reader() if config.leds.power_pin > 0 else None
    select_pin_factory(config)
    light = PixelStatusLight(config.leds)
    try:
        assert "Hardware" in type(light.strip._spi).__name__, f"bit-banged SPI: {light.strip._spi!r}"
        if reader is not None:
            assert pad_is_high(reader, config.leds.power_pin), f"GPIO{config.leds.power_pin} (pixel power) is low"
        for state, activity in ((State.IDLE, Activity.NONE), (State.CONNECTING, Activity.NONE),
                                (State.CONNECTED, Activity.NONE), (State.CONNECTED, Activity.LISTENING),
                                (State.ERROR, Activity.NONE)):
            print(f"\n{state.value} {activity.value}: look at the pixels")
            light.show(state, activity)
            time.sleep(1.0)
        light.show(State.CONNECTED)
        for step in range(50):  # the meter's sweep: 2 s, dim to full, at 25 updates a second
            light.level(step / 49)
            time.sleep(0.04)
    finally:
        light.close()
    if reader is not None:
        assert not pad_is_high(reader, config.leds.power_pin), "the pixels' power stayed on after close"


def test_button_press_and_release_are_seen(config) -> None:
    """A finger's press and release reach gpiozero, and the pin reads released beforehand (a shorted
    or wrongly pulled button would "press" at once, with nobody touching it)."""
    from gpiozero import Button

    from appliance.daemon.parts import select_pin_factory

    select_pin_factory(config)
    button = Button(config.button.pin, pull_up=config.button.pull_up)
    try:
        assert not button.is_pressed, "the button reads pressed with nobody touching it: check pull_up and wiring"
        print("\n>>> press the kiosk's button (and let go) within 20 seconds")
        assert button.wait_for_press(timeout=20), "no press seen on the button pin"
        assert button.wait_for_release(timeout=10), "the button was pressed but never released"
    finally:
        button.close()


async def test_microphone_hears_the_speaker(config) -> None:
    """A 1 kHz tone from the speaker is heard by the microphone beside it: louder than the room's own
    level by at least 10 dB in that band, with its peak at the tone's frequency."""
    from appliance.daemon.parts import build_microphone, build_speaker

    mic = build_microphone(config)
    speaker = build_speaker(config)
    await mic.start()
    await speaker.start()

    def record(seconds: float) -> np.ndarray:
        chunks = []
        paced = threading.Event()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            chunks.append(mic.read(mic.sample_rate // 50))
            paced.wait(0.02)  # read in 20 ms steps, as the call's track does
        return np.concatenate(chunks)

    try:
        room = record(1.0)
        speaker.write(tone(1000, 1.5, rate=speaker.sample_rate, level=0.3))
        heard = record(1.0)
    finally:
        await mic.close()
        await speaker.close()
    room_db, heard_db, peak = rms_dbfs(room), rms_dbfs(heard), peak_hz(heard, mic.sample_rate)
    print(f"\nroom {room_db:.1f} dBFS, with the tone {heard_db:.1f} dBFS, peak {peak:.0f} Hz")
    assert heard_db >= room_db + 10, "the microphone did not hear the speaker (muted capture, wrong device?)"
    assert peak == pytest.approx(1000, abs=30)
