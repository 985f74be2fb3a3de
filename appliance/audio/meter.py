"""A level meter for the status light: the learner's voice while they talk, the tutor's while it talks.

A child with no screen must see that the kiosk hears them: while the learner talks the connected
light's brightness follows the microphone's level (what the call actually sends, so in hold-to-talk
only while the button is held, and not while the half-duplex gate has closed the microphone); while
the tutor talks it follows the level the speaker plays.

Where it runs, and why there: both audio paths already run on the event loop, once per 20 ms frame —
the microphone's track is pulled by aiortc's sender (``recv``), and the speaker pump measures each
tutor frame's level for its audibility (``SpeakerPump._update``). The meter is a tap on those two
places, and its per-frame work is one clock read and a comparison; only at most ``rate_hz`` times a
second does it do more: one RMS of a 20 ms microphone frame (the speaker's level is measured anyway)
and one call to ``show`` with the brightness. So the loop is handed at most 25 updates a second and
does no per-frame work beyond a float comparison. Why not a thread of its own (gpiozero's ``source``
thread, or one fed from PortAudio's callback): a thread waking 25 times a second costs more than the
updates themselves (a PWM duty write is ~1 µs on mock pins and one register or ioctl write on a Pi),
the microphone's level must be taken after the gate, which lives on the loop, and a light written from
two threads would race the state patterns, which are set on the loop. (A light whose write waits on a
bus, the APA102 pixels, hands the reading to its own drawing thread: ``appliance.hardware.pixels``.)
The throttle is on the wall clock, shared by both paths: the two together make ``rate_hz`` updates a
second at most on average, and never more than one extra in any one-second window (a slot's fencepost).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from appliance.common.level import rms_dbfs

METER_RATE_HZ = 25.0
"""Updates of the light per second at most: smooth to the eye, a fraction of the audio's 50 frames/s."""
FLOOR_DBFS = -50.0
"""At or below this level the meter reads 0 (room noise, a closed microphone)."""
CEILING_DBFS = -12.0
"""At or above this level the meter reads 1 (a child speaking close to the microphone; a loud tutor)."""
TUTOR_HOLD_S = 0.15
"""After the speaker's last audible frame, the microphone's level stays off the light this long (the
tutor's level owns the light while it talks, so the two never flicker against each other)."""


def brightness(level_dbfs: float, floor_dbfs: float = FLOOR_DBFS, ceiling_dbfs: float = CEILING_DBFS) -> float:
    """A level in dBFS as 0..1, linear in dB between the floor and the ceiling (how loudness is heard)."""
    if level_dbfs <= floor_dbfs:
        return 0.0
    if level_dbfs >= ceiling_dbfs:
        return 1.0
    return (level_dbfs - floor_dbfs) / (ceiling_dbfs - floor_dbfs)


class LevelMeter:
    """Turns the two audio paths' frames into at most ``rate_hz`` calls of ``show(brightness)``.

    ``heard`` is called with each frame the microphone's track sends, ``played`` with each level the
    speaker pump measured; both on the event loop. ``show`` is the light's ``level`` method.
    """

    def __init__(self, show: Callable[[float], None], rate_hz: float = METER_RATE_HZ,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not 0 < rate_hz <= METER_RATE_HZ:
            raise ValueError(f"rate_hz must be in (0, {METER_RATE_HZ:g}]")
        self._show = show
        self._period = 1.0 / rate_hz
        self._clock = clock
        self._next_at = float("-inf")
        self._tutor_until = float("-inf")
        self.updates = 0

    def heard(self, samples: np.ndarray) -> np.ndarray:
        """A frame the call sends (after the gate); returned as it is, so it can wrap a supplier."""
        now = self._clock()
        if now >= self._next_at and now >= self._tutor_until:
            self._update(brightness(rms_dbfs(samples)), now)
        return samples

    def played(self, level_dbfs: float, audible: bool) -> None:
        """The level of a frame the speaker plays, and whether the tutor is audible now."""
        now = self._clock()
        if audible:
            self._tutor_until = now + TUTOR_HOLD_S
            if now >= self._next_at:
                self._update(brightness(level_dbfs), now)

    def _update(self, value: float, now: float) -> None:
        # The next slot counts from this one, not from now: frames come every 20 ms, so slots of
        # 40 ms land on every second frame instead of drifting to every third.
        self._next_at = max(self._next_at + self._period, now + self._period / 2)
        self.updates += 1
        self._show(value)
