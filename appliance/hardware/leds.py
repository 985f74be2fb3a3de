"""Status LEDs: one pattern per state (and activity), exactly one animation at a time.

Patterns a learner can tell apart without a screen:
  idle: dim steady · connecting: blink 4/s · connected: steady · tutor speaking: slow pulse ·
  listening (hold-to-talk): fast blink · goodbye: as connected · call dropped, reconnecting: error LED
  blinking 2/s · error and sound device missing: error LED very fast blink · stopping: all off.
Why gpiozero's own ``blink``/``pulse``: each runs on gpiozero's background thread and a new
``on``/``off``/``blink``/``pulse`` call cancels the previous one, so animations never stack.
One table maps state and activity to a pattern; the single-colour LEDs, the RGB LED and the APA102
pixels of a ReSpeaker HAT (``appliance.hardware.pixels``) all play it.

The level meter (``[leds] level_meter``): while a lesson is connected the connected light is steady and
its brightness follows ``level(value)`` (0..1, from ``appliance.audio.meter.LevelMeter``, at most 25
times a second, on the event loop like ``show``): the learner's voice while they talk, the tutor's while
it talks, in place of the tutor's slow pulse and the hold-to-talk blink (the RGB LED keeps their colours).
It never goes dark during a lesson (``METER_BASE``), so a silent room still shows a connected kiosk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from gpiozero import PWMLED, RGBLED

from appliance.config import LedSettings
from appliance.core.ports import Activity
from appliance.core.state import State

if TYPE_CHECKING:
    from appliance.hardware.pixels import PixelStatusLight

log = logging.getLogger(__name__)

IDLE_LEVEL = 0.2
METER_BASE = 0.3
"""Brightness of the metered light at silence; full level is 1.0."""

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

    @property
    def metered(self) -> bool:
        """Whether the level meter drives it (the connected light, during a lesson)."""
        return self.led == "connected"


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


def make_status_leds(settings: LedSettings) -> StatusLeds | RgbStatusLed | PixelStatusLight:
    """The status light the config describes."""
    if settings.kind == "apa102":
        from appliance.hardware.pixels import PixelStatusLight

        return PixelStatusLight(settings)
    return RgbStatusLed(settings) if settings.kind == "rgb" else StatusLeds(settings)


def meter_value(level: float) -> float:
    """The brightness (0..1) that shows a meter level (0..1): never dark, full at full level."""
    return METER_BASE + (1.0 - METER_BASE) * min(1.0, max(0.0, level))


class _Shown:
    """Same pattern again is a no-op (a new gpiozero animation would restart the blink)."""

    def __init__(self, settings: LedSettings) -> None:
        self.state: State | None = None
        self.activity = Activity.NONE
        self._pattern: Pattern | None = None
        self.level_meter = settings.level_meter
        self._metering = False

    def level(self, value: float) -> None:
        """The level meter's reading (0..1): the connected light's brightness while a lesson is connected."""
        if self._metering and self._pattern is not None:
            self._show_level(self._pattern, meter_value(value))

    def _start_meter(self, pattern: Pattern) -> None:
        """The pattern becomes metered: steady at the silent brightness until the first reading."""
        self._show_level(pattern, METER_BASE)

    def _show_level(self, pattern: Pattern, brightness: float) -> None:
        raise NotImplementedError

    def show(self, state: State, activity: Activity = Activity.NONE) -> None:
        if (state, activity) not in PATTERNS:
            activity = Activity.NONE  # e.g. idle shows no activity
        pattern = pattern_for(state, activity)
        self.state, self.activity = state, activity
        if pattern == self._pattern:
            return
        self._pattern = pattern
        self._metering = self.level_meter and pattern.metered
        if self._metering:
            self._start_meter(pattern)
        else:
            self._play(pattern)

    def _play(self, pattern: Pattern) -> None:
        raise NotImplementedError


class RgbStatusLed(_Shown):
    """One RGB LED showing every state by colour and pattern (the same patterns as the single LEDs)."""

    def __init__(self, settings: LedSettings) -> None:
        super().__init__(settings)
        self.led = RGBLED(settings.red, settings.green, settings.blue)

    def _show_level(self, pattern: Pattern, brightness: float) -> None:
        red, green, blue = COLORS.get(pattern.color, OFF)
        self.led.color = (red * brightness, green * brightness, blue * brightness)

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
        super().__init__(settings)
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

    def _lit(self, pattern: Pattern) -> PWMLED | None:
        """The pattern's LED, every other one off."""
        lit = None if pattern.led is None else self._pin.get(pattern.led)
        for pin, led in self._leds.items():
            if pin != lit:
                led.off()
        return None if lit is None else self._leds[lit]

    def _start_meter(self, pattern: Pattern) -> None:
        self._lit(pattern)
        self._show_level(pattern, METER_BASE)

    def _show_level(self, pattern: Pattern, brightness: float) -> None:
        pin = None if pattern.led is None else self._pin.get(pattern.led)
        if pin is not None:
            self._leds[pin].value = brightness

    def _play(self, pattern: Pattern) -> None:
        led = self._lit(pattern)
        if led is None:
            return
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
