"""LEDs on gpiozero mock pins (the button pin: tests/test_button_leds.py)."""

from __future__ import annotations

import time

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from appliance.config import LedSettings
from appliance.core.state import State
from appliance.hardware.leds import StatusLeds


@pytest.fixture
def pins() -> MockFactory:
    factory = MockFactory(pin_class=MockPWMPin)
    Device.pin_factory = factory
    yield factory
    factory.reset()


def lit(factory: MockFactory, settings: LedSettings) -> dict[str, bool]:
    return {name: bool(factory.pin(getattr(settings, name)).state)
            for name in ("idle", "connecting", "connected", "error")}


def wait_for_toggles(pin, count: int, timeout: float = 5.0) -> list:
    deadline = time.monotonic() + timeout
    while len(pin.states) < count:
        assert time.monotonic() < deadline, f"only {len(pin.states)} pin changes"
        time.sleep(0.02)
    return list(pin.states)


def test_one_led_per_state_and_one_animation(pins: MockFactory) -> None:
    settings = LedSettings()
    leds = StatusLeds(settings)
    leds.show(State.IDLE)
    assert lit(pins, settings) == {"idle": True, "connecting": False, "connected": False, "error": False}
    leds.show(State.CONNECTED)
    assert lit(pins, settings) == {"idle": False, "connecting": False, "connected": True, "error": False}
    connecting = pins.pin(settings.connecting)
    connecting.clear_states()
    leds.show(State.CONNECTING)
    states = wait_for_toggles(connecting, 5)
    values = [s.state for s in states[1:5]]
    assert values in ([True, False, True, False], [False, True, False, True])
    gaps = [s.timestamp for s in states[2:5]]  # a mock pin records the time since the previous change
    assert all(0.08 < g < 0.4 for g in gaps), gaps  # 0.125 s on / 0.125 s off
    leds.show(State.ERROR)  # replaces the connecting animation
    assert not pins.pin(settings.connecting).state
    connecting.clear_states()
    error_pin = pins.pin(settings.error)
    error_pin.clear_states()
    wait_for_toggles(error_pin, 4)
    assert len(connecting.states) <= 1  # the old animation stopped
    leds.show(State.IDLE)
    assert lit(pins, settings)["idle"] and not lit(pins, settings)["error"]
    error_pin.clear_states()
    leds.show(State.DISCONNECTED)  # a dropped call being resumed: the error LED blinks, slower than an error
    assert not lit(pins, settings)["idle"]
    states = wait_for_toggles(error_pin, 4)
    assert all(0.15 < s.timestamp < 0.6 for s in states[2:4]), [s.timestamp for s in states]  # 0.25 s on/off
    leds.show(State.STOPPING)  # shutting down: every LED off
    assert not any(lit(pins, settings).values())
    leds.close()


def test_state_without_led_turns_all_off(pins: MockFactory) -> None:
    settings = LedSettings(idle=0)
    leds = StatusLeds(settings)
    leds.show(State.CONNECTED)
    leds.show(State.IDLE)
    assert not any(pins.pin(p).state for p in (23, 24, 25))
    leds.close()


def test_rgb_led_colours_and_patterns(pins: MockFactory) -> None:
    from appliance.hardware.leds import COLORS, Activity, RgbStatusLed, make_status_leds

    settings = LedSettings(kind="rgb", red=5, green=6, blue=13, level_meter=False)  # the meter: test_level_meter
    led = make_status_leds(settings)
    assert isinstance(led, RgbStatusLed)
    try:
        led.show(State.IDLE)
        assert led.led.color == COLORS["idle"]
        led.show(State.CONNECTED)
        assert led.led.color == COLORS["connected"]
        red = pins.pin(5)
        red.clear_states()
        led.show(State.ERROR)
        states = wait_for_toggles(red, 4)
        assert {round(s.state) for s in states[1:4]} == {0, 1}  # the red channel blinks
        led.show(State.CONNECTED, Activity.SPEAKING)
        green = pins.pin(6)
        green.clear_states()
        wait_for_toggles(green, 5)
        assert any(0 < s.state < 1 for s in green.states)  # a pulse fades
    finally:
        led.close()


def test_half_duplex_gate_tail() -> None:
    import numpy as np

    from appliance.audio.gate import HalfDuplexGate

    class Loud:
        sample_rate = 48000

        def read(self, n: int) -> np.ndarray:
            return np.full(n, 1000, dtype=np.int16)

    now = [100.0]
    gate = HalfDuplexGate(Loud(), tail_ms=300, clock=lambda: now[0])
    assert gate.read(10).any()
    gate.set_tutor_audible(True)
    assert not gate.read(10).any()
    gate.set_tutor_audible(False)
    now[0] += 0.29
    assert not gate.read(10).any()  # the room's echo tail
    now[0] += 0.02
    assert gate.read(10).any()
    full = HalfDuplexGate(Loud(), mode="full_duplex")
    full.set_tutor_audible(True)
    assert full.read(10).any()
