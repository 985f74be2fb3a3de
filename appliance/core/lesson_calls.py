"""A lesson's calls: opening the first, noticing a drop, moving the lesson to a new call, hanging up.

A mixin of :class:`~appliance.core.kiosk.Kiosk`, in its own module so each reads at once: the same
owner task, the same one writer of state. A lesson and its current call, conversation and call attempt
live together in one :class:`Run`, dropped as a unit when the lesson ends; every message from a call
carries the attempt it came from, so a late message of an earlier call is never taken for the current one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.config import Config
from appliance.core import messages as m
from appliance.core import outcomes as o
from appliance.core.conversation import Conversation
from appliance.core.lesson import Lesson
from appliance.core.ports import CallHandlers, KioskParts, OpenFailed
from appliance.core.state import State
from appliance.core.timers import Timers

log = logging.getLogger(__name__)

ERROR_SHOWN_S = 3.0
"""An error stays on the LEDs this long, then the kiosk is idle again."""
WRAP_UP_BEFORE_END_S = 60.0
"""A minute before the time limit (a quarter of a very short lesson) the tutor wraps up."""
MAX_RESUMES = 1
"""A lesson whose call drops is moved to a new call this many times before it is saved as dropped."""
RESUME_DELAYS_S = (0.0, 1.0, 3.0)
"""One resume tries a new call at these pauses after the drop (a server whose session slot is still
taken frees it within a second or two)."""
RESUME_WINDOW_S = 10.0
"""No resume try starts later than this after the drop: the lesson is then saved as dropped."""
CLOSE_TIMEOUT_S = 5.0
"""A hang-up that takes longer is abandoned: the lesson is saved and the kiosk goes on."""


@dataclass
class Run:
    """The lesson in progress and its current call (dropped as a unit when the lesson ends)."""

    lesson: Lesson
    link: object = None
    """The current call attempt: messages from any other (an earlier call, a failed try) are stale."""
    call: Any = None
    conversation: Conversation | None = None
    resume_tries: int = 0
    dropped_at: float = 0.0


class LessonCalls:
    config: Config
    parts: KioskParts
    state: State
    run_: Run | None
    timers: Timers
    close_timeout_s: float

    def post(self, message: object) -> None:
        raise NotImplementedError

    def _enter(self, state: State, detail: str) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        raise NotImplementedError

    async def _apply(self, run: Run, outcomes: list[o.Outcome]) -> None:
        raise NotImplementedError

    async def _end_lesson(self, reason: str, error: str | None = None) -> None:
        raise NotImplementedError

    def _touch(self) -> None:
        raise NotImplementedError

    def _lesson_timer(self, name: str, delay_s: float) -> None:
        raise NotImplementedError

    def _show_activity(self, conversation: Conversation | None) -> None:
        raise NotImplementedError

    def _start_lesson(self, pressed_at: float) -> None:
        run = Run(Lesson(kiosk_id=self.config.kiosk.id, pressed_at=pressed_at))
        self.run_ = run
        self._enter(State.CONNECTING, "fetching the lesson")
        self._spawn(self._open_call(run, resume=False), "connect")

    async def _open_call(self, run: Run, resume: bool) -> None:
        """Open a call for the lesson and report back as a message (never raises)."""
        link = run.link = object()
        handlers = CallHandlers(
            on_event=lambda event: self.post(m.CallEvent(link, event)),
            on_remote_track=lambda track: self.post(m.RemoteTrack(link, track)),
            on_closed=lambda reason: self.post(m.CallClosed(link, reason)),
            mic_frames=lambda n: self._mic_frames(run, n))
        try:
            opened = await self.parts.opener.open(run.lesson, handlers, resume=resume)
        except OpenFailed as exc:
            self.post(m.ConnectFailed(run.lesson, exc.code, exc.message, exc.retryable))
            return
        except Exception as exc:  # a bug must not leave the kiosk stuck in connecting
            log.exception("unexpected error while connecting")
            self.post(m.ConnectFailed(run.lesson, "internal", str(exc), True))
            return
        self.post(m.Connected(run.lesson, link, opened.call, opened.session))

    def _mic_frames(self, run: Run, n: int) -> np.ndarray:
        """What the call's microphone track sends (on the loop, in the track's recv)."""
        samples = self.parts.mic.read(n)
        conversation = run.conversation
        if conversation is None:
            return np.zeros(n, dtype=np.int16)
        return conversation.mic_frames(samples, time.monotonic())

    async def _on_connected(self, msg: m.Connected) -> None:
        run = self.run_
        if run is None or msg.link is not run.link or self.state not in (State.CONNECTING, State.DISCONNECTED):
            await self._hang_up(msg.call)  # a shutdown, an end or a failure overtook this connection
            return
        resumed = self.state is State.DISCONNECTED
        lesson, settings = run.lesson, self.config
        now = time.monotonic()
        run.call, run.resume_tries = msg.call, 0
        run.conversation = Conversation(
            lesson, mode="hold" if settings.button.mode == "hold" else "toggle",
            half_duplex=settings.audio.echo == "half_duplex", echo_tail_s=settings.audio.echo_tail_ms / 1000,
            long_press_s=settings.button.long_press_s, mic_rate=self.parts.mic.sample_rate,
            stop_phrases=tuple(settings.lesson.stop_phrases), greet=resumed or settings.lesson.greeting,
            session=msg.session)
        if not resumed:
            lesson.connected_at = now
            log.info("press → connected: %.0f ms", lesson.connect_ms or 0)
            limit_s = settings.lesson.max_minutes * 60
            self._lesson_timer("wrap_up", limit_s - min(WRAP_UP_BEFORE_END_S, limit_s / 4))
            self._lesson_timer("time_limit", limit_s)
        call_id = getattr(msg.call, "call_id", None)
        self._enter(State.CONNECTED, f"lesson {lesson.session_id[:8]} {'resumed ' if resumed else ''}(call {call_id})")
        self.parts.keeper.checkpoint(lesson)
        await self._apply(run, run.conversation.start(now))
        self._touch()

    async def _on_connect_failed(self, msg: m.ConnectFailed) -> None:
        run = self.run_
        if run is None or msg.lesson is not run.lesson:
            return
        if self.state is State.DISCONNECTED:
            await self._resume_later(run, msg.code, msg.message, msg.retryable)
            return
        self.parts.opener.lesson_over()
        log.error("cannot start the lesson: %s", msg.message)
        self.run_ = None
        self._enter(State.ERROR, msg.message)
        self.timers.later(ERROR_SHOWN_S, lambda: self.post(m.ErrorShown()), key="error_shown")

    async def _on_call_closed(self, msg: m.CallClosed) -> None:
        """The call died under the lesson: show it at once, then move the lesson to a new call."""
        run = self.run_
        if run is None or msg.link is not run.link or run.call is None:
            return
        log.warning("the call dropped: %s", msg.reason)
        run.lesson.add_error("call_dropped", msg.reason)
        await self._drop_call(run)
        if run.lesson.resumes >= MAX_RESUMES:
            self._enter(State.ERROR, f"the call dropped: {msg.reason}")
            await self._end_lesson("call_dropped")
            return
        run.lesson.resumes += 1
        run.dropped_at = time.monotonic()
        self._enter(State.DISCONNECTED, f"the call dropped ({msg.reason}); resuming the lesson")
        self._spawn(self._open_call(run, resume=True), "resume")

    async def _resume_later(self, run: Run, code: str, message: str, retryable: bool) -> None:
        """A resume try failed: try again after a pause while the window lasts, else save the lesson."""
        run.resume_tries += 1
        log.warning("resume try %d failed: %s", run.resume_tries, message)
        delay = RESUME_DELAYS_S[run.resume_tries] if run.resume_tries < len(RESUME_DELAYS_S) else None
        if not retryable or delay is None or time.monotonic() + delay - run.dropped_at > RESUME_WINDOW_S:
            run.lesson.add_error("resume_failed", message)
            self._enter(State.ERROR, f"the lesson could not be resumed: {message}")
            await self._end_lesson("call_dropped")
            return
        session_id = run.lesson.session_id
        self.timers.later(delay, lambda: self.post(m.ResumeNow(session_id)), key="resume", per_lesson=True)

    async def _on_resume_now(self, msg: m.ResumeNow) -> None:
        run = self.run_
        if run is not None and run.lesson.session_id == msg.session_id and self.state is State.DISCONNECTED:
            self._spawn(self._open_call(run, resume=True), "resume")

    async def _drop_call(self, run: Run) -> None:
        call, run.call, run.conversation, run.link = run.call, None, None, None
        self.timers.cancel_prefix("conversation:")
        self.parts.speaker.stop()
        self._show_activity(None)
        await self._hang_up(call)

    async def _on_remote_track(self, msg: m.RemoteTrack) -> None:
        run = self.run_
        if run is not None and msg.link is run.link and run.link is not None:
            link = msg.link
            self.parts.speaker.play(msg.track, lambda audible, at: self.post(m.Audible(link, audible, at)),
                                    run.lesson.timeline)

    async def _hang_up(self, call: Any) -> None:
        """Close the call, but never wait longer than ``close_timeout_s`` for it."""
        if call is None:
            return
        try:
            async with asyncio.timeout(self.close_timeout_s):
                await call.close()
        except TimeoutError:
            log.error("the call did not hang up within %.0f s; abandoned", self.close_timeout_s)
        except Exception:
            log.exception("error while hanging up")
