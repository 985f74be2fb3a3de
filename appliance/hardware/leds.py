"""Status LEDs: one LED per state, exactly one animation at a time.

Why gpiozero's own ``blink``: it runs its animation on gpiozero's background thread and a new
``on``/``off``/``blink`` call cancels the previous one, so setting a state never stacks animations.
"""

from __future__ import annotations

import logging

from gpiozero import LED

from appliance.config import LedSettings
from appliance.state import State

log = logging.getLogger(__name__)

#: (on_time, off_time) per blinking state; None = steady on.
PATTERNS: dict[State, tuple[float, float] | None] = {
    State.IDLE: None,
    State.CONNECTING: (0.25, 0.25),
    State.CONNECTED: None,
    State.ERROR: (0.1, 0.1),
    State.DISCONNECTED: (0.5, 0.5),
}


class StatusLeds:
    """Shows the kiosk state; the same state again is a no-op."""

    def __init__(self, settings: LedSettings) -> None:
        pins = {
            State.IDLE: settings.idle,
            State.CONNECTING: settings.connecting,
            State.CONNECTED: settings.connected,
            State.ERROR: settings.error,
            # A dropped call shows on the error LED with a slower blink.
            State.DISCONNECTED: settings.error,
        }
        self._leds: dict[int, LED] = {}
        self._state_pin: dict[State, int] = {}
        for state, pin in pins.items():
            if pin > 0:
                self._state_pin[state] = pin
                if pin not in self._leds:
                    self._leds[pin] = LED(pin)
        self.state: State | None = None

    def show(self, state: State) -> None:
        if state is self.state:
            return
        self.state = state
        lit = self._state_pin.get(state)
        for pin, led in self._leds.items():
            if pin != lit:
                led.off()
        if lit is None:
            return
        pattern = PATTERNS[state]
        if pattern is None:
            self._leds[lit].on()
        else:
            self._leds[lit].blink(on_time=pattern[0], off_time=pattern[1], background=True)

    def close(self) -> None:
        for led in self._leds.values():
            led.close()
