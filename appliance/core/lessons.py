"""A lesson from press to kept record: its calls, a dropped call moved to a new one, its end and save.

A mixin of :class:`~appliance.core.kiosk.Kiosk`, in its own module so each reads at once: the same
owner task, the same one writer of state. A lesson and its current call, conversation and call attempt
live together in one :class:`Run`, dropped as a unit when the lesson ends; every message from a call
carries the attempt it came from, so a late message of an earlier call is never taken for the current one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from appliance.call import event_types
from appliance.config import Config
from appliance.contract.record import SessionRecord
from appliance.core import messages as m
from appliance.core import outcomes as o
from appliance.core.conversation import Conversation
from appliance.core.lesson import Lesson
from appliance.core.ports import CallHandlers, KioskObserver, KioskParts, OpenFailed
from appliance.core.state import IN_LESSON, State
from appliance.core.timers import Timers

log = logging.getLogger(__name__)
_unknown_types: set[str] = set()
"""Server event types already logged as unknown (each once per process)."""
WRAP_UP = ("One minute is left in this lesson. Wrap up now: praise the learner, recap the targets in one "
           "sentence and say goodbye.")
GOODBYE = ("The learner has been silent for a long time and may have walked away. Say one short, friendly "
           "goodbye sentence now.")

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


class Lessons:
    config: Config
    parts: KioskParts
    state: State
    run_: Run | None
    timers: Timers
    close_timeout_s: float
    save_retry_s: float
    observer: KioskObserver
    lessons_saved: deque[dict[str, Any]]
    lessons_saved_count: int

    def post(self, message: object) -> None:
        raise NotImplementedError

    def _enter(self, state: State, detail: str) -> None:
        raise NotImplementedError

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        raise NotImplementedError

    async def _apply(self, run: Run, outcomes: list[o.Outcome]) -> None:
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
        at = RESUME_DELAYS_S[run.resume_tries] if run.resume_tries < len(RESUME_DELAYS_S) else None
        if not retryable or at is None or max(at, time.monotonic() - run.dropped_at) > RESUME_WINDOW_S:
            run.lesson.add_error("resume_failed", message)
            self._enter(State.ERROR, f"the lesson could not be resumed: {message}")
            await self._end_lesson("call_dropped")
            return
        session_id = run.lesson.session_id
        delay = max(0.0, run.dropped_at + at - time.monotonic())  # the tries are timed from the drop
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

    # -- during a lesson ----------------------------------------------------------------------

    async def _on_audible(self, msg: m.Audible) -> None:
        run = self.run_
        if run is not None and run.conversation is not None and msg.link is run.link:
            first = run.lesson.first_audio_at is None
            await self._apply(run, run.conversation.on_audible(msg.audible, msg.at))
            if first and run.lesson.first_audio_at is not None:
                log.info("press → first tutor audio: %.0f ms", run.lesson.first_audio_ms or 0)

    async def _on_call_event(self, msg: m.CallEvent) -> None:
        run = self.run_
        if run is not None and run.conversation is not None and msg.link is run.link:
            etype = msg.event.type
            if etype not in event_types.KNOWN and etype not in _unknown_types and len(_unknown_types) < 200:
                _unknown_types.add(etype)
                log.debug("unknown Realtime event type %r ignored (logged once)", etype)
            await self._apply(run, run.conversation.on_event(msg.event, time.monotonic()))

    async def _on_conversation_timer(self, msg: m.ConversationTimer) -> None:
        run = self.run_
        if run is not None and run.conversation is not None and msg.link is run.link:
            await self._apply(run, run.conversation.on_timer(msg.name, msg.token, time.monotonic()))

    async def _on_lesson_timer(self, msg: m.LessonTimer) -> None:
        run = self.run_
        if run is None or run.lesson.session_id != msg.session_id:
            return
        conversation = run.conversation
        if msg.name == "time_limit":
            await self._end_lesson("time_limit")
        elif conversation is None or self.state is not State.CONNECTED:
            return
        elif msg.name == "wrap_up":
            await self._apply(run, conversation.prompt(WRAP_UP, time.monotonic()))
        elif msg.name == "idle" and (conversation.tutor_has_floor or conversation.listening):
            self._touch()
        elif msg.name == "idle":
            log.info("no learner speech for %.0f s: saying goodbye", self.config.lesson.idle_limit_s)
            self._enter(State.ENDING, "saying goodbye (the learner went quiet)")
            await self._apply(run, conversation.goodbye("idle", GOODBYE, time.monotonic()))

    # -- ending --------------------------------------------------------------------------------

    async def _end_lesson(self, reason: str, error: str | None = None) -> None:
        """Hang up, keep the record durably, then go idle (through error where it is one). Idempotent.

        Whatever fails on the way (a hang-up that never returns, a record that cannot be built, a disk
        that refuses it), the lesson is on disk or held in memory and retried: never lost, never wedged."""
        run = self.run_
        if run is None:
            return
        if error is not None and self.state in IN_LESSON:
            self._enter(State.ERROR, error)
        self.run_ = None
        self.timers.cancel_lesson()
        self.parts.opener.lesson_over()
        lesson = run.lesson
        if run.conversation is not None:
            run.conversation.on_audible(False, time.monotonic())  # count the tutor audio still playing
            if run.conversation.tutor_heard:
                self.observer.tutor_audible(False)  # the call is over: the tutor is heard no more
        await self._drop_call(run)
        with contextlib.suppress(Exception):
            for turn in lesson.transcript.flush():
                self.observer.turn(turn)
        if lesson.connected_at is None:  # never connected: nothing was said, nothing to keep
            if self.state is State.CONNECTING:
                self._enter(State.IDLE, "lesson cancelled before it started")
            return
        record = lesson.final_record(reason)
        problem = await self.parts.keeper.keep(record)
        self._remember(record)
        if problem is not None:
            log.error("the lesson could not be saved (kept in memory, retrying every %.0f s): %s",
                      self.save_retry_s, problem, extra={"SESSION_ID": lesson.session_id})
            self.timers.later(self.save_retry_s, lambda: self.post(m.RetrySave()), key="retry_save")
            if self.state in IN_LESSON:
                self._enter(State.ERROR, f"cannot save lessons: {problem}")
        else:
            log.info("lesson %s saved (%s, %d turns)", lesson.session_id, reason, len(record["turns"]),
                     extra={"SESSION_ID": lesson.session_id, "END_REASON": reason})
        if self.state is State.ERROR:  # the error stays shown a moment, then idle
            self.timers.later(ERROR_SHOWN_S, lambda: self.post(m.ErrorShown()), key="error_shown")
        elif self.state in IN_LESSON:
            self._enter(State.IDLE, "ready")

    async def _on_retry_save(self, msg: m.RetrySave) -> None:
        if not await self.parts.keeper.retry_held() and self.state is not State.STOPPING:
            self.timers.later(self.save_retry_s, lambda: self.post(m.RetrySave()), key="retry_save")

    async def _on_first_sync(self, msg: m.FirstSync) -> None:
        self.observer.lesson_saved(msg.record, msg.synced)

    def _remember(self, record: SessionRecord) -> None:
        self.lessons_saved_count += 1
        self.lessons_saved.append({"session_id": record["session_id"], "ended_at": record["ended_at"],
                                   "end_reason": record["end_reason"], "turns": len(record["turns"])})
