"""The button and the status LEDs as a learner meets them: the button pin is driven on gpiozero's mock
pins through the same wiring `stella-kiosk run` uses (ButtonBridge → Kiosk), and the LED pins are
recorded with timestamps while a real lesson runs against the simulator over loopback WebRTC."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from appliance.call.webrtc import RealtimeCall
from appliance.config import ButtonSettings, LedSettings
from appliance.core.state import State
from appliance.hardware.button import ButtonBridge
from appliance.store.sessions import SessionStore
from tests.harness import Stack, lesson_stack, tutor_quiet_after

PINS = LedSettings()  # idle 22, connecting 23, connected 24, error 25
BUTTON = ButtonSettings().pin


async def handed_over() -> None:
    """Return once every callback a pin edge handed to the loop so far has run: the bridge queues with
    call_soon_threadsafe, which runs callbacks in order, so a marker queued after them runs after them."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon_threadsafe(done.set_result, None)
    await done


async def press(stack: Stack) -> None:
    """A finger's press. A press within the debounce window after a release is contact bounce by
    definition (the bridge drops it), and no finger is that fast: wait the window out first."""
    since_release = time.monotonic() - stack.released_at
    bounce_s = ButtonSettings().bounce_ms / 1000
    if since_release < bounce_s:
        await asyncio.sleep(bounce_s - since_release + 0.005)  # the finger's own timing, not a wait for the kiosk
    stack.pins.pin(BUTTON).drive_low()  # the button pulls the pin to ground
    await handed_over()


async def release(stack: Stack) -> None:
    stack.pins.pin(BUTTON).drive_high()
    stack.released_at = time.monotonic()
    await handed_over()


TAP_S = 0.08
"""A finger's tap: longer than the 50 ms debounce window, so its release counts at once."""


async def tap(stack: Stack) -> None:
    await press(stack)
    await asyncio.sleep(TAP_S)  # the finger is down: holding IS the behaviour
    await release(stack)


def client_events(tmp_path: Path) -> list[str]:
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    return [e["event"]["type"] for e in map(json.loads, lines) if e["direction"] == "client"]


# -- the button pin -----------------------------------------------------------------------------


async def test_button_pin_edges_are_debounced_on_the_loop() -> None:
    """Contact bounce on the pin is one press and one release; a press after the bounce window counts;
    an edge right after a release is bounce, not a press. Mutation seen failing: no debounce window."""
    factory = MockFactory(pin_class=MockPWMPin)
    Device.pin_factory = factory
    presses: list[float] = []
    releases: list[float] = []
    released = asyncio.Event()

    def on_release(at: float) -> None:
        releases.append(at)
        released.set()

    bridge = ButtonBridge(ButtonSettings(pin=BUTTON, bounce_ms=200), asyncio.get_running_loop(), presses.append,
                          on_release)
    pin = factory.pin(BUTTON)
    try:
        for level in ("low", "high", "low", "high"):  # one tap with bounce: microseconds apart
            getattr(pin, f"drive_{level}")()
        await handed_over()
        assert len(presses) == 1
        await asyncio.wait_for(released.wait(), 5)  # confirmed once the contact settled (by reading the pin)
        assert len(releases) == 1 and releases[0] - presses[0] >= 0.19
        # A firm press once the window has passed (the wait IS the behaviour: the window is 200 ms).
        await asyncio.sleep(0.25)
        pin.drive_low()
        await handed_over()
        assert len(presses) == 2
        await asyncio.sleep(0.25)  # held past the window: the release is delivered at once
        released.clear()
        pin.drive_high()
        await handed_over()
        assert len(releases) == 2
        pin.drive_low()  # bounce right after that release
        await handed_over()
        assert len(presses) == 2
    finally:
        bridge.close()
        factory.reset()


async def test_pin_presses_start_and_end_a_lesson_in_toggle_mode(tmp_path: Path) -> None:
    """Press to start, press again to end, on the pin."""
    async with lesson_stack(tmp_path) as stack, stack.kiosk(hardware=True) as (_kiosk, rec, _mic):
        await tap(stack)
        await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
        await tap(stack)
        await rec.until(lambda: bool(rec.saved), what="saved")
    assert rec.saved[0][0]["end_reason"] == "button"


async def test_long_press_in_toggle_mode_interrupts_then_ends(tmp_path: Path) -> None:
    """In toggle mode a press while the tutor speaks only interrupts it; held for long_press_s it ends
    the lesson. Mutation seen failing: long presses ignored outside hold mode."""
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(button={"long_press_s": 0.8})
        async with stack.kiosk(config, hardware=True) as (kiosk, rec, _mic):
            await tap(stack)
            await rec.until(lambda: rec.audible[:1] == [True], what="greeting audible")
            await press(stack)  # and keep it down
            pressed_at = time.monotonic()
            await rec.until(lambda: rec.audible[-1] is False, what="tutor interrupted")
            assert kiosk.state is State.CONNECTED and not rec.saved  # interrupted, not ended
            await rec.until(lambda: bool(rec.saved), what="saved after the long press")
            held_s = time.monotonic() - pressed_at
            await release(stack)
    assert rec.saved[0][0]["end_reason"] == "button"
    assert held_s >= 0.8
    assert "conversation.item.truncate" in client_events(tmp_path)


async def test_press_in_hold_mode_interrupts_the_tutor(tmp_path: Path) -> None:
    """In hold mode pressing while the tutor speaks cuts it off and opens the learner's turn; a short
    hold is no turn and does not end the lesson. Mutation seen failing: no barge-in in hold mode."""
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(button={"mode": "hold", "long_press_s": 3.0})
        async with stack.kiosk(config, hardware=True) as (kiosk, rec, _mic):
            await tap(stack)
            await rec.until(lambda: rec.audible[:1] == [True], what="greeting audible")
            await press(stack)
            await rec.until(lambda: rec.audible[-1] is False, what="tutor interrupted")
            await release(stack)
            types = client_events(tmp_path)
            assert "output_audio_buffer.clear" in types and "conversation.item.truncate" in types
            assert kiosk.state is State.CONNECTED and not rec.saved
            kiosk.request_stop()
            await rec.until(lambda: bool(rec.saved), what="saved")
    assert rec.saved[0][0]["end_reason"] == "stop_command"


class SlowDiskStore(SessionStore):
    """A store whose first final save waits until the test lets it go (a slow SD card)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saving = threading.Event()
        self.proceed = threading.Event()

    def save(self, record: dict[str, Any]) -> None:
        if not self.saving.is_set():
            self.saving.set()
            assert self.proceed.wait(8), "the test never let the save finish"
        super().save(record)


async def test_press_during_a_save_starts_the_next_lesson_after_it(tmp_path: Path) -> None:
    """A press while the finished lesson is still being written is not lost: the next lesson starts
    once the save is done (and not before). Mutation seen failing: presses dropped while saving."""
    async with lesson_stack(tmp_path) as stack:
        config = stack.config()
        store = SlowDiskStore(config.kiosk.state_dir)
        async with stack.kiosk(config, hardware=True, store=store) as (kiosk, rec, _mic):
            await tap(stack)
            await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
            await tap(stack)  # ends the lesson: the save starts and hangs on the slow disk
            assert await asyncio.to_thread(store.saving.wait, 10), (rec.states, rec.saved, kiosk.state)
            await asyncio.sleep(TAP_S)  # a real second tap comes after the debounce window
            await tap(stack)  # the learner wants another lesson while the first is being written
            assert rec.saved == [] and rec.states.count(State.CONNECTING) == 1
            store.proceed.set()
            await rec.until(lambda: bool(rec.saved), what="first lesson saved")
            await rec.until(lambda: rec.states.count(State.CONNECTED) == 2, what="next lesson connected")
            first_saved = rec.saved[0][0]["end_reason"]
    assert first_saved == "button"


# -- the LED pins during a real lesson ------------------------------------------------------------


@dataclass
class Trace:
    """One LED pin's changes as (monotonic time, value)."""

    changes: list[tuple[float, float]]

    def between(self, start: float, end: float) -> list[tuple[float, float]]:
        return [(t, v) for t, v in self.changes if start <= t <= end]

    def value_at(self, at: float) -> float:
        value = self.changes[0][1]
        for t, v in self.changes:
            if t > at:
                break
            value = v
        return value


class PinTape:
    """Records every LED pin of the mock factory from now on, with absolute times."""

    def __init__(self, pins: MockFactory) -> None:
        self.pins = pins
        self.started = {}
        for number in (PINS.idle, PINS.connecting, PINS.connected, PINS.error):
            pin = pins.pin(number)
            pin.clear_states()  # the pin now counts its changes from this instant
            self.started[number] = time.monotonic()

    def trace(self, number: int) -> Trace:
        at = self.started[number]
        changes = []
        for state in list(self.pins.pin(number).states):
            at += state.timestamp  # a mock pin stores the time since its previous change
            changes.append((at, float(state.state)))
        return Trace(changes)


def when(rec: Any, what: State | str, nth: int = 1) -> float:
    times = [t for t, event in rec.timeline if event == what]
    assert len(times) >= nth, (what, rec.timeline)
    return times[nth - 1]


def blink_intervals(changes: list[tuple[float, float]]) -> list[float]:
    """Durations between full on/off changes (0 ↔ 1) of a blinking pin."""
    edges = [t for (t, v), (_, prev) in zip(changes[1:], changes, strict=False) if v != prev and v in (0.0, 1.0)]
    return [b - a for a, b in itertools.pairwise(edges)]


class SlowNetworkCall(RealtimeCall):
    """A real call whose offer leaves a second late, as on a slow school network: the kiosk stays in
    `connecting` long enough to see its LED's rate."""

    async def open(self, timeout_s: float) -> None:
        await asyncio.sleep(1.0)  # the slow network under test
        await super().open(timeout_s)


async def test_leds_follow_a_real_lesson(tmp_path: Path) -> None:
    """README's LED table on the pins during a real loopback lesson, level meter off: idle dim; connecting
    blinks fast (about 4 times a second); connected steady, pulsing slowly while the tutor speaks; idle again.
    Mutations seen failing: connecting steady instead of blinking; no pulse while the tutor speaks."""
    async with lesson_stack(tmp_path) as stack:  # noqa: SIM117 - the kiosk's config comes from the stack
        async with stack.kiosk(stack.config(companion={"prefetch": False}, leds={"level_meter": False}),
                               hardware=True, call_factory=SlowNetworkCall) as (kiosk, rec, _mic):
            assert stack.pins is not None
            tape = PinTape(stack.pins)
            assert tape.trace(PINS.idle).changes[-1][1] == 0.2  # ready: idle LED dim
            await tap(stack)
            await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
            # Connected with the tutor quiet: steady on for the whole observation window.
            quiet_from = time.monotonic()
            await asyncio.sleep(0.6)  # observing that nothing changes IS the check
            quiet_to = time.monotonic()
            await tap(stack)
            await rec.until(lambda: bool(rec.saved) and kiosk.state is State.IDLE, what="saved")
            ended = time.monotonic()
    connecting_at, connected_at = when(rec, State.CONNECTING), when(rec, State.CONNECTED)
    speaking_at, quiet_at = when(rec, "audible"), when(rec, "quiet")
    idle, blinking, steady = tape.trace(PINS.idle), tape.trace(PINS.connecting), tape.trace(PINS.connected)

    # Connecting: the connecting LED alone, blinking 0.125 s on / 0.125 s off.
    # (The last change is the state change cutting a blink short: not part of the rate.)
    intervals = blink_intervals(blinking.between(connecting_at, connected_at))[:-1]
    assert len(intervals) >= 4, blinking.changes
    assert all(0.08 <= i <= 0.25 for i in intervals), [round(i, 3) for i in intervals]
    assert idle.value_at(connecting_at + 0.05) == 0.0
    # Tutor speaking: the connected LED pulses (fades through in-between levels, ~0.8 s a cycle).
    speaking = steady.between(speaking_at, quiet_at)
    assert any(0.0 < v < 1.0 for _, v in speaking), speaking[:10]
    peaks = [t for (t, v), (_, nxt) in itertools.pairwise(speaking) if v == 1.0 and nxt < 1.0]
    if len(peaks) >= 2:
        assert all(0.6 <= b - a <= 1.1 for a, b in itertools.pairwise(peaks)), peaks
    # Connected, tutor quiet: steady on, nothing else lit.
    assert steady.value_at(quiet_from) == 1.0 and steady.between(quiet_from, quiet_to) == [], steady.changes[-5:]
    assert blinking.value_at(quiet_from) == 0.0 and idle.value_at(quiet_from) == 0.0
    # Lesson over: back to the dim idle LED, the connected one off.
    assert idle.value_at(ended) == 0.2 and steady.value_at(ended) == 0.0


async def test_error_led_flickers_then_idle_again(tmp_path: Path) -> None:
    """Cannot reach the tutor: the error LED flickers (0.05 s on / off), then the idle LED is back."""
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(companion={"url": "http://127.0.0.1:9", "timeout_s": 1.0, "prefetch": False})
        async with stack.kiosk(config, hardware=True) as (_kiosk, rec, _mic):
            tape = PinTape(stack.pins)
            await tap(stack)
            await rec.until(lambda: State.ERROR in rec.states, what="error shown")
            await rec.until(lambda: rec.states[-1] is State.IDLE, what="idle again")
            back = time.monotonic()
    error_at, idle_at = when(rec, State.ERROR), when(rec, State.IDLE, nth=rec.states.count(State.IDLE))
    error = tape.trace(PINS.error)
    intervals = blink_intervals(error.between(error_at, idle_at))[:-1]
    assert len(intervals) >= 6, error.changes[:12]
    assert all(0.02 <= i <= 0.15 for i in intervals), intervals
    assert error.value_at(back) == 0.0 and tape.trace(PINS.idle).value_at(back) == 0.2


async def test_led_blinks_fast_while_held_to_talk(tmp_path: Path) -> None:
    """Hold mode, level meter off: while the button is held the connected LED blinks fast (0.08 s); released,
    it stops."""
    async with lesson_stack(tmp_path) as stack:
        config = stack.config(button={"mode": "hold", "long_press_s": 10.0}, leds={"level_meter": False})
        async with stack.kiosk(config, hardware=True) as (kiosk, rec, _mic):
            await tap(stack)
            await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
            tape = PinTape(stack.pins)
            held_at = time.monotonic()
            await press(stack)
            await asyncio.sleep(0.8)  # holding the button to talk IS the behaviour under test
            await release(stack)
            released_at = time.monotonic()
            await asyncio.sleep(0.3)  # and the light after the release (a steady light has no event to await)
            after = time.monotonic()
            kiosk.request_stop()
            await rec.until(lambda: bool(rec.saved), what="saved")
    led = tape.trace(PINS.connected)
    intervals = blink_intervals(led.between(held_at, released_at))[1:-1]  # whole blinks only
    assert len(intervals) >= 5 and all(0.04 <= i <= 0.16 for i in intervals), intervals
    # Released: the fast blink stops (steady, or the slow pulse if the tutor answers the held turn).
    assert all(i > 0.2 for i in blink_intervals(led.between(released_at + 0.05, after))), led.changes[-8:]


async def test_level_meter_follows_the_tutor_and_the_held_voice(tmp_path: Path) -> None:
    """Level meter on (the default), hold-to-talk, a real loopback lesson: the connected LED moves with the
    tutor's greeting (many in-between levels, at most 25 changes a second), rests at the silent brightness
    when nobody talks, and follows the learner's voice while the button is held."""
    import numpy as np

    from appliance.hardware.leds import METER_BASE

    async with lesson_stack(tmp_path) as stack:
        config = stack.config(button={"mode": "hold", "long_press_s": 10.0})
        async with stack.kiosk(config, hardware=True) as (kiosk, rec, mic):
            tape = PinTape(stack.pins)
            await tap(stack)
            await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
            await asyncio.sleep(0.3)  # nobody talking: the light at rest IS what is checked
            resting_at = time.monotonic()
            await press(stack)
            held_at = time.monotonic()
            t = np.arange(int(0.8 * 48000)) / 48000
            mic.say((0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate=48000)  # -23 dBFS
            await mic.wait_idle()
            await release(stack)
            released_at = time.monotonic()
            kiosk.request_stop()
            await rec.until(lambda: bool(rec.saved), what="saved")
    led = tape.trace(PINS.connected)
    speaking = led.between(when(rec, "audible"), when(rec, "quiet"))
    seconds = when(rec, "quiet") - when(rec, "audible")
    assert len({round(v, 2) for _, v in speaking}) >= 5, speaking[:10]
    assert len(speaking) <= 25 * seconds + 2, (len(speaking), seconds)
    assert all(METER_BASE - 1e-6 <= v <= 1.0 for _, v in speaking)
    assert led.value_at(resting_at) == pytest.approx(METER_BASE)
    held = [v for _, v in led.between(held_at + 0.1, released_at)]
    assert held and max(held) > METER_BASE + 0.4, held
