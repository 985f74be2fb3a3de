"""The scripted learner of a kiosk with no microphone: says ``audio.input_wavs``, one after each tutor turn.

Why in the daemon: it is how an admin tries a kiosk end to end (button or `stella-kiosk press`,
companion, Realtime server, store, sync) before any microphone is wired. Each lesson starts the
script from its first clip; a clip is said once the tutor has finished a turn and gone quiet, so the
half-duplex gate does not swallow it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from appliance.core.observer import KioskObserver
from appliance.core.state import State
from appliance.core.transcript import Turn

log = logging.getLogger(__name__)

QUIET_BEFORE_SPEAKING_S = 0.4
"""After the tutor goes quiet, wait this long (plus the echo tail) before the learner speaks."""


class ScriptedLearner:
    """Kiosk observer that speaks the configured clips into a :class:`ScriptedMicrophone`, and passes
    every callback on to the observer it wraps."""

    def __init__(self, mic: Any, clips: list[Path], inner: KioskObserver, echo_tail_s: float = 0.0) -> None:
        self.mic = mic
        self.clips = list(clips)
        self.inner = inner
        self.delay_s = QUIET_BEFORE_SPEAKING_S + echo_tail_s
        self.next_clip = 0
        self._state = State.IDLE
        self._tutor_turn_done = False
        self._audible = False
        self._timer: asyncio.TimerHandle | None = None

    def state_changed(self, state: State, detail: str) -> None:
        if state is State.CONNECTING and self._state in (State.IDLE, State.ERROR):
            self.next_clip = 0  # a new lesson: the script starts again
            self._tutor_turn_done = False
        self._state = state
        if state is not State.CONNECTED:
            self._cancel()
        self.inner.state_changed(state, detail)

    def turn(self, turn: Turn) -> None:
        if turn.role == "tutor":
            self._tutor_turn_done = True
            self._maybe_speak()
        self.inner.turn(turn)

    def tutor_audible(self, audible: bool) -> None:
        self._audible = audible
        if audible:
            self._cancel()
        else:
            self._maybe_speak()
        self.inner.tutor_audible(audible)

    def lesson_saved(self, record: dict[str, Any], synced: bool) -> None:
        self.inner.lesson_saved(record, synced)

    def _maybe_speak(self) -> None:
        if not self._tutor_turn_done or self._audible or self._state is not State.CONNECTED \
                or self.next_clip >= len(self.clips):
            return
        self._cancel()
        self._timer = asyncio.get_running_loop().call_later(self.delay_s, self._speak)

    def _speak(self) -> None:
        self._timer = None
        if self._audible or self._state is not State.CONNECTED or self.next_clip >= len(self.clips):
            return
        clip = self.clips[self.next_clip]
        self.next_clip += 1
        self._tutor_turn_done = False
        try:
            seconds = self.mic.say(clip)
        except Exception as exc:  # an unreadable clip must not stop the kiosk
            log.error("scripted learner: cannot say %s: %s", clip, exc)
            return
        log.info("scripted learner says %s (%.1f s)", clip.name, seconds)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
