"""The APA102 pixels of a ReSpeaker 2-mic (3 pixels) or 4-mic (12 pixels) Pi HAT, as the status light.

The pixels hang off SPI 0, chip select 1 (MOSI GPIO10, SCLK GPIO11), as on both HATs; the 4-mic HAT
also needs GPIO5 high to power them (``[leds] power_pin = 5``). They are driven through gpiozero's SPI
interface (``Device.pin_factory.spi``): spidev or lgpio's SPI on a Pi, a bit-banged bus on gpiozero's
mock pins, where a ``MockSPIDevice`` on the same pins sees every bit (the tests decode them).

On the wire (``encode``): a start frame of 32 zero bits; per pixel ``0b111`` + a 5-bit global brightness,
then blue, green, red (a byte each); then an end frame of zero bytes, enough clock edges for the last
pixel's data to ripple through the chain (half a bit per pixel, at least 32). Every pixel shows the
state's colour from the same table as the RGB LED; brightness is the 5-bit field, capped by
``[leds] brightness``, so colours stay true while the level meter moves them.

One background thread draws every frame (see ``PixelStatusLight``): the event loop only posts the
pattern and the meter's latest reading, so it never waits on the bus and no two writers ever share it.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Sequence

from gpiozero import Device, DigitalOutputDevice

from appliance.config import LedSettings
from appliance.hardware.leds import COLORS, IDLE_LEVEL, METER_BASE, OFF, Color, Pattern, _Shown

log = logging.getLogger(__name__)

SPI_PORT = 0
SPI_DEVICE = 1
"""SPI 0, chip select 1: where both ReSpeaker HATs wire their pixels."""
FRAME_S = 0.04
"""A pulse's step (25 frames a second, as the level meter)."""
Pixel = tuple[int, int, int, int]
"""One pixel as sent: (5-bit brightness, red, green, blue)."""


def encode(pixels: Sequence[Pixel]) -> list[int]:
    """The bytes on the wire for these pixels (see the module's docstring)."""
    data = [0, 0, 0, 0]
    for level, red, green, blue in pixels:
        data += [0b1110_0000 | (level & 0b1_1111), blue & 0xFF, green & 0xFF, red & 0xFF]
    return data + [0] * max(4, (len(pixels) + 15) // 16)


def decode(data: Sequence[int], count: int) -> list[Pixel]:
    """The ``count`` pixels in one frame of bytes on the wire (what a chain of APA102s would show)."""
    if list(data[:4]) != [0, 0, 0, 0]:
        raise ValueError("an APA102 frame starts with 32 zero bits")
    pixels: list[Pixel] = []
    for i in range(count):
        header, blue, green, red = data[4 + 4 * i: 8 + 4 * i]
        if header >> 5 != 0b111:
            raise ValueError(f"pixel {i}: header {header:#04x} does not start with 0b111")
        pixels.append((header & 0b1_1111, red, green, blue))
    return pixels


def pixel(color: Color, brightness: float) -> Pixel:
    """A colour (0..1 per channel) at a brightness (0..1) as one pixel's 5-bit brightness and bytes."""
    level = round(31 * min(1.0, max(0.0, brightness)))
    red, green, blue = (round(255 * min(1.0, max(0.0, c))) for c in color)
    return (level, red, green, blue) if level else (0, 0, 0, 0)


class Apa102Strip:
    """A chain of APA102 pixels on an SPI bus; ``show`` sends one frame (thread-safe)."""

    def __init__(self, count: int, power_pin: int = 0) -> None:
        self.count = count
        self._lock = threading.Lock()
        self._power = DigitalOutputDevice(power_pin, initial_value=True) if power_pin > 0 else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            self._spi = Device.pin_factory.spi(port=SPI_PORT, device=SPI_DEVICE)
        for warning in caught:  # e.g. no spidev: gpiozero bit-bangs the same pins (slower, still right)
            log.info("APA102 pixels: %s", warning.message)

    def show(self, pixels: Sequence[Pixel]) -> None:
        data = encode(pixels)
        with self._lock:
            self._spi.transfer(data)

    def fill(self, color: Color, brightness: float) -> None:
        self.show([pixel(color, brightness)] * self.count)

    def close(self) -> None:
        with self._lock:
            try:
                self._spi.transfer(encode([(0, 0, 0, 0)] * self.count))  # dark when the kiosk stops
            finally:
                self._spi.close()
                if self._power is not None:
                    self._power.off()
                    self._power.close()


class PixelStatusLight(_Shown):
    """The status patterns (and the level meter) on a ReSpeaker HAT's pixels: all pixels in the state's
    colour, blinking and pulsing as the single LEDs do, brightness capped by ``[leds] brightness``.

    Why one thread draws everything: a frame on gpiozero's hardware SPI (500 kHz) takes 0.3 ms for 3 pixels
    and 0.9 ms for 12, a wait the event loop must not sit through 25 times a second (and on mock pins the
    bit-banged bus takes longer still). So ``show`` and ``level`` only post what to draw (the latest of each
    wins) and this thread, the bus's only writer, draws it in order, and steps blinks and pulses.
    """

    def __init__(self, settings: LedSettings) -> None:
        super().__init__(settings)
        self.cap = settings.brightness
        self.strip = Apa102Strip(settings.pixels, settings.power_pin)
        self._wake = threading.Condition()
        self._pattern_posted: Pattern | None = None
        self._level_posted: float | None = None
        self._closing = False
        self.frames_drawn = 0
        self._thread = threading.Thread(target=self._draw, name="pixels", daemon=True)
        self._thread.start()

    def pin_for(self, state: object) -> int | None:
        return None

    def _play(self, pattern: Pattern) -> None:
        self._post(pattern, None)

    def _start_meter(self, pattern: Pattern) -> None:
        self._post(pattern, METER_BASE)

    def _show_level(self, pattern: Pattern, brightness: float) -> None:
        self._post(None, brightness)

    def _post(self, pattern: Pattern | None, level: float | None) -> None:
        with self._wake:
            if pattern is not None:  # a new pattern, with the meter's resting level when it is metered
                self._pattern_posted = pattern
            self._level_posted = level  # a reading comes only while the pattern posted last is metered
            self._wake.notify()

    def _draw(self) -> None:
        """The drawing thread: the latest pattern and level posted, and the steps of a blink or pulse."""
        color: Color = OFF
        steps: list[tuple[float, float]] = []
        step, due = 0, 0.0
        while True:
            with self._wake:
                while not self._closing and self._pattern_posted is None and self._level_posted is None:
                    if steps and not self._wake.wait(max(0.0, due - time.monotonic())):
                        break  # the animation's next step is due
                    if not steps:
                        self._wake.wait()
                if self._closing:
                    return
                pattern, level = self._pattern_posted, self._level_posted
                self._pattern_posted = self._level_posted = None
            if pattern is not None:
                color = COLORS.get(pattern.color, OFF)
                steps, step = _steps(pattern) if level is None else [], 0
                if not steps and level is None:
                    level = 0.0 if pattern.led is None else IDLE_LEVEL if pattern.kind == "dim" else 1.0
            if level is not None and not steps:
                self._fill(color, level)
            elif steps and (pattern is not None or time.monotonic() >= due):
                brightness, hold = steps[step % len(steps)]
                self._fill(color, brightness)
                step, due = step + 1, time.monotonic() + hold

    def _fill(self, color: Color, brightness: float) -> None:
        self.strip.fill(color, self.cap * brightness)
        self.frames_drawn += 1

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout=2.0)
        self.strip.close()


def _steps(pattern: Pattern) -> list[tuple[float, float]]:
    """(brightness, seconds) of one cycle of a blink (on, off) or a pulse (fade in, fade out); [] if steady."""
    period = max(pattern.period_s, 0.01)
    if pattern.kind == "blink":
        return [(1.0, period), (0.0, period)]
    if pattern.kind == "pulse":
        n = max(1, round(period / FRAME_S))
        ramp = [i / n for i in range(n)]
        return [(b, period / n) for b in ramp + [1.0 - b for b in ramp]]
    return []
