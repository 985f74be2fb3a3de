"""The big button: gpiozero calls back on its own thread; edges are handed to the event loop.

The kiosk debounces itself (``bounce_ms``) on the loop side, because gpiozero's mock pins do not
simulate bounce and some pin factories ignore ``bounce_time``. A release is only delivered for a
press that was delivered, so a bounced edge can never produce an unmatched release.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gpiozero import Button

from appliance.config import ButtonSettings


class ButtonBridge:
    """Turns pin edges into ``on_press(t)`` / ``on_release(t)`` calls on the loop, debounced."""

    def __init__(self, settings: ButtonSettings, loop: asyncio.AbstractEventLoop,
                 on_press: Callable[[float], None], on_release: Callable[[float], None] | None = None) -> None:
        self._loop = loop
        self._on_press = on_press
        self._on_release = on_release
        self._bounce_s = settings.bounce_ms / 1000
        self._last_press = float("-inf")
        self._last_release = float("-inf")
        self._down = False
        self._pending_release: asyncio.TimerHandle | None = None
        self.button = Button(settings.pin, pull_up=settings.pull_up)
        self.button.when_pressed = self._pressed_on_thread
        self.button.when_released = self._released_on_thread

    def _pressed_on_thread(self) -> None:
        # gpiozero thread: hand over, touch nothing else.
        self._loop.call_soon_threadsafe(self._pressed_on_loop, time.monotonic())

    def _released_on_thread(self) -> None:
        self._loop.call_soon_threadsafe(self._released_on_loop, time.monotonic())

    def _pressed_on_loop(self, at: float) -> None:
        if self._down or at - self._last_release < self._bounce_s:
            return  # still down, or contact bounce right after a release
        self._down = True
        self._last_press = at
        self._on_press(at)

    def _released_on_loop(self, at: float) -> None:
        if not self._down:
            return
        early = self._bounce_s - (at - self._last_press)
        if early > 0:
            # Possibly bounce: decide once the contact has settled, by reading the pin.
            self._pending_release = self._loop.call_later(early, self._confirm_release)
            return
        self._deliver_release(at)

    def _confirm_release(self) -> None:
        self._pending_release = None
        if self._down and not self.button.is_pressed:
            self._deliver_release(time.monotonic())

    def _deliver_release(self, at: float) -> None:
        self._down = False
        self._last_release = at
        if self._on_release is not None:
            self._on_release(at)

    def close(self) -> None:
        if self._pending_release is not None:
            self._pending_release.cancel()
        self.button.close()
