"""The big button: gpiozero calls back on its own thread; presses are handed to the event loop.

The kiosk debounces itself (``bounce_ms``) on the loop side, because gpiozero's mock pins do not
simulate bounce and some pin factories ignore ``bounce_time``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gpiozero import Button

from appliance.config import ButtonSettings


class ButtonBridge:
    """Turns pin edges into ``on_press(monotonic_time)`` calls on the loop, debounced."""

    def __init__(self, settings: ButtonSettings, loop: asyncio.AbstractEventLoop,
                 on_press: Callable[[float], None]) -> None:
        self._loop = loop
        self._on_press = on_press
        self._bounce_s = settings.bounce_ms / 1000
        self._last_press = float("-inf")
        self.button = Button(settings.pin, pull_up=settings.pull_up)
        self.button.when_pressed = self._pressed_on_thread

    def _pressed_on_thread(self) -> None:
        # gpiozero thread: hand over, touch nothing else.
        self._loop.call_soon_threadsafe(self._pressed_on_loop, time.monotonic())

    def _pressed_on_loop(self, at: float) -> None:
        if at - self._last_press < self._bounce_s:
            return
        self._last_press = at
        self._on_press(at)

    def close(self) -> None:
        self.button.close()
