"""The orchestrator: one asyncio task owns the kiosk's state and sequences what happens.

Button presses, call events, the speaker's audibility, timers, device health and control-socket
commands all arrive as messages on one queue; the owner task handles them one at a time, so no state
is ever touched from two places. It only *sequences*: what a call's conversation means is decided by
its :class:`~appliance.core.conversation.Conversation` (which returns outcomes), and every effect goes
through a port (:mod:`appliance.core.ports`): what the learner sees and hears, what is kept, how a
call is opened. Every state change goes through :meth:`Kiosk._enter`, the one writer of ``state``.

Unattended for months, so: the message loop starts before anything slow (a press is shown at once,
whatever is still loading), every await in a handler is bounded, every background task is supervised,
and the systemd watchdog is pinged only while the owner task keeps handling messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any

from appliance import __version__
from appliance.common.clock import system_clock
from appliance.config import Config
from appliance.core import messages as m
from appliance.core import outcomes as o
from appliance.core.conversation import Conversation
from appliance.core.lesson import Lesson
from appliance.core.lessons import CLOSE_TIMEOUT_S, ERROR_SHOWN_S, Lessons, Run
from appliance.core.ports import (
    Activity,
    KioskParts,
)
from appliance.core.state import IN_LESSON, Cue, State, check_transition, cue_for
from appliance.core.timers import Timers
from appliance.core.update_hold import UpdateHold
from appliance.core.watchdog import Watchdog

log = logging.getLogger(__name__)

RECENT_LESSONS = 3
READY_WITHIN_S = 25.0
"""Ready is announced after the sound devices were tried, or after this long whatever they do."""
BUSY_SLICE_S = 0.002
"""Messages are handled in slices of at most this long before the loop lets other ready work run: after
connect a server sends ~120 events at once (the greeting's transcript deltas), and handled in one go on a
board's slow core (25–55 ms) they would hold back the tutor's first audio frames behind them."""
SAVE_RETRY_S = 30.0
EXIT_SAVE_BUDGET_S = 12.0
"""At stop, how long to keep retrying lessons the disk refused (systemd allows 20 s in all)."""





class Kiosk(Lessons):
    """The appliance's brain. Construct with its parts, then ``await run()``."""

    def __init__(self, config: Config, parts: KioskParts) -> None:
        self.config = config
        self.parts = parts
        self.observer = parts.observer
        self.state = State.IDLE
        self.run_: Run | None = None
        self.timers = Timers()
        self.devices_missing: dict[str, str] = {}
        """Sound devices that are gone right now (kind → reason): the DEVICE_MISSING state's detail."""
        self.last_error: str | None = None
        self.lessons_saved: deque[dict[str, Any]] = deque(maxlen=RECENT_LESSONS)
        self.lessons_saved_count = 0
        self.save_retry_s = SAVE_RETRY_S
        self.close_timeout_s = CLOSE_TIMEOUT_S
        self.exit_save_budget_s = EXIT_SAVE_BUDGET_S
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog = Watchdog(self.post, parts.notifier)
        self.update_hold = UpdateHold()

    # -- public API (thread-safe) --------------------------------------------------------

    @property
    def lesson(self) -> Lesson | None:
        return self.run_.lesson if self.run_ is not None else None

    def post(self, message: object) -> None:
        """Hand a message to the owner task; safe from any thread."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the kiosk is not running")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._queue.put_nowait(message)
        else:
            loop.call_soon_threadsafe(self._queue.put_nowait, message)

    def press(self, at: float | None = None) -> None:
        self.post(m.Press(time.monotonic() if at is None else at))

    def release(self, at: float | None = None) -> None:
        self.post(m.Release(time.monotonic() if at is None else at))

    def say(self, text: str) -> None:
        self.post(m.Say(text))

    def shutdown(self) -> None:
        self.post(m.Shutdown())

    def request_stop(self) -> None:
        """End the lesson in progress as a second press would (control socket `stop`)."""
        self.post(m.EndLesson("stop_command"))

    def hold_for_update(self, lease_s: float) -> dict[str, Any]:
        """The updater's hold (control socket ``update-hold``): no new lesson for ``lease_s``; ``idle`` once
        no lesson is in progress and every finished one is on disk (read on the loop, like status)."""
        self.update_hold.hold(lease_s, time.monotonic())
        idle = (self.run_ is None and self.state not in IN_LESSON
                and not self.parts.keeper.summary().get("held_in_memory"))
        return {"idle": idle, "state": self.state.value}

    def release_update_hold(self) -> None:
        self.update_hold.release()

    async def sync_now(self, timeout_s: float) -> int:
        """Sync now and wait (bounded) for the attempt; how many lessons still wait (-1: store unreadable)."""
        return await self.parts.keeper.sync_now(timeout_s)

    def status(self) -> dict[str, Any]:
        """A snapshot for `stella-kiosk status` (read on the loop, between messages; no disk I/O)."""
        lesson, conversation = self.lesson, self.run_.conversation if self.run_ is not None else None
        current = None if lesson is None else {
            "session_id": lesson.session_id, "plan_id": lesson.plan_id, "seconds": round(lesson.elapsed_s, 1),
            "turns": len(lesson.transcript.turns),
            "tutor_speaking": conversation is not None and conversation.tutor_has_floor}
        return {"state": self.state.value, "kiosk_id": self.config.kiosk.id, "version": __version__,
                "update_hold": self.update_hold.active(time.monotonic()), "lesson": current,
                "recent_lessons": list(self.lessons_saved), **self.parts.keeper.summary(),
                "clock": system_clock().status_line(), "devices": dict(self.devices_missing),
                "internals": self.internals()}

    def internals(self) -> dict[str, Any]:
        """Sizes of everything that could grow over months (the soak benchmark watches them stay flat)."""
        return {"tasks": len(self._tasks), "timers": len(self.timers), "queue": self._queue.qsize(),
                "lessons_saved": self.lessons_saved_count, **self.parts.keeper.internals()}

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Own the state until :meth:`shutdown`; a lesson in progress is then ended and saved.

        ``ready`` is set as soon as presses are handled: the slow start-up work (sound devices, the
        store's recovery, the call stack's import) runs in tasks that report back with messages."""
        self._loop = asyncio.get_running_loop()
        self._show("ready")
        first = [self._spawn(service.start(self.post), type(service).__name__) for service in self.parts.services
                 if getattr(service, "before_ready", False)]
        for service in self.parts.services:
            if not getattr(service, "before_ready", False):
                self._spawn(service.start(self.post), type(service).__name__)
        self._spawn(self.parts.keeper.start(self.post), "keeper")
        self._spawn(self._watchdog.run(), "watchdog")
        self._spawn(self._announce_ready(first, ready), "ready")
        try:
            slice_started = self._loop.time()
            while self.state is not State.STOPPING:
                if self._queue.empty():
                    message = await self._queue.get()
                    slice_started = self._loop.time()
                else:
                    if self._loop.time() - slice_started >= BUSY_SLICE_S:
                        await asyncio.sleep(0)  # audio frames and packets ready meanwhile go first
                        slice_started = self._loop.time()
                    message = self._queue.get_nowait()
                try:
                    await self._handle(message)
                except Exception:  # the owner task must survive any bug in one handler
                    log.exception("error while handling %s", type(message).__name__)
                    await self._after_bug()
        finally:
            await self._stop()

    async def _announce_ready(self, first: list[asyncio.Task[Any]], ready: asyncio.Event | None) -> None:
        """Ready once the sound devices were tried (bounded) and what they reported was handled: the
        loop already handles presses meanwhile; ready tells the caller the state now says it all."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(READY_WITHIN_S):
                await asyncio.gather(*first, return_exceptions=True)
        if ready is not None:
            self.post(m.Ready(ready))

    async def _on_ready(self, msg: m.Ready) -> None:
        msg.event.set()

    async def _after_bug(self) -> None:
        """A handler raised: a failure moves the kiosk to a named state, never leaves it half-way."""
        try:
            if self.run_ is not None:
                await self._end_lesson("error", error="internal error")
            elif self.state in IN_LESSON:
                self._enter(State.ERROR, "internal error")
                self.timers.later(ERROR_SHOWN_S, lambda: self.post(m.ErrorShown()), key="error_shown")
        except Exception:
            log.exception("could not recover after that error; the kiosk carries on")

    async def _stop(self) -> None:
        self.parts.notifier.stopping()
        with contextlib.suppress(Exception):
            await self._end_lesson("shutdown")
        await self.parts.keeper.stop(self.exit_save_budget_s)
        self.timers.cancel_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for service in self.parts.services:
            with contextlib.suppress(Exception):
                await service.stop()

    # -- message handling ---------------------------------------------------------------------

    async def _handle(self, message: object) -> None:
        name = _HANDLERS.get(type(message))
        if name is None:
            log.warning("unknown message %r", message)
            return
        await getattr(self, name)(message)

    async def _on_press(self, msg: m.Press) -> None:
        run = self.run_
        if self.state in (State.IDLE, State.ERROR) and self.update_hold.active(time.monotonic()):
            log.warning("press: an update is being installed (back within minutes); no lesson now")
            self.parts.speaker.cue(Cue.ERROR)
        elif self.state in (State.IDLE, State.ERROR):
            self._start_lesson(msg.at)
        elif self.state is State.DEVICE_MISSING:
            log.warning("press: no lesson while the %s is missing", " and ".join(self.devices_missing))
            self.parts.speaker.cue(Cue.ERROR)
        elif run is not None and run.conversation is not None and self.state in (State.CONNECTED, State.ENDING):
            await self._apply(run, run.conversation.press(msg.at, self.parts.speaker.backlog_s))
        else:
            log.info("press ignored while %s", self.state.value)

    async def _on_release(self, msg: m.Release) -> None:
        run = self.run_
        if run is not None and run.conversation is not None:
            await self._apply(run, run.conversation.release(msg.at))

    async def _on_say(self, msg: m.Say) -> None:
        run = self.run_
        if self.state is not State.CONNECTED or run is None or run.conversation is None:
            log.warning("say: no lesson in progress; text not sent")
            return
        await self._apply(run, run.conversation.say(msg.text))

    async def _on_end(self, msg: m.EndLesson) -> None:
        await self._end_lesson(msg.reason)

    async def _on_shutdown(self, msg: m.Shutdown) -> None:
        self._enter(State.STOPPING, "stopping")
        await self._end_lesson("shutdown")

    # -- during a lesson ----------------------------------------------------------------------

    async def _apply(self, run: Run, outcomes: list[o.Outcome]) -> None:
        """Carry out what the conversation returned, in order."""
        for outcome in outcomes:
            if self.run_ is not run:
                return  # an earlier outcome ended the lesson
            match outcome:
                case o.Send(event=event):
                    if run.call is not None:
                        run.call.send(event)
                case o.ClearSpeaker():
                    self.parts.speaker.clear()
                case o.TutorHeard(audible=audible):
                    self._show_activity(run.conversation)
                    self.observer.tutor_audible(audible)
                case o.Listening():
                    self._show_activity(run.conversation)
                case o.TurnChanged(turn=turn):
                    log.info("%s: %s", turn.role, turn.text)
                    self.observer.turn(turn)
                    self.parts.keeper.checkpoint(run.lesson)
                case o.Checkpoint():
                    self.parts.keeper.checkpoint(run.lesson)
                case o.Touch():
                    self._touch()
                case o.ErrorCue():
                    self.parts.speaker.cue(Cue.ERROR)
                case o.StartTimer(name=name, delay_s=delay, token=token):
                    link = run.link
                    self.timers.later(delay, lambda n=name, t=token, k=link: self.post(m.ConversationTimer(k, n, t)),
                                      key=f"conversation:{name}", per_lesson=True)
                case o.StopTimer(name=name):
                    self.timers.cancel(f"conversation:{name}")
                case o.EndLesson(reason=reason, error=error):
                    await self._end_lesson(reason, error=error)

    def _touch(self) -> None:
        """Learner activity (or the tutor just finished): restart the idle countdown."""
        if self.state is State.CONNECTED:
            self._lesson_timer("idle", self.config.lesson.idle_limit_s)

    def _lesson_timer(self, name: str, delay_s: float) -> None:
        run = self.run_
        if run is not None:
            message = m.LessonTimer(run.lesson.session_id, name)
            self.timers.later(delay_s, lambda: self.post(message), key=f"lesson:{name}", per_lesson=True)

    def _show_activity(self, conversation: Conversation | None) -> None:
        activity = Activity.NONE
        if conversation is not None and conversation.listening:
            activity = Activity.LISTENING
        elif conversation is not None and conversation.tutor_heard:
            activity = Activity.SPEAKING
        self.parts.lights.show(self.state, activity)

    # -- devices -------------------------------------------------------------------------------

    async def _on_device_health(self, msg: m.DeviceHealth) -> None:
        """A sound device went away or came back. Gone mid-lesson: the lesson cannot go on (the learner
        cannot hear or be heard), so it is saved as an error; no lesson starts until it is back."""
        if msg.ok:
            if self.devices_missing.pop(msg.kind, None) is not None:
                log.warning("the %s is back: %s", msg.kind, msg.detail)
                if not self.devices_missing and self.state is State.DEVICE_MISSING:
                    self._enter(State.IDLE, f"ready ({msg.kind} back)")
            return
        self.devices_missing[msg.kind] = msg.detail
        log.error("the %s is gone: %s", msg.kind, msg.detail)
        if self.state is not State.STOPPING:
            self._enter(State.DEVICE_MISSING, f"the {msg.kind} is gone: {msg.detail}")
        if self.run_ is not None:
            self.run_.lesson.add_error("device_lost", f"{msg.kind}: {msg.detail}")
            await self._end_lesson("error")

    async def _on_error_shown(self, msg: m.ErrorShown) -> None:
        if self.state is State.ERROR:
            self._enter(State.IDLE, "ready")

    async def _on_heartbeat(self, msg: m.Heartbeat) -> None:
        self._watchdog.handled(msg.seq)

    # -- the one writer of state ---------------------------------------------------------------------

    def _enter(self, state: State, detail: str) -> None:
        """Move to ``state`` (checked), and tell the LEDs, the speaker, systemd and observers."""
        check_transition(self.state, state)
        if state is self.state:
            return
        previous, self.state = self.state, state
        cue = cue_for(previous, state)
        if cue is not None:
            self.parts.speaker.cue(cue)
        self._show(detail)

    def _show(self, detail: str) -> None:
        state = self.state
        if state in (State.ERROR, State.DEVICE_MISSING, State.DISCONNECTED):
            self.last_error = detail
        lesson = self.lesson
        # Upper-case extras become journal fields: journalctl -u stella-kiosk STATE=error
        log.info("state: %s (%s)", state.value, detail,
                 extra={"STATE": state.value, "SESSION_ID": lesson.session_id if lesson is not None else ""})
        self._show_activity(self.run_.conversation if self.run_ is not None else None)
        self.parts.notifier.status(f"{state.value}: {detail}")
        self.observer.state_changed(state, detail)
        self.parts.keeper.publish({**self.status(), "last_error": self.last_error})

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        aclose = getattr(self.parts.opener, "aclose", None)
        if callable(aclose):
            with contextlib.suppress(Exception):
                await aclose()


_HANDLERS: dict[type, str] = {
    m.Press: "_on_press", m.Release: "_on_release", m.Say: "_on_say", m.EndLesson: "_on_end",
    m.Shutdown: "_on_shutdown", m.Connected: "_on_connected", m.ConnectFailed: "_on_connect_failed",
    m.CallClosed: "_on_call_closed", m.ResumeNow: "_on_resume_now", m.RemoteTrack: "_on_remote_track",
    m.Audible: "_on_audible", m.CallEvent: "_on_call_event", m.ConversationTimer: "_on_conversation_timer",
    m.LessonTimer: "_on_lesson_timer", m.DeviceHealth: "_on_device_health", m.RetrySave: "_on_retry_save",
    m.ErrorShown: "_on_error_shown", m.Heartbeat: "_on_heartbeat", m.FirstSync: "_on_first_sync",
    m.Ready: "_on_ready",
}
"""Message type → the name of its handler: everything the owner task reacts to."""
