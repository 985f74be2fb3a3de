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

Blinks and pulses run on one background thread (as gpiozero's own ``blink``/``pulse`` do), which a new
pattern stops before it draws; the level meter's readings are drawn on the event loop, only while the
pattern is metered, so no two writers ever share the bus.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Sequence

from gpiozero import Device, DigitalOutputDevice

from appliance.config import LedSettings
from appliance.hardware.leds import COLORS, IDLE_LEVEL, OFF, Color, Pattern, _Shown

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
    colour, blinking and pulsing as the single LEDs do, brightness capped by ``[leds] brightness``."""

    def __init__(self, settings: LedSettings) -> None:
        super().__init__(settings)
        self.cap = settings.brightness
        self.strip = Apa102Strip(settings.pixels, settings.power_pin)
        self._animation: threading.Thread | None = None
        self._stop = threading.Event()

    def pin_for(self, state: object) -> int | None:
        return None

    def _show_level(self, pattern: Pattern, brightness: float) -> None:
        self.strip.fill(COLORS.get(pattern.color, OFF), self.cap * brightness)

    def _start_meter(self, pattern: Pattern) -> None:
        self._stop_animation()
        super()._start_meter(pattern)

    def _play(self, pattern: Pattern) -> None:
        self._stop_animation()
        color = COLORS.get(pattern.color, OFF)
        if pattern.led is None:
            self.strip.fill(OFF, 0.0)
        elif pattern.kind in ("blink", "pulse"):
            self._stop = threading.Event()
            self._animation = threading.Thread(target=self._animate, args=(pattern, color, self._stop),
                                               name="pixels", daemon=True)
            self._animation.start()
        else:
            self.strip.fill(color, self.cap * (IDLE_LEVEL if pattern.kind == "dim" else 1.0))

    def _animate(self, pattern: Pattern, color: Color, stop: threading.Event) -> None:
        """Blink (on, off, each ``period_s``) or pulse (fade in and out over ``period_s`` each) until stopped."""
        period = max(pattern.period_s, 0.01)
        if pattern.kind == "blink":
            steps: list[tuple[float, float]] = [(1.0, period), (0.0, period)]
        else:
            n = max(1, round(period / FRAME_S))
            ramp = [i / n for i in range(n)]
            steps = [(b, period / n) for b in ramp + [1.0 - b for b in ramp]]
        while not stop.is_set():
            for brightness, hold in steps:
                if stop.is_set():
                    return
                self.strip.fill(color, self.cap * brightness)
                if stop.wait(hold):
                    return

    def _stop_animation(self) -> None:
        if self._animation is not None:
            self._stop.set()
            self._animation.join(timeout=1.0)
            self._animation = None

    def close(self) -> None:
        self._stop_animation()
        self.strip.close()
