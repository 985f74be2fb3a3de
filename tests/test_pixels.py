"""The ReSpeaker HATs' APA102 pixels on gpiozero's mock SPI: every bit the kiosk clocks out is captured by a
``MockSPIDevice`` on SPI 0 / chip select 1 and decoded back to colours and brightness; the states, the
animations and the level meter (a tone's envelope through the real microphone track) are checked there.
The same on a real HAT: tests/test_hil.py."""

from __future__ import annotations

import time

import numpy as np
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockSPIDevice
from hypothesis import given
from hypothesis import strategies as st

from appliance.audio.meter import METER_RATE_HZ, brightness
from appliance.audio.tracks import microphone_track
from appliance.audio.wav import ScriptedMicrophone
from appliance.config import ConfigError, LedSettings, config_from_dict
from appliance.core.ports import Activity
from appliance.core.state import State
from appliance.daemon.assemble import level_meter
from appliance.hardware.leds import COLORS, IDLE_LEVEL, METER_BASE, make_status_leds, meter_value
from appliance.hardware.pixels import PixelStatusLight, decode, encode
from tests.audio_helpers import envelope_db, enveloped_tone, pearson


class Wire(MockSPIDevice):
    """The far end of the bus: each transfer (chip select low … high) as bytes, with when it ended."""

    def __init__(self) -> None:
        super().__init__(clock_pin=11, mosi_pin=10, select_pin=7)  # SPI 0, chip select 1
        self.frames: list[tuple[float, bytes]] = []

    def on_select(self) -> None:
        if self.select_pin.state and self.rx_buf:  # deselected after clocking bits: a transfer ended
            bits = self.rx_buf
            data = bytes(int("".join("1" if b else "0" for b in bits[i:i + 8]), 2) for i in range(0, len(bits), 8))
            self.frames.append((time.monotonic(), data))
        super().on_select()

    def until(self, expected: list[tuple[int, int, int, int]], timeout: float = 3.0) -> None:
        """Wait until the last frame on the wire shows ``expected`` (the pixels' own thread draws it)."""
        deadline = time.monotonic() + timeout
        while not self.frames or self.pixels() != expected:
            assert time.monotonic() < deadline, (self.pixels() if self.frames else "nothing drawn", expected)
            time.sleep(0.005)

    def pixels(self, index: int = -1) -> list[tuple[int, int, int, int]]:
        data = self.frames[index][1]
        count = (len(data) - 8) // 4
        while count > 0 and len(data) != 4 + 4 * count + max(4, (count + 15) // 16):
            count -= 1
        return decode(list(data), count)


@pytest.fixture
def wire() -> Wire:
    factory = MockFactory()
    Device.pin_factory = factory
    device = Wire()
    yield device
    device.close()
    factory.reset()


def colour(name: str) -> tuple[int, int, int]:
    return tuple(round(255 * c) for c in COLORS[name])  # type: ignore[return-value]


def level5(value: float) -> int:
    return round(31 * value)


@given(st.lists(st.tuples(st.integers(0, 31), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
                max_size=64))
def test_the_frame_format_round_trips(pixels: list[tuple[int, int, int, int]]) -> None:
    data = encode(pixels)
    assert data[:4] == [0, 0, 0, 0]
    assert all(b >> 5 == 0b111 for b in data[4:4 + 4 * len(pixels):4])
    assert data[4 + 4 * len(pixels):] == [0] * max(4, (len(pixels) + 15) // 16)
    assert decode(data, len(pixels)) == pixels


def test_each_state_on_the_wire(wire: Wire) -> None:
    settings = LedSettings(kind="apa102", pixels=3, brightness=0.5, level_meter=False)
    light = make_status_leds(settings)
    assert isinstance(light, PixelStatusLight)
    try:
        light.show(State.IDLE)
        wire.until([(level5(0.5 * IDLE_LEVEL), *colour("idle"))] * 3)
        light.show(State.CONNECTED)
        wire.until([(level5(0.5), *colour("connected"))] * 3)
        wire.frames.clear()
        light.show(State.CONNECTING)  # blinks 0.125 s on / off on the pixels' thread
        deadline = time.monotonic() + 3
        while len(wire.frames) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        shown = [wire.pixels(i)[0] for i in range(5)]
        assert shown[0::2] == [(level5(0.5), *colour("connecting"))] * 3
        assert [p[0] for p in shown[1::2]] == [0, 0]
        gaps = [b[0] - a[0] for a, b in zip(wire.frames, wire.frames[1:5], strict=False)]
        assert all(0.08 < g < 0.4 for g in gaps), gaps
        light.show(State.CONNECTED, Activity.SPEAKING)  # a pulse: brightness fades through in-between levels
        time.sleep(0.5)
        levels = {wire.pixels(i)[0][0] for i in range(-10, 0)}
        assert len(levels) >= 3 and all(level5(0) <= v <= level5(0.5) for v in levels), levels
        light.show(State.ERROR)
        count = len(wire.frames)
        time.sleep(0.3)
        assert len(wire.frames) > count + 2 and {p[1:] for p in wire.pixels(-1)} <= {colour("error"), (0, 0, 0)}
        light.show(State.STOPPING)
        wire.until([(0, 0, 0, 0)] * 3)
        time.sleep(0.1)  # a blink's dark frame may have come first: let the stop itself be drawn
        assert wire.pixels() == [(0, 0, 0, 0)] * 3
        count = len(wire.frames)
        time.sleep(0.2)
        assert len(wire.frames) == count  # the animation stopped with the new pattern
    finally:
        light.close()
    assert wire.pixels() == [(0, 0, 0, 0)] * 3  # dark once the kiosk stops


def test_four_mic_hat_twelve_pixels_and_power_pin(wire: Wire) -> None:
    settings = LedSettings(kind="apa102", pixels=12, brightness=1.0, power_pin=5)
    light = make_status_leds(settings)
    try:
        assert Device.pin_factory.pin(5).state  # the 4-mic HAT's pixels are powered
        light.show(State.CONNECTED)
        wire.until([(level5(METER_BASE), *colour("connected"))] * 12)
        light.level(1.0)
        wire.until([(31, *colour("connected"))] * 12)
        light.show(State.CONNECTED, Activity.LISTENING)  # hold-to-talk keeps its colour while metered
        light.level(0.5)
        wire.until([(level5(meter_value(0.5)), *colour("listening"))] * 12)
    finally:
        light.close()
    assert not Device.pin_factory.pin(5).state


async def test_the_pixels_follow_the_learners_voice(wire: Wire) -> None:
    """A tone with a level envelope through the microphone's real track and the meter as the kiosk wires it:
    the pixels' brightness decoded from the wire follows the envelope."""
    config = config_from_dict({"leds": {"kind": "apa102", "pixels": 3, "brightness": 1.0}})
    light = make_status_leds(config.leds)
    meter = level_meter(config, light)
    assert meter is not None
    mic = ScriptedMicrophone(sample_rate=48000)
    await mic.start()
    env = envelope_db(3.0, -48.0, -14.0)
    mic.say(enveloped_tone(env), rate=48000)
    track = microphone_track(lambda n: meter.heard(mic.read(n)), 48000)
    light.show(State.CONNECTED)
    wire.until([(level5(METER_BASE), *colour("connected"))] * 3)
    seen: list[float] = []
    started = time.monotonic()
    try:
        for _ in range(env.size):
            await track.recv()
            seen.append(wire.pixels()[0][0] / 31)
    finally:
        track.stop()
        light.close()
    elapsed = time.monotonic() - started
    r = pearson(np.array(seen), np.array([brightness(v) for v in env]))
    assert r >= 0.8, r
    assert meter.updates <= METER_RATE_HZ * elapsed + 1.5
    assert max(seen) > 0.9 and min(seen) == pytest.approx(METER_BASE, abs=0.04)


@pytest.mark.parametrize(("leds", "key", "fragment"), [
    ({"kind": "apa102", "pixels": 0}, "leds.pixels", "3 (2-mic HAT), 12 (4-mic HAT)"),
    ({"kind": "apa102", "pixels": 65}, "leds.pixels", "1-64"),
    ({"kind": "apa102", "brightness": 0.0}, "leds.brightness", "0.05-1.0"),
    ({"kind": "apa102", "brightness": 1.5}, "leds.brightness", "0.05-1.0"),
    ({"kind": "apa102", "power_pin": 10}, "leds.power_pin", "SPI 0's MOSI"),
    ({"kind": "apa102", "power_pin": 17}, "leds.power_pin", "already used by button.pin"),
    ({"kind": "apa102", "level_meter": "yes"}, "leds.level_meter", "true or false"),
])
def test_bad_pixel_settings_name_the_key(leds: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"leds": leds})
    assert info.value.key == key and fragment in info.value.message


def test_button_on_the_spi_pins_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict({"leds": {"kind": "apa102"}, "button": {"pin": 11}})
    assert info.value.key == "button.pin" and "SCLK" in info.value.message
    assert config_from_dict({"leds": {"kind": "apa102"}}).button.pin == 17  # the HAT's button, by default


@given(st.integers(-1000, 1000), st.floats(-10, 10, allow_nan=False))
def test_pixel_settings_accepted_exactly_in_range(pixels: int, level: float) -> None:
    data = {"leds": {"kind": "apa102", "pixels": pixels, "brightness": level}}
    if 1 <= pixels <= 64 and 0.05 <= level <= 1.0:
        assert config_from_dict(data).leds.pixels == pixels
    else:
        with pytest.raises(ConfigError):
            config_from_dict(data)
