"""The level meter on the status light: the learner's voice through the real microphone track, the tutor's
through the real speaker pump, on gpiozero's mock pins (single LEDs and the RGB LED).

A tone with a known level envelope (ramps, a hold, a gap, bursts) goes through each path in real time;
the connected LED's duty cycle is read after every 20 ms frame and must follow the envelope (Pearson
correlation at least 0.8), with at most 25 updates of the light a second.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable

import av
import numpy as np
import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.audio.meter import CEILING_DBFS, FLOOR_DBFS, METER_RATE_HZ, LevelMeter, brightness
from appliance.audio.speaker import SpeakerPump
from appliance.audio.tracks import microphone_track
from appliance.audio.wav import NullSink, ScriptedMicrophone
from appliance.config import LedSettings, config_from_dict
from appliance.core.ports import Activity
from appliance.core.state import State
from appliance.daemon.assemble import level_meter
from appliance.hardware.leds import METER_BASE, make_status_leds
from tests.audio_helpers import envelope_db, enveloped_tone, pearson

RATE = 48000
FRAME = RATE // 50
SINGLE = LedSettings()
RGB = LedSettings(kind="rgb", red=5, green=6, blue=13)


@pytest.fixture
def pins() -> MockFactory:
    factory = MockFactory(pin_class=MockPWMPin)
    Device.pin_factory = factory
    yield factory
    factory.reset()


def expected(env_db: np.ndarray) -> np.ndarray:
    return np.array([brightness(v) for v in env_db])


def connected_duty(pins: MockFactory, settings: LedSettings) -> float:
    return float(pins.pin(settings.green if settings.kind == "rgb" else settings.connected).state)


# -- the meter alone -------------------------------------------------------------------------------


@given(st.floats(-130, 10), st.floats(-130, 10))
def test_brightness_is_monotonic_and_bounded(a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert 0.0 <= brightness(lo) <= brightness(hi) <= 1.0
    assert brightness(FLOOR_DBFS) == 0.0 and brightness(CEILING_DBFS) == 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0005, 0.06), st.booleans(), st.booleans()), min_size=1, max_size=600))
def test_never_more_than_25_updates_a_second(steps: list[tuple[float, bool, bool]]) -> None:
    """Frames from both paths, at any spacing (jitter, bursts): at most 25 updates a second on average, and
    never more than 26 in any one-second window (a slot's fencepost)."""
    now = [0.0]
    shown: list[float] = []
    meter = LevelMeter(lambda v: shown.append(now[0]), clock=lambda: now[0])
    loud = np.full(FRAME, 8000, np.int16)
    for gap, from_speaker, audible in steps:
        now[0] += gap
        if from_speaker:
            meter.played(-20.0, audible)
        else:
            meter.heard(loud)
    times = np.array(shown)
    for start in times:
        assert np.count_nonzero((times >= start) & (times < start + 1.0)) <= METER_RATE_HZ + 1
    if now[0] >= 1.0:
        assert len(shown) <= METER_RATE_HZ * now[0] + 1.5


def test_the_tutor_owns_the_light_while_it_talks() -> None:
    now = [0.0]
    shown: list[float] = []
    meter = LevelMeter(shown.append, clock=lambda: now[0])
    meter.played(CEILING_DBFS, audible=True)
    now[0] += 0.05
    meter.heard(np.zeros(FRAME, np.int16))  # the gated microphone's silence must not dim the tutor's level
    assert shown == [1.0]
    now[0] += 0.2  # the tutor has been quiet past the hold: the learner's side shows again
    meter.heard(np.zeros(FRAME, np.int16))
    assert shown == [1.0, 0.0]


def test_no_meter_when_the_config_turns_it_off(pins: MockFactory) -> None:
    leds = make_status_leds(SINGLE)
    try:
        assert level_meter(config_from_dict({}), leds) is not None
        assert level_meter(config_from_dict({"leds": {"level_meter": False}}), leds) is None
        assert level_meter(config_from_dict({}), object()) is None  # a light that cannot show a level
    finally:
        leds.close()


def test_meter_off_keeps_the_pulse_and_ignores_levels(pins: MockFactory) -> None:
    settings = LedSettings(level_meter=False)
    leds = make_status_leds(settings)
    try:
        leds.show(State.CONNECTED)
        assert connected_duty(pins, settings) == 1.0
        leds.level(0.0)
        assert connected_duty(pins, settings) == 1.0
    finally:
        leds.close()


@pytest.mark.parametrize("settings", [SINGLE, RGB], ids=["single", "rgb"])
def test_the_meter_drives_only_the_connected_light(pins: MockFactory, settings: LedSettings) -> None:
    leds = make_status_leds(settings)
    try:
        leds.show(State.IDLE)
        leds.level(1.0)  # idle is not metered
        idle = pins.pin(settings.blue if settings.kind == "rgb" else settings.idle).state
        assert idle == pytest.approx(0.2)
        leds.show(State.CONNECTED, Activity.SPEAKING)
        assert connected_duty(pins, settings) == pytest.approx(METER_BASE)
        leds.level(1.0)
        assert connected_duty(pins, settings) == pytest.approx(1.0)
        leds.show(State.ERROR)
        leds.level(1.0)
        assert connected_duty(pins, settings) == 0.0
    finally:
        leds.close()


# -- through the real audio paths, in real time -----------------------------------------------------


@pytest.mark.parametrize("settings", [SINGLE, RGB], ids=["single", "rgb"])
async def test_the_light_follows_the_learners_voice(pins: MockFactory, settings: LedSettings) -> None:
    """The microphone's own track (ready-encoded Opus) pulls a tone with a level envelope, through the
    meter as the kiosk wires it; the connected LED's duty follows the envelope."""
    leds = make_status_leds(settings)
    config = config_from_dict({"leds": {"kind": settings.kind, "red": settings.red, "green": settings.green,
                                        "blue": settings.blue}})
    meter = level_meter(config, leds)
    assert meter is not None
    mic = ScriptedMicrophone(sample_rate=RATE)
    await mic.start()
    env = envelope_db(3.0, -48.0, -14.0)
    mic.say(enveloped_tone(env), rate=RATE)
    track = microphone_track(lambda n: meter.heard(mic.read(n)), RATE)
    leds.show(State.CONNECTED)
    duty, writes = [], len(pins.pin(settings.green if settings.kind == "rgb" else settings.connected).states)
    started = time.monotonic()
    try:
        for _ in range(env.size):
            await track.recv()
            duty.append(connected_duty(pins, settings))
    finally:
        track.stop()
        leds.close()
    elapsed = time.monotonic() - started
    r = pearson(np.array(duty), expected(env))
    assert r >= 0.8, r
    assert meter.updates <= METER_RATE_HZ * elapsed + 1.5
    assert min(duty) == pytest.approx(METER_BASE, abs=0.02) and max(duty) > 0.9
    pin = pins.pin(settings.green if settings.kind == "rgb" else settings.connected)
    assert len(pin.states) - writes <= METER_RATE_HZ * elapsed + 2


class EnvelopeTrack:
    """A remote track as aiortc hands it over (48 kHz stereo s16), one frame per 20 ms of wall clock,
    noting the light's duty as each frame is asked for (the light as the previous frame left it)."""

    def __init__(self, samples: np.ndarray, read: Callable[[], float]) -> None:
        self.samples = samples
        self.read = read
        self.duty: list[float] = []
        self.frame = 0
        self.start = 0.0

    async def recv(self) -> av.AudioFrame:
        from aiortc.mediastreams import MediaStreamError

        if self.frame:
            self.duty.append(self.read())
        if self.frame * FRAME >= self.samples.size:
            raise MediaStreamError
        if not self.start:
            self.start = time.monotonic()
        due = self.start + self.frame * 0.02
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        chunk = self.samples[self.frame * FRAME:(self.frame + 1) * FRAME]
        stereo = np.repeat(chunk, 2).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = self.frame * FRAME
        frame.time_base = fractions.Fraction(1, RATE)
        self.frame += 1
        return frame


@pytest.mark.parametrize("settings", [SINGLE, RGB], ids=["single", "rgb"])
async def test_the_light_follows_the_tutors_voice(pins: MockFactory, settings: LedSettings) -> None:
    """The speaker pump plays a tone with a level envelope (the tutor audible throughout but for a gap);
    the connected LED's duty follows it."""
    leds = make_status_leds(settings)
    meter = level_meter(config_from_dict({"leds": {"kind": settings.kind, "red": settings.red,
                                                   "green": settings.green, "blue": settings.blue}}), leds)
    pump = SpeakerPump(NullSink(sample_rate=RATE), meter=meter)
    env = envelope_db(3.0, -42.0, -14.0)
    track = EnvelopeTrack(enveloped_tone(env), lambda: connected_duty(pins, settings))
    leds.show(State.CONNECTED, Activity.SPEAKING)
    started = time.monotonic()
    try:
        await pump.run(track)  # type: ignore[arg-type]
    finally:
        leds.close()
    elapsed = time.monotonic() - started
    r = pearson(np.array(track.duty), expected(env))
    assert r >= 0.8, r
    assert meter is not None and meter.updates <= METER_RATE_HZ * elapsed + 1.5
    assert max(track.duty) > 0.9
