"""Status LEDs: one pattern per state (and activity), exactly one animation at a time.

Patterns a learner can tell apart without a screen:
  idle: dim steady · connecting: blink 4/s · connected: steady · tutor speaking: slow pulse ·
  listening (hold-to-talk): fast blink · goodbye: as connected · call dropped, reconnecting: error LED
  blinking 2/s · error and sound device missing: error LED very fast blink · stopping: all off.
Why gpiozero's own ``blink``/``pulse``: each runs on gpiozero's background thread and a new
``on``/``off``/``blink``/``pulse`` call cancels the previous one, so animations never stack.
One table maps state and activity to a pattern; the single-colour LEDs and the RGB LED both play it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from gpiozero import PWMLED, RGBLED

from appliance.config import LedSettings
from appliance.core.ports import Activity
from appliance.core.state import State

log = logging.getLogger(__name__)

IDLE_LEVEL = 0.2

Color = tuple[float, float, float]
OFF: Color = (0.0, 0.0, 0.0)
#: RGB colours: idle dim blue, connecting amber, connected green, listening cyan, error red.
COLORS: dict[str, Color] = {"idle": (0.0, 0.0, 0.2), "connecting": (1.0, 0.5, 0.0), "connected": (0.0, 1.0, 0.0),
                            "listening": (0.0, 1.0, 1.0), "error": (1.0, 0.0, 0.0)}
Led = Literal["idle", "connecting", "connected", "error"]


@dataclass(frozen=True)
class Pattern:
    led: Led | None
    """Which of the single-colour LEDs shows it (None: all off)."""
    color: str = ""
    """Its colour on an RGB LED (a key of COLORS)."""
    kind: Literal["steady", "dim", "blink", "pulse"] = "steady"
    period_s: float = 0.0
    """On time (= off time) of a blink, fade time of a pulse."""


OFF_PATTERN = Pattern(None)
PATTERNS: dict[tuple[State, Activity], Pattern] = {
    (State.IDLE, Activity.NONE): Pattern("idle", "idle", "dim"),
    (State.CONNECTING, Activity.NONE): Pattern("connecting", "connecting", "blink", 0.125),
    (State.CONNECTED, Activity.NONE): Pattern("connected", "connected"),
    (State.CONNECTED, Activity.SPEAKING): Pattern("connected", "connected", "pulse", 0.4),
    (State.CONNECTED, Activity.LISTENING): Pattern("connected", "listening", "blink", 0.08),
    (State.ENDING, Activity.NONE): Pattern("connected", "connected"),
    (State.ENDING, Activity.SPEAKING): Pattern("connected", "connected", "pulse", 0.4),
    (State.ENDING, Activity.LISTENING): Pattern("connected", "listening", "blink", 0.08),
    (State.DISCONNECTED, Activity.NONE): Pattern("error", "error", "blink", 0.25),
    (State.ERROR, Activity.NONE): Pattern("error", "error", "blink", 0.05),
    (State.DEVICE_MISSING, Activity.NONE): Pattern("error", "error", "blink", 0.05),
    (State.STOPPING, Activity.NONE): OFF_PATTERN,
}
"""State and activity → what the LEDs show (an activity a state does not show falls back to NONE)."""


def pattern_for(state: State, activity: Activity = Activity.NONE) -> Pattern:
    return PATTERNS.get((state, activity)) or PATTERNS.get((state, Activity.NONE), OFF_PATTERN)


def make_status_leds(settings: LedSettings) -> StatusLeds | RgbStatusLed:
    """The status light the config describes."""
    return RgbStatusLed(settings) if settings.kind == "rgb" else StatusLeds(settings)


class _Shown:
    """Same pattern again is a no-op (a new gpiozero animation would restart the blink)."""

    def __init__(self) -> None:
        self.state: State | None = None
        self.activity = Activity.NONE
        self._pattern: Pattern | None = None

    def show(self, state: State, activity: Activity = Activity.NONE) -> None:
        if (state, activity) not in PATTERNS:
            activity = Activity.NONE  # e.g. idle shows no activity
        pattern = pattern_for(state, activity)
        self.state, self.activity = state, activity
        if pattern == self._pattern:
            return
        self._pattern = pattern
        self._play(pattern)

    def _play(self, pattern: Pattern) -> None:
        raise NotImplementedError


class RgbStatusLed(_Shown):
    """One RGB LED showing every state by colour and pattern (the same patterns as the single LEDs)."""

    def __init__(self, settings: LedSettings) -> None:
        super().__init__()
        self.led = RGBLED(settings.red, settings.green, settings.blue)

    def pin_for(self, state: State) -> int | None:
        return None

    def _play(self, pattern: Pattern) -> None:
        led, color = self.led, COLORS.get(pattern.color, OFF)
        if pattern.led is None:
            led.off()
        elif pattern.kind == "blink":
            led.blink(on_time=pattern.period_s, off_time=pattern.period_s, on_color=color, off_color=OFF)
        elif pattern.kind == "pulse":
            led.pulse(fade_in_time=pattern.period_s, fade_out_time=pattern.period_s, on_color=color, off_color=OFF)
        else:
            led.color = color

    def close(self) -> None:
        self.led.close()


class StatusLeds(_Shown):
    """One single-colour LED per state (pins from the config; 0 = not fitted)."""

    def __init__(self, settings: LedSettings) -> None:
        super().__init__()
        pins: dict[Led, int] = {"idle": settings.idle, "connecting": settings.connecting,
                                "connected": settings.connected, "error": settings.error}
        self._leds: dict[int, PWMLED] = {}
        self._pin: dict[Led, int] = {}
        for name, pin in pins.items():
            if pin > 0:
                self._pin[name] = pin
                if pin not in self._leds:
                    self._leds[pin] = PWMLED(pin)

    def pin_for(self, state: State) -> int | None:
        led = pattern_for(state).led
        return None if led is None else self._pin.get(led)

    def _play(self, pattern: Pattern) -> None:
        lit = None if pattern.led is None else self._pin.get(pattern.led)
        for pin, led in self._leds.items():
            if pin != lit:
                led.off()
        if lit is None:
            return
        led = self._leds[lit]
        if pattern.kind == "dim":
            led.value = IDLE_LEVEL
        elif pattern.kind == "blink":
            led.blink(on_time=pattern.period_s, off_time=pattern.period_s)
        elif pattern.kind == "pulse":
            led.pulse(fade_in_time=pattern.period_s, fade_out_time=pattern.period_s)
        else:
            led.on()

    def close(self) -> None:
        for led in self._leds.values():
            led.close()
