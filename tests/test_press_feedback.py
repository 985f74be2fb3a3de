"""A press is shown on the LEDs at once, whatever is still loading: a real kiosk on mock pins whose
call-stack warm-up and store recovery are slowed down on purpose."""

from __future__ import annotations

import _imp
import time
from pathlib import Path
from typing import Any

from appliance.call.webrtc import warm_up
from appliance.core.state import State
from appliance.hardware.button import ButtonBridge
from appliance.store.sessions import SessionStore
from tests.harness import LED_PINS, PinTape, lesson_stack

FEEDBACK_WITHIN_S = 0.1
WARM_UP_LOCK_S = 3.0
"""The slowed warm-up holds the interpreter's import lock this long (a slow import of the call stack)."""
WARM_UP_CPU_S = 1.5
"""Then it computes this long (importing and compiling are CPU work that competes for the interpreter)."""
RECOVERY_S = 3.0


def slow_warm_up() -> None:
    """The call stack's warm-up, several seconds long: an import that holds the import lock (anything
    imported meanwhile on another thread waits), the real imports, then a CPU-bound stretch."""
    _imp.acquire_lock()
    try:
        time.sleep(WARM_UP_LOCK_S)
    finally:
        _imp.release_lock()
    warm_up()
    until = time.monotonic() + WARM_UP_CPU_S
    while time.monotonic() < until:
        sum(i * i for i in range(2000))


class SlowRecoveryStore(SessionStore):
    """A store whose start-up recovery of interrupted lessons takes seconds (a slow SD card)."""

    def recover_interrupted(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(RECOVERY_S)  # on the store's own thread, as the real scan is
        return super().recover_interrupted(*args, **kwargs)


async def test_a_press_right_after_ready_lights_the_connecting_led_at_once(tmp_path: Path) -> None:
    """While the call stack is still loading (import lock held, then CPU-bound work) and the store is
    still recovering, a press on the button pin right after the kiosk is ready changes the connecting
    LED within 100 ms, and the lesson then connects once the loading is done."""
    async with lesson_stack(tmp_path) as stack:
        config = stack.config()
        store = SlowRecoveryStore(config.kiosk.state_dir)
        async with stack.kiosk(config, hardware=True, store=store, warm=slow_warm_up) as (kiosk, rec, _mic):
            assert stack.pins is not None and isinstance(stack.button, ButtonBridge)
            tape = PinTape(stack.pins)
            pressed_at = time.monotonic()
            stack.pins.pin(config.button.pin).drive_low()  # the learner presses as soon as it is ready
            await rec.until(lambda: State.CONNECTED in rec.states, timeout=30, what="the lesson connected")
            connected_at = time.monotonic()
            stack.pins.pin(config.button.pin).drive_high()
            kiosk.request_stop()
            await rec.until(lambda: bool(rec.saved), what="the lesson saved")
    lit = [t for t, v in tape.changes(LED_PINS.connecting) if t >= pressed_at and v > 0]
    assert lit, tape.changes(LED_PINS.connecting)
    assert lit[0] - pressed_at <= FEEDBACK_WITHIN_S, f"the LED lit {lit[0] - pressed_at:.3f} s after the press"
    assert connected_at - pressed_at >= WARM_UP_LOCK_S - 0.5  # the press really came while loading
