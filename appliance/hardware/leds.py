"""Status LEDs: one LED per state, exactly one animation at a time.

Patterns a learner can tell apart without a screen:
  idle: dim steady · connecting: blink 4/s · connected: steady · tutor speaking: slow pulse ·
  listening (hold-to-talk): fast blink · error: very fast blink · disconnected: all off.
Why gpiozero's own ``blink``/``pulse``: each runs on gpiozero's background thread and a new
``on``/``off``/``blink``/``pulse`` call cancels the previous one, so animations never stack.
"""

from __future__ import annotations

import logging
from enum import Enum

from gpiozero import PWMLED, RGBLED

from appliance.config import LedSettings
from appliance.core.state import State

log = logging.getLogger(__name__)

IDLE_LEVEL = 0.2


class Activity(Enum):
    """What happens inside a connected lesson (shown on the connected LED)."""

    NONE = "none"
    SPEAKING = "speaking"
    LISTENING = "listening"


Color = tuple[float, float, float]
OFF: Color = (0.0, 0.0, 0.0)
#: RGB colours: idle dim blue, connecting amber, connected green, listening cyan, error red.
COLORS: dict[str, Color] = {"idle": (0.0, 0.0, 0.2), "connecting": (1.0, 0.5, 0.0), "connected": (0.0, 1.0, 0.0),
                            "listening": (0.0, 1.0, 1.0), "error": (1.0, 0.0, 0.0)}


def make_status_leds(settings: LedSettings) -> StatusLeds | RgbStatusLed:
    """The status light the config describes."""
    return RgbStatusLed(settings) if settings.kind == "rgb" else StatusLeds(settings)


class RgbStatusLed:
    """One RGB LED showing every state by colour and pattern (same patterns as the single LEDs)."""

    def __init__(self, settings: LedSettings) -> None:
        self.led = RGBLED(settings.red, settings.green, settings.blue)
        self.state: State | None = None
        self.activity = Activity.NONE

    def pin_for(self, state: State) -> int | None:
        return None

    def show(self, state: State, activity: Activity = Activity.NONE) -> None:
        if state is not State.CONNECTED:
            activity = Activity.NONE
        if state is self.state and activity is self.activity:
            return
        self.state, self.activity = state, activity
        led = self.led
        if state is State.IDLE:
            led.color = COLORS["idle"]
        elif state is State.CONNECTING:
            led.blink(on_time=0.125, off_time=0.125, on_color=COLORS["connecting"], off_color=OFF)
        elif state is State.ERROR:
            led.blink(on_time=0.05, off_time=0.05, on_color=COLORS["error"], off_color=OFF)
        elif state is State.DISCONNECTED:
            led.off()
        elif activity is Activity.SPEAKING:
            led.pulse(fade_in_time=0.4, fade_out_time=0.4, on_color=COLORS["connected"], off_color=OFF)
        elif activity is Activity.LISTENING:
            led.blink(on_time=0.08, off_time=0.08, on_color=COLORS["listening"], off_color=OFF)
        else:
            led.color = COLORS["connected"]

    def close(self) -> None:
        self.led.close()


class StatusLeds:
    """Shows the kiosk state; the same state (and activity) again is a no-op."""

    def __init__(self, settings: LedSettings) -> None:
        pins = {
            State.IDLE: settings.idle,
            State.CONNECTING: settings.connecting,
            State.CONNECTED: settings.connected,
            State.ERROR: settings.error,
        }
        self._leds: dict[int, PWMLED] = {}
        self._state_pin: dict[State, int] = {}
        for state, pin in pins.items():
            if pin > 0:
                self._state_pin[state] = pin
                if pin not in self._leds:
                    self._leds[pin] = PWMLED(pin)
        self.state: State | None = None
        self.activity = Activity.NONE

    def pin_for(self, state: State) -> int | None:
        return self._state_pin.get(state)

    def show(self, state: State, activity: Activity = Activity.NONE) -> None:
        if state is not State.CONNECTED:
            activity = Activity.NONE
        if state is self.state and activity is self.activity:
            return
        self.state, self.activity = state, activity
        lit = self._state_pin.get(state)
        for pin, led in self._leds.items():
            if pin != lit:
                led.off()
        if lit is None:
            return
        led = self._leds[lit]
        if state is State.IDLE:
            led.value = IDLE_LEVEL
        elif state is State.CONNECTING:
            led.blink(on_time=0.125, off_time=0.125)
        elif state is State.ERROR:
            led.blink(on_time=0.05, off_time=0.05)
        elif activity is Activity.SPEAKING:
            led.pulse(fade_in_time=0.4, fade_out_time=0.4)
        elif activity is Activity.LISTENING:
            led.blink(on_time=0.08, off_time=0.08)
        else:
            led.on()

    def close(self) -> None:
        for led in self._leds.values():
            led.close()
