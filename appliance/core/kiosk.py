"""The orchestrator: one asyncio task owns all kiosk state and reacts to messages.

Button presses (gpiozero thread), call events, speaker audibility, timers and CLI commands all
arrive as messages on one queue; the owner task handles them one at a time, so no state is ever
touched from two places. Slow work (fetching the lesson, opening the call, syncing) runs in tasks
that report back with messages. Every state change goes through :meth:`Kiosk._set_state`, the one
place that logs it, lights the LEDs, notifies systemd and tells observers.

Presses while connecting are ignored on purpose: an impatient learner pressing twice must not
cancel the lesson that is about to start. A press while a lesson is being saved arrives after the
save (the owner task is busy until then) and starts a new lesson.

Unattended for months, so: every await in the owner task is bounded (hang-up, save), every
background task is supervised (restarted after a crash), every collection that grows per lesson has
a cap, and the systemd watchdog is pinged only while the owner task keeps handling messages — a
wedged kiosk is restarted by systemd instead of looking alive while it ignores the button.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from appliance.audio.base import AudioSink, AudioSource
from appliance.audio.dsp import rms_dbfs
from appliance.audio.earcons import Cue, Earcons
from appliance.audio.gate import HalfDuplexGate
from appliance.audio.speaker import SpeakerPump
from appliance.call import event_types, events
from appliance.call.events import ServerEvent
from appliance.call.webrtc import CallError, RealtimeCall, warm_up
from appliance.common import timeline as stages
from appliance.common.backoff import backoff_delay
from appliance.common.clock import system_clock
from appliance.common.supervise import supervise
from appliance.config import Config
from appliance.core.lesson import Lesson, matches_stop_phrase
from appliance.core.messages import (
    EndLesson,
    Press,
    Release,
    Say,
    Shutdown,
    _Audible,
    _CallClosed,
    _CallEvent,
    _Connected,
    _ConnectFailed,
    _DeviceHealth,
    _ErrorShown,
    _Greet,
    _Heartbeat,
    _IdleCheck,
    _LongPress,
    _RemoteTrack,
    _RetrySave,
)
from appliance.core.observer import KioskObserver, NullObserver
from appliance.core.resume import resume_instructions
from appliance.core.state import State, check_transition
from appliance.core.timers import Timers
from appliance.daemon.systemd import Notifier
from appliance.hardware.leds import Activity
from appliance.store.sessions import SessionStore, StoreError
from appliance.store.unsaved import UnsavedLessons
from appliance.store.worker import AsyncStore
from appliance.uplink.client import CompanionClient, CompanionError, LessonPlan, RealtimeToken
from appliance.uplink.fleet_report import kiosk_report
from appliance.uplink.prefetch import Prefetcher
from appliance.uplink.sync import Syncer

if TYPE_CHECKING:  # aiortc loads after READY (realtime.call.warm_up)
    from aiortc.mediastreams import MediaStreamTrack

log = logging.getLogger(__name__)

ERROR_SHOWN_S = 3.0
WRAP_UP_BEFORE_END_S = 60.0
GOODBYE_MAX_S = 20.0
SPEECH_DBFS = -45.0
SAVE_RETRY_S = 30.0
CLOSE_TIMEOUT_S = 5.0
"""A hang-up that takes longer is abandoned: the lesson is saved and the kiosk goes on."""
SAVE_TIMEOUT_S = 10.0
"""A save the disk has not finished by then is treated as failed (kept in memory, retried)."""
EXIT_SAVE_BUDGET_S = 12.0
"""At stop, how long to keep retrying lessons the disk refused (systemd allows 20 s in all)."""
RECENT_LESSONS = 3
MAX_RESUMES = 1
"""A lesson whose call drops is resumed on a new call this many times before it is saved as dropped."""
SESSION_UPDATE_WAIT_S = 2.0
"""How long the greeting waits for ``session.updated`` before it goes ahead anyway."""
MIN_HELD_MS = 100.0
"""A hold shorter than this captured too little audio to commit (the server refuses < 100 ms)."""
TUTOR_WORDS_PER_S = 2.6
"""Speaking rate used to guess how long a tutor turn lasts when the server did not say."""
QUOTA_END_REASONS = {"insufficient_quota": "quota_exceeded", "rate_limit_exceeded": "rate_limited"}
"""Failed-response error codes after which no further response can succeed: the lesson ends."""
MAX_UNKNOWN_TYPES = 200
_unknown_event_types: set[str] = set()
"""Server event types already logged as unknown (each is logged once per process)."""


CallFactory = Callable[..., RealtimeCall]


class Kiosk:
    """The appliance's brain. Construct with its parts (factory seams), then ``await run()``."""

    def __init__(
        self,
        config: Config,
        *,
        companion: CompanionClient,
        store: SessionStore,
        mic: AudioSource,
        speaker: AudioSink,
        leds: Any = None,
        observer: KioskObserver | None = None,
        notifier: Notifier | None = None,
        call_factory: CallFactory = RealtimeCall,
    ) -> None:
        self.config = config
        self.companion = companion
        self.store = AsyncStore(store, timeout_s=SAVE_TIMEOUT_S)
        self.mic = mic
        self.speaker = speaker
        self.leds = leds
        self.observer: KioskObserver = observer or NullObserver()
        self.notifier = notifier or Notifier()
        self._call_factory = call_factory
        self.gate = HalfDuplexGate(mic, mode=config.audio.echo, tail_ms=config.audio.echo_tail_ms)
        self._earcons = Earcons(speaker.sample_rate) if config.audio.cues else None
        self.state = State.IDLE
        self.lesson: Lesson | None = None
        self.call: RealtimeCall | None = None
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.timers = Timers()
        """Pending timers by key (see appliance.core.timers)."""
        self._pump: SpeakerPump | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._tutor_audible = False
        self._tutor_speaking_hint = False
        self._tutor_speaking = False
        self._listening = False
        self._spoke_while_held = False
        self._button_down_at: float | None = None
        self._activity = 0
        self._ending_reason: str | None = None
        self._running = False
        self.lessons_saved: deque[dict[str, Any]] = deque(maxlen=RECENT_LESSONS)
        """Summaries of the last few lessons (for `status`); full records live only in the store."""
        self.lessons_saved_count = 0
        self._awaiting_first_sync: dict[str, dict[str, Any]] = {}
        self.unsaved = UnsavedLessons(self.store, companion)
        """Finished lessons the disk refused, until a write succeeds."""
        self.save_retry_s = SAVE_RETRY_S
        self.close_timeout_s = CLOSE_TIMEOUT_S
        self.exit_save_budget_s = EXIT_SAVE_BUDGET_S
        self._heartbeats_handled = 0
        self.device_problems: dict[str, str] = {}
        """Sound devices that are gone right now (kind → reason); lessons wait until they are back."""
        self._resuming: Lesson | None = None
        """The lesson whose dropped call is being replaced (presses wait, as while connecting)."""
        self._heartbeat = asyncio.Event()
        self._init_call_state()
        self.store_problems: list[str] = list(getattr(store, "problems", []) or [])
        self.last_error: str | None = None
        """The detail of the latest error state (heartbeats carry it to the companion's fleet view)."""
        self.syncer = Syncer(self.store, companion, on_attempt=self._sync_attempted,
                             period_s=config.companion.sync_interval_s, heartbeat_s=config.sync.heartbeat_s,
                             report=lambda: kiosk_report(self.status(), config.kiosk.state_dir, self.last_error))
        self.prefetcher = Prefetcher(companion, config.lesson.level) if config.companion.prefetch else None

    # -- public API (thread-safe) --------------------------------------------------------

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
        self.post(Press(time.monotonic() if at is None else at))

    def release(self, at: float | None = None) -> None:
        self.post(Release(time.monotonic() if at is None else at))

    def say(self, text: str) -> None:
        self.post(Say(text))

    def shutdown(self) -> None:
        self.post(Shutdown())

    def request_stop(self) -> None:
        """End the lesson in progress as a second press would (control socket `stop`)."""
        self.post(EndLesson("stop_command"))

    async def sync_now(self, timeout_s: float) -> int:
        """Kick the syncer and wait (bounded) for its next attempt; returns how many lessons still wait."""
        self.syncer.round_done.clear()
        self.syncer.kick()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.syncer.round_done.wait()
        try:
            return await self.store.run("count_unsynced")
        except StoreError:
            return -1

    def status(self) -> dict[str, Any]:
        """A snapshot for `stella-kiosk status` (read on the loop, between messages; no disk I/O)."""
        lesson = self.lesson
        current = None
        if lesson is not None:
            current = {"session_id": lesson.session_id, "plan_id": lesson.plan_id,
                       "seconds": round(lesson.elapsed_s, 1),
                       "turns": len(lesson.transcript.turns), "tutor_speaking": self._tutor_speaking}
        return {"state": self.state.value, "kiosk_id": self.config.kiosk.id, "lesson": current,
                "recent_lessons": list(self.lessons_saved), "outbox": self.syncer.waiting,
                "held_in_memory": len(self.unsaved), "store_problems": list(self.store_problems),
                "clock": system_clock().status_line(), "devices": dict(self.device_problems),
                "internals": self.internals()}

    def internals(self) -> dict[str, Any]:
        """Sizes of everything that could grow over months (the soak benchmark watches them stay flat)."""
        return {"tasks": len(self._tasks), "timers": len(self.timers), "queue": self._queue.qsize(),
                "awaiting_first_sync": len(self._awaiting_first_sync), "lessons_saved": self.lessons_saved_count,
                "checkpoint_ms": self.store.checkpoint_stats()}

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Own the state until :meth:`shutdown`; a lesson in progress is then ended and saved.

        Start-up never stops half-way: each step that fails is logged and the kiosk starts anyway
        (a kiosk that is up but cannot reach its disk still shows the error; one that never opened its
        control socket and ignores SIGTERM helps nobody).
        """
        self._loop = asyncio.get_running_loop()
        self._running = True
        for device in (self.mic, self.speaker):
            register = getattr(device, "set_health_callback", None)
            if callable(register):
                register(lambda kind, ok, detail: self.post(_DeviceHealth(kind, ok, detail)))
        missing = [(kind, device, problem) for kind, device in (("microphone", self.mic), ("speaker", self.speaker))
                   if (problem := await self._start_device(kind, device)) is not None]
        self._show(State.IDLE, "ready")
        self._cue(Cue.READY)
        self.notifier.ready("idle: press the button to start a lesson")
        for problem in self.store_problems:
            log.critical("session store: %s", problem)
        await self._apply_retention()
        try:
            for record in await self.store.run("recover_interrupted"):
                log.warning("lesson %s was interrupted (power cut or crash); kept with %d turns",
                            record.get("session_id"), len(record.get("turns") or []))
        except StoreError as exc:
            log.error("cannot recover interrupted lessons: %s", exc)
        self._spawn(supervise("sync", self.syncer.run), "sync")
        self.syncer.kick()
        if self.prefetcher is not None:
            self._spawn(supervise("prefetch", self.prefetcher.run), "prefetch")
        interval = self.notifier.watchdog_interval_s()
        if interval is not None:
            self._spawn(self._watchdog(interval), "watchdog")
        for kind, device, problem in missing:  # e.g. a USB sound card not enumerated yet at boot
            await self._on_device_health(kind, False, problem)
            self._spawn(supervise(f"{kind} start", lambda k=kind, d=device: self._keep_starting(k, d)),
                        f"{kind}-start")
        # Off the loop and off the start-up path: the first press must not wait for aiortc or the trust store.
        self._spawn(asyncio.to_thread(warm_up), "warm-up")
        if ready is not None:
            ready.set()
        try:
            while self._running:
                message = await self._queue.get()
                try:
                    await self._handle(message)
                except Exception:  # the owner task must survive any bug in one handler
                    log.exception("error while handling %s", type(message).__name__)
                    try:
                        await self._recover_after_bug()
                    except Exception:
                        log.exception("could not recover after that error; the kiosk carries on")
        finally:
            self.notifier.stopping()
            with contextlib.suppress(Exception):
                await self._end_lesson("shutdown")
            await self.unsaved.keep_at_exit(self.exit_save_budget_s, self._queue_for_sync)
            self.timers.cancel_all()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            for device in (self.mic, self.speaker):
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await device.close()
            await asyncio.to_thread(self.store.close)

    @staticmethod
    async def _start_device(kind: str, device: AudioSource | AudioSink) -> str | None:
        """Start a sound device (bounded); the reason when it did not start."""
        try:
            async with asyncio.timeout(10):
                await device.start()
        except Exception as exc:
            log.error("the %s did not start: %s", kind, exc)
            return str(exc) or type(exc).__name__
        return None

    async def _keep_starting(self, kind: str, device: AudioSource | AudioSink) -> None:
        """Retry a device that was missing at start-up, with backoff, until it starts."""
        failures = 0
        while True:
            failures += 1
            await asyncio.sleep(backoff_delay(failures, 2.0, 60.0))
            if await self._start_device(kind, device) is None:
                self.post(_DeviceHealth(kind, True, "started"))
                return

    async def _recover_after_bug(self) -> None:
        """A handler raised: never stay in a half-state. A lesson whose call is gone is saved; a
        kiosk left in connecting/disconnected without a lesson goes back to idle."""
        if self.lesson is not None and (self.call is None or not self.call.connected) \
                and self.state is not State.CONNECTING:
            await self._end_lesson("error")
        elif self.lesson is None and self.state in (State.CONNECTING, State.DISCONNECTED, State.CONNECTED):
            self._show(State.IDLE, "ready (after an internal error)")

    async def _watchdog(self, interval_s: float) -> None:
        """Ping systemd's watchdog only while the owner task keeps handling messages.

        Each round posts a heartbeat through the owner's own queue and pings once it has been
        handled. A wedged owner task (an await that never returns, a loop spinning in a handler)
        handles nothing, so the pings stop and systemd restarts the kiosk; the checkpointed lesson
        is then recovered as ``interrupted``.
        """
        sent = 0
        while True:
            sent += 1
            self._heartbeat.clear()
            self.post(_Heartbeat(sent))
            try:
                async with asyncio.timeout(interval_s):
                    while self._heartbeats_handled < sent:
                        await self._heartbeat.wait()
                        self._heartbeat.clear()
            except TimeoutError:
                log.error("the kiosk did not handle its heartbeat within %.1f s; not pinging the watchdog",
                          interval_s)
                continue  # no ping: if this persists, systemd restarts the kiosk
            self.notifier.watchdog()
            await asyncio.sleep(interval_s)

    # -- message handling ---------------------------------------------------------------------

    async def _handle(self, message: object) -> None:
        match message:
            case Press(at=at):
                await self._on_press(at)
            case Release(at=at):
                self._on_release(at)
            case _LongPress(press_at=press_at):
                # In hold mode a long turn is not a long press: only a silent hold ends the lesson.
                if self._button_down_at == press_at and self.lesson is not None and not self._spoke_while_held:
                    log.info("long press: ending the lesson")
                    await self._end_lesson("button")
            case _RemoteTrack(call=call, track=track):
                if call is self.call or (self.call is None and self.state is State.CONNECTING):
                    self._start_speaker(track)
            case _IdleCheck(session_id=session_id, activity=activity):
                self._on_idle_check(session_id, activity)
            case Say(text=text):
                self._on_say(text)
            case EndLesson(reason=reason):
                await self._end_lesson(reason)
            case Shutdown():
                self._running = False
            case _Connected(lesson=lesson, call=call, resume_instructions=resume, session=session):
                if resume is None:
                    await self._on_connected(lesson, call, session)
                else:
                    await self._on_resumed(lesson, call, session)
            case _Greet(call=call):
                self._greet(call)
            case _ConnectFailed(lesson=lesson, code=code, message=text):
                await self._on_connect_failed(lesson, code, text)
            case _CallEvent(call=call, event=event):
                await self._on_call_event(call, event)
            case _CallClosed(call=call, reason=reason):
                await self._on_call_closed(call, reason)
            case _Audible(audible=audible, at=at):
                self._on_audible(audible, at)
            case _RetrySave():
                await self._retry_unsaved()
            case _Heartbeat(seq=seq):
                self._heartbeats_handled = max(self._heartbeats_handled, seq)
                self._heartbeat.set()
            case _ErrorShown():
                if self.state is State.ERROR and not self.device_problems:
                    self._set_state(State.IDLE, "ready")
            case _DeviceHealth(kind=kind, ok=ok, detail=detail):
                await self._on_device_health(kind, ok, detail)
            case _:
                log.warning("unknown message %r", message)

    async def _on_press(self, at: float) -> None:
        self._button_down_at = at
        self.timers.later(self.config.button.long_press_s, lambda: self.post(_LongPress(at)), key="long_press")
        if self._resuming is not None:
            log.info("press ignored while the lesson is being resumed")
            return
        if self.device_problems and self.lesson is None:
            log.warning("press: no lesson while the %s is missing", " and ".join(self.device_problems))
            self._cue(Cue.ERROR)
            return
        if self.state in (State.IDLE, State.ERROR):
            self._start_lesson()
            self._button_down_at = None  # the press that starts a lesson is not a turn or a long press
            return
        if self.state is not State.CONNECTED or self.call is None:
            log.info("press ignored while %s", self.state.value)
            return
        self._touch()
        interrupted = self._barge_in()
        if self.config.button.mode == "hold":
            self._start_listening()
        elif not interrupted:
            await self._end_lesson("button")

    def _on_release(self, at: float) -> None:
        self._button_down_at = None
        if self._listening:
            self._stop_listening(commit=True)

    def _barge_in(self) -> bool:
        """Interrupt the tutor if it is speaking; True when it was."""
        if self.call is None or not self._tutor_speaking:
            return False
        log.info("barge-in: interrupting the tutor")
        if self._active_response is not None:  # cancelling nothing only earns an error event
            self.call.send(events.response_cancel(self._active_response))
        self.call.send(events.output_audio_buffer_clear())
        self._truncate_played_item()
        clear_speaker = getattr(self.speaker, "clear", None)  # a real speaker may hold ~1 s of queue
        if callable(clear_speaker):
            clear_speaker()
        self._tutor_speaking_hint = False
        return True

    def _truncate_played_item(self) -> None:
        """Tell the model how much of its item was heard, and keep the turn as heard.

        Why: the model otherwise believes the learner heard the whole answer, and the record would
        say so too. The played time runs from when the item became audible here, less what the
        speaker still held (dropped by the clear)."""
        lesson, call, playing = self.lesson, self.call, self._playing_item
        if lesson is None or call is None or playing is None:
            return
        response_id, item_id = playing
        backlog = 0.0
        with contextlib.suppress(TypeError, ValueError):
            backlog = max(0.0, float(getattr(self.speaker, "buffered_s", 0.0)))
        since = self._playing_audible_at
        played_ms = 0.0 if since is None else max(0.0, (time.monotonic() - since - backlog) * 1000)
        total_ms = self._response_audio_ms.get(response_id)
        if total_ms is not None:
            played_ms = min(played_ms, total_ms)
        if item_id is not None:
            call.send(events.item_truncate(item_id, round(played_ms)))
        turns = lesson.transcript.tutor_turns_of(response_id)
        if total_ms is None:  # guess the turn's length from its words
            words = sum(len(t.text.split()) for t in turns) or 1
            total_ms = max(1000 * words / TUTOR_WORDS_PER_S, played_ms, 1.0)
        turn = lesson.transcript.cut_to_heard(response_id, item_id, played_ms / total_ms if total_ms else 1.0)
        log.info("tutor cut off after %.0f ms of item %s", played_ms, item_id)
        self._playing_item = None
        if turn is not None:
            self.observer.turn(turn)
            self._checkpoint(lesson)

    def _start_listening(self) -> None:
        """Hold-to-talk: the learner's turn runs while the button is held."""
        if self.call is None:
            return
        self.call.send(events.input_audio_buffer_clear())
        self._spoke_while_held = False
        self._held_samples = 0
        self._listening = True
        self._show_activity()

    def _stop_listening(self, commit: bool) -> None:
        self._listening = False
        if self.call is not None:
            held_ms = 1000 * self._held_samples / self.mic.sample_rate
            if commit and held_ms < MIN_HELD_MS:
                log.info("hold of %.0f ms: too short to be a turn; discarded", held_ms)
                self.call.send(events.input_audio_buffer_clear())
            elif commit:
                self.call.send(events.input_audio_buffer_commit())
                self.call.send(events.response_create())
                if self.lesson is not None:
                    self.lesson.learner_audio_s += held_ms / 1000
            else:
                self.call.send(events.input_audio_buffer_clear())
        self._show_activity()

    def _mic_frames(self, n: int) -> np.ndarray:
        """What the call's microphone track sends (runs on the loop, in the track's recv)."""
        if self.config.button.mode == "hold":
            samples = self.mic.read(n)  # always read, so captured audio never piles up
            if not self._listening:
                return np.zeros(n, dtype=np.int16)
            self._held_samples += len(samples)
            if not self._spoke_while_held and rms_dbfs(samples) > SPEECH_DBFS:
                self._spoke_while_held = True
            return samples
        return self.gate.read(n)

    def _on_say(self, text: str) -> None:
        if self.state is not State.CONNECTED or self.call is None or self.lesson is None:
            log.warning("say: no lesson in progress; text not sent")
            return
        self._touch()
        if self.call.send(events.user_text(text)) and self.call.send(events.response_create()):
            turn = self.lesson.transcript.add_typed(text)
            self.observer.turn(turn)
            self._checkpoint(self.lesson)

    # -- starting a lesson ------------------------------------------------------------------

    def _start_lesson(self) -> None:
        lesson = Lesson(kiosk_id=self.config.kiosk.id, pressed_at=time.monotonic())
        self.lesson = lesson
        self._set_state(State.CONNECTING, "fetching the lesson")
        self._spawn(self._connect(lesson), "connect")

    async def _connect(self, lesson: Lesson, resume: bool = False) -> None:
        """Fetch plan + token and open the call; report back as a message (never raises).

        ``resume``: the lesson's call dropped; the new call keeps the lesson's plan and carries the
        conversation so far in its instructions."""
        call: RealtimeCall | None = None
        # Bounded as a whole: a companion that drips its answer byte by byte must not keep the kiosk
        # in "connecting" (where presses are ignored) for ever.
        budget_s = 2 * self.config.companion.timeout_s + self.config.realtime.connect_timeout_s + 5
        try:
            async with asyncio.timeout(budget_s):
                if resume:
                    token = await self.companion.token(plan_id=lesson.plan_id)
                    instructions = resume_instructions(token.prompt, lesson.transcript.to_records())
                    session = self._session_config(token, instructions)
                else:
                    plan, token = await self._lesson_materials()
                    lesson.plan_id = plan.plan_id
                    lesson.targets = [t.to_record() if hasattr(t, "to_record") else dict(t.__dict__)
                                      for t in plan.targets]
                    lesson.model = token.model
                    session = self._session_config(token, token.prompt)
                lesson.timeline.mark(stages.MATERIALS_READY)
                # The callbacks late-bind `call`: it is assigned before any of them can fire.
                call = self._call_factory(
                    self.config.realtime.base_url,
                    token.token,
                    self._mic_frames,
                    on_event=lambda event: self.post(_CallEvent(call, event)),
                    on_remote_track=lambda track: self.post(_RemoteTrack(call, track)),
                    on_closed=lambda reason: self.post(_CallClosed(call, reason)),
                    ice_servers=self.config.realtime.ice_servers,
                    consent_fix=self.config.realtime.ice_lite_consent_fix,
                    mic_sample_rate=self.mic.sample_rate,
                    timeline=lesson.timeline,
                )
                await call.open(self.config.realtime.connect_timeout_s)
        except TimeoutError:
            await self._hang_up(call)
            self.post(_ConnectFailed(lesson, "timeout", f"the lesson did not start within {budget_s:.0f} s"))
        except CompanionError as exc:
            self.post(_ConnectFailed(lesson, f"companion_{exc.code}", str(exc.message)))
        except CallError as exc:
            self.post(_ConnectFailed(lesson, exc.code, exc.message))
        except Exception as exc:  # a bug must not leave the kiosk stuck in connecting
            log.exception("unexpected error while connecting")
            await self._hang_up(call)
            self.post(_ConnectFailed(lesson, "internal", str(exc)))
        else:
            self.post(_Connected(lesson, call, instructions if resume else None, session))

    def _session_config(self, token: RealtimeToken, instructions: str) -> dict[str, Any]:
        """The session the kiosk sends when the channel opens: the token's own config (a server that
        applied the token gets the same again), with manual turns in hold mode."""
        detection = None if self.config.button.mode == "hold" else {"type": "server_vad",
                                                                      "silence_duration_ms": token.silence_ms}
        session = events.session_config(instructions, token.voice, transcription_model=token.transcription_model,
                                         turn_detection=detection, noise_reduction="far_field")
        if not instructions:
            session.pop("instructions")  # never blank out instructions the token did carry
        return session

    async def _lesson_materials(self) -> tuple[LessonPlan, RealtimeToken]:
        """The prefetched plan + token when fresh (no companion round trip), else fetched now."""
        if self.prefetcher is not None:
            ready = self.prefetcher.take()
            if ready is not None:
                return ready
        plan = await self.companion.plan(level=self.config.lesson.level)
        token = await self.companion.token(plan_id=plan.plan_id)
        return plan, token

    async def _on_connected(self, lesson: Lesson, call: RealtimeCall, session: dict[str, Any] | None = None) -> None:
        if lesson is not self.lesson or self.state is not State.CONNECTING:
            await self._hang_up(call)  # a shutdown or failure overtook this connection
            return
        self.call = call
        lesson.connected_at = time.monotonic()
        self._set_state(State.CONNECTED, f"lesson {lesson.session_id[:8]} (call {call.call_id})")
        log.info("press → connected: %.0f ms", lesson.connect_ms or 0)
        self._checkpoint(lesson)
        self._ending_reason = None
        self._open_session(call, session, greet=self.config.lesson.greeting)
        self._touch()
        limit_s = self.config.lesson.max_minutes * 60
        session_id = lesson.session_id
        # A minute before the end (a quarter of the lesson for very short ones) the tutor wraps up.
        self.timers.later(limit_s - min(WRAP_UP_BEFORE_END_S, limit_s / 4), self._wrap_up, session_id,
                    key="wrap_up", per_lesson=True)
        self.timers.later(limit_s, lambda sid: self._end_if_current(sid, "time_limit"), session_id,
                    key="time_limit", per_lesson=True)

    async def _on_connect_failed(self, lesson: Lesson, code: str, message: str) -> None:
        if lesson is not self.lesson:
            return
        if self._resuming is lesson:
            self._resuming = None
            log.error("could not resume the lesson: %s", message)
            lesson.add_error("resume_failed", message)
            self._set_state(State.ERROR, f"the lesson could not be resumed: {message}")
            await self._end_lesson("call_dropped")
            return
        if self.prefetcher is not None:
            self.prefetcher.kick()
        log.error("cannot start the lesson: %s", message)
        self.lesson = None
        self._set_state(State.ERROR, message)
        self.timers.later(ERROR_SHOWN_S, lambda: self.post(_ErrorShown()), key="error_shown")

    # -- during a lesson --------------------------------------------------------------------

    def _start_speaker(self, track: MediaStreamTrack) -> None:
        """Drain the tutor's audio track into the speaker (one pump per call)."""
        if self._pump_task is not None:
            self._pump_task.cancel()
        pump = SpeakerPump(self.speaker, volume=self.config.audio.volume,
                           on_audible=lambda audible: self.post(_Audible(audible, time.monotonic())),
                           timeline=self.lesson.timeline if self.lesson is not None else None)
        self._pump = pump
        self._pump_task = self._spawn(self._run_pump(pump, track), "speaker")

    @staticmethod
    async def _run_pump(pump: SpeakerPump, track: MediaStreamTrack) -> None:
        """Play the call until its track ends; a crash in the pump is logged and the pump restarted
        (the learner would otherwise hear a silent tutor for the rest of the lesson)."""
        failures = 0
        while True:
            try:
                await pump.run(track)
                return  # the track ended: the call is over
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                if failures == 1:
                    log.exception("the speaker pump crashed; restarting it")
                await asyncio.sleep(min(2.0, 0.1 * 2 ** failures))

    def _on_audible(self, audible: bool, at: float) -> None:
        """The speaker started or stopped emitting sound (measured on what it plays)."""
        self._tutor_audible = audible
        lesson = self.lesson
        if audible:
            self._audible_since = at
            if self._playing_item is not None and self._playing_audible_at is None:
                self._playing_audible_at = at
        elif self._audible_since is not None:
            if lesson is not None:
                lesson.tutor_audio_s += max(0.0, at - self._audible_since)
            self._audible_since = None
        if audible and lesson is not None and lesson.first_audio_at is None and self.state is State.CONNECTED:
            lesson.first_audio_at = at
            log.info("press → first tutor audio: %.0f ms", lesson.first_audio_ms or 0)
        self._update_tutor_speaking()

    def _update_tutor_speaking(self) -> None:
        """The tutor speaks while the speaker is audible or the server says its audio is playing.

        Why both: the speaker alone goes quiet in pauses between sentences (the mic would open
        mid-answer), and the server's ``output_audio_buffer.*`` hints are missing on some servers
        and end ~a jitter buffer before the last sound leaves the speaker.
        """
        speaking = self._tutor_audible or self._tutor_speaking_hint
        if speaking == self._tutor_speaking:
            return
        self._tutor_speaking = speaking
        self.gate.set_tutor_audible(speaking)
        self._show_activity()
        if not speaking:
            self._touch()  # the learner's idle time counts from the end of the tutor's words
            if self._ending_reason is not None and self.lesson is not None:
                self.post(EndLesson(self._ending_reason))
        self.observer.tutor_audible(speaking)

    async def _on_call_event(self, call: RealtimeCall, event: ServerEvent) -> None:
        lesson = self.lesson
        if call is not self.call or lesson is None:
            return
        etype = event.type
        if etype not in event_types.KNOWN and etype not in _unknown_event_types \
                and len(_unknown_event_types) < MAX_UNKNOWN_TYPES:
            _unknown_event_types.add(etype)
            log.debug("unknown Realtime event type %r ignored (logged once)", etype)
        if etype == "session.updated":
            if self._awaiting_session:
                self._awaiting_session = False
                if self._greeting_pending:
                    self._greet(call)
        elif etype == "response.created":
            response = event.get("response") if isinstance(event.get("response"), dict) else {}
            rid = response.get("id")
            if isinstance(rid, str):
                self._active_response = rid
                if self._greeting_event_id is not None and self._greeting_response_id is None:
                    self._greeting_response_id = rid
        elif etype == "response.output_item.added":
            item = event.get("item") if isinstance(event.get("item"), dict) else {}
            rid, item_id = event.get("response_id"), item.get("id")
            if isinstance(rid, str) and isinstance(item_id, str) and item.get("role", "assistant") == "assistant":
                self._response_items[rid] = item_id
                self._playing_item = (rid, item_id)
                self._playing_audible_at = None
        elif etype == "output_audio_buffer.started":
            lesson.timeline.mark(stages.SERVER_AUDIO_STARTED)
            self._tutor_speaking_hint = True
            rid = event.get("response_id")
            if isinstance(rid, str) and (self._playing_item is None or self._playing_item[0] != rid):
                self._playing_item = (rid, self._response_items.get(rid))
                self._playing_audible_at = None
            if self._playing_audible_at is None and self._tutor_audible:
                self._playing_audible_at = time.monotonic()
            self._update_tutor_speaking()
        elif etype in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
            self._tutor_speaking_hint = False
            self._update_tutor_speaking()
        elif etype == "input_audio_buffer.speech_started":
            self._touch()
            start, item_id = event.get("audio_start_ms"), event.get("item_id")
            if isinstance(start, int) and isinstance(item_id, str) and len(self._speech_started_ms) < 100:
                self._speech_started_ms[item_id] = start
        elif etype == "input_audio_buffer.speech_stopped":
            end, item_id = event.get("audio_end_ms"), event.get("item_id")
            start = self._speech_started_ms.pop(item_id, None) if isinstance(item_id, str) else None
            if isinstance(end, int) and start is not None and end > start:
                lesson.learner_audio_s += (end - start) / 1000
        elif etype == "conversation.item.input_audio_transcription.failed":
            error = event.get("error") if isinstance(event.get("error"), dict) else {}
            message = str(error.get("message") or error.get("code") or "transcription failed")
            log.warning("the learner's speech could not be transcribed: %s", message)
            lesson.add_error("transcription_failed", message)
        elif etype == "response.done":
            response = event.get("response")
            if isinstance(response, dict):
                lesson.usage.add(response.get("usage"))
                if await self._on_response_done(call, lesson, response):
                    return
        elif etype == "error":
            error = event.get("error") if isinstance(event.get("error"), dict) else {}
            code = str(error.get("code") or error.get("type") or "error")
            message = str(error.get("message") or "")
            log.warning("Realtime error event: %s: %s", code, message)
            lesson.add_error(code, message)
            if code == "session_expired":
                await self._end_lesson("session_expired")
                return
            if self._greeting_event_id is not None and error.get("event_id") == self._greeting_event_id:
                self._greeting_failed(call, f"{code}: {message}")
        turn = lesson.transcript.handle(event)
        if turn is not None:
            if turn.role == "learner":
                self._touch()
            log.info("%s: %s", turn.role, turn.text)
            self.observer.turn(turn)
            self._checkpoint(lesson)
            if turn.role == "learner" and turn.source == "voice" and matches_stop_phrase(
                    turn.text, self.config.lesson.stop_phrases):
                await self._end_lesson("voice_stop")

    async def _on_response_done(self, call: RealtimeCall, lesson: Lesson, response: dict[str, Any]) -> bool:
        """A response ended: note it, and react to one that failed. True when the lesson ended."""
        rid = response.get("id")
        status = response.get("status")
        if rid == self._active_response:
            self._active_response = None
        usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
        details_out = usage.get("output_token_details") if isinstance(usage.get("output_token_details"), dict) else {}
        audio_tokens = details_out.get("audio_tokens")
        if isinstance(rid, str) and isinstance(audio_tokens, int) and audio_tokens > 0 \
                and len(self._response_audio_ms) < 200:
            self._response_audio_ms[rid] = audio_tokens * 50.0  # one audio token per 50 ms of tutor speech
        if status not in ("failed", "incomplete"):
            if rid is not None and rid == self._greeting_response_id:
                self._greeting_event_id = self._greeting_response_id = None  # greeted
            return False
        details = response.get("status_details") if isinstance(response.get("status_details"), dict) else {}
        error = details.get("error") if isinstance(details.get("error"), dict) else {}
        code = str(error.get("code") or error.get("type") or details.get("reason") or status)
        message = str(error.get("message") or details.get("reason") or "")
        log.warning("the tutor's response %s was %s: %s %s", rid, status, code, message)
        lesson.add_error(f"response_{status}", f"{code}: {message}" if message and message != code else code)
        if isinstance(rid, str):
            for turn in lesson.transcript.tutor_turns_of(rid):
                turn.status = status
            self._checkpoint(lesson)
        reason = QUOTA_END_REASONS.get(code)
        if reason is not None:
            self._set_state(State.ERROR, f"the OpenAI account refused the lesson: {code}")
            await self._end_lesson(reason)
            return True
        if status == "failed" and rid is not None and rid == self._greeting_response_id:
            self._greeting_failed(call, code)
        return False

    def _wrap_up(self, session_id: str) -> None:
        if self.lesson is None or self.lesson.session_id != session_id or self.call is None:
            return
        self.call.send(events.system_text(
            "One minute is left in this lesson. Wrap up now: praise the learner, recap the targets "
            "in one sentence and say goodbye."))
        self.call.send(events.response_create())

    def _touch(self) -> None:
        """Learner activity (or the tutor just finished): restart the idle countdown."""
        self._activity += 1
        lesson = self.lesson
        if lesson is not None and self.state is State.CONNECTED:
            check = _IdleCheck(lesson.session_id, self._activity)
            self.timers.later(self.config.lesson.idle_limit_s, lambda: self.post(check), key="idle_check",
                        per_lesson=True)

    def _on_idle_check(self, session_id: str, activity: int) -> None:
        lesson, call = self.lesson, self.call
        if lesson is None or call is None or lesson.session_id != session_id or activity != self._activity:
            return
        if self._tutor_speaking or self._listening or self._ending_reason is not None:
            return
        log.info("no learner speech for %.0f s: saying goodbye", self.config.lesson.idle_limit_s)
        self._ending_reason = "idle"
        call.send(events.system_text(
            "The learner has been silent for a long time and may have walked away. Say one short, "
            "friendly goodbye sentence now."))
        call.send(events.response_create())
        # If the goodbye never becomes audible, end anyway.
        self.timers.later(GOODBYE_MAX_S, lambda sid=session_id: self._end_if_current(sid, "idle"), key="goodbye",
                    per_lesson=True)

    def _show_activity(self) -> None:
        if self.leds is None:
            return
        if self._listening:
            activity = Activity.LISTENING
        elif self._tutor_speaking:
            activity = Activity.SPEAKING
        else:
            activity = Activity.NONE
        self.leds.show(self.state, activity)

    def _end_if_current(self, session_id: str, reason: str) -> None:
        if self.lesson is not None and self.lesson.session_id == session_id:
            self.post(EndLesson(reason))

    async def _on_call_closed(self, call: RealtimeCall, reason: str) -> None:
        """The call died under the lesson (network gone, server frozen or gone).

        Show it at once (error LED and cue), then try once to resume the same lesson on a new call,
        with the conversation so far in the tutor's instructions, so the learner hears "sorry, where
        were we" rather than a dead kiosk. If that fails too, the lesson is saved as ``call_dropped``.
        """
        lesson = self.lesson
        if call is not self.call or lesson is None:
            return
        log.warning("the call dropped: %s", reason)
        lesson.add_error("call_dropped", reason)
        self.call = None
        self._reset_call_flags()
        await self._hang_up(call)
        self._set_state(State.ERROR, f"the call dropped: {reason}")
        if lesson.resumes >= MAX_RESUMES or not self._running:
            await self._end_lesson("call_dropped")
            return
        lesson.resumes += 1
        self._resuming = lesson
        self._set_state(State.CONNECTING, "resuming the lesson")
        self._spawn(self._connect(lesson, resume=True), "resume")

    async def _on_resumed(self, lesson: Lesson, call: RealtimeCall, session: dict[str, Any] | None) -> None:
        if lesson is not self.lesson or self._resuming is not lesson or self.state is not State.CONNECTING:
            await self._hang_up(call)
            return
        self._resuming = None
        self.call = call
        self._set_state(State.CONNECTED, f"lesson {lesson.session_id[:8]} resumed (call {call.call_id})")
        log.info("lesson %s resumed on call %s", lesson.session_id, call.call_id)
        self._open_session(call, session, greet=True)
        self._touch()

    def _open_session(self, call: RealtimeCall, session: dict[str, Any] | None, greet: bool) -> None:
        """Send the session config, then greet once ``session.updated`` confirms it (or after a short
        wait: a server that never confirms must not keep the learner waiting)."""
        if session is None:
            if self.config.button.mode == "hold":
                call.send(events.manual_turns_update())
        elif call.send(events.session_update(**session)):
            self._awaiting_session = True
        self._greeting_pending = greet
        if not greet:
            return
        if self._awaiting_session:
            self.timers.later(SESSION_UPDATE_WAIT_S, lambda: self.post(_Greet(call)), key="greet", per_lesson=True)
        else:
            self._greet(call)

    def _greet(self, call: RealtimeCall) -> None:
        """Ask for the tutor's greeting (once; :meth:`_greeting_failed` may ask again once)."""
        self.timers.cancel("greet")
        if call is not self.call or not self._greeting_pending:
            return
        if self._awaiting_session:
            log.warning("no session.updated within %.0f s; greeting anyway", SESSION_UPDATE_WAIT_S)
            self._awaiting_session = False
        self._greeting_pending = False
        event = events.response_create()
        self._greeting_event_id = event["event_id"]
        self._greeting_response_id = None
        if call.send(event) and self.lesson is not None:
            self.lesson.timeline.mark(stages.GREETING_SENT)

    def _greeting_failed(self, call: RealtimeCall, why: str) -> None:
        """The greeting's response failed: ask once more, so the learner does not have to speak first."""
        self._greeting_event_id = None
        self._greeting_response_id = None
        if self._greeting_retried:
            log.warning("the greeting failed again (%s); waiting for the learner", why)
            return
        self._greeting_retried = True
        log.warning("the greeting failed (%s); asking once more", why)
        self._greeting_pending = True
        self._greet(call)

    async def _on_device_health(self, kind: str, ok: bool, detail: str) -> None:
        """A sound device went away or came back (the backend reopens it by name on its own).

        Gone mid-lesson: the lesson cannot go on (the learner cannot hear or be heard), so it is
        saved as an error, with the reason, and the error LED stays on until the device is back.
        """
        if ok:
            if self.device_problems.pop(kind, None) is not None:
                log.warning("the %s is back: %s", kind, detail)
                if not self.device_problems and self.state is State.ERROR and self.lesson is None:
                    self._set_state(State.IDLE, f"ready ({kind} back)")
            return
        self.device_problems[kind] = detail
        log.error("the %s is gone: %s", kind, detail)
        lesson = self.lesson
        if lesson is not None:
            lesson.add_error("device_lost", f"{kind}: {detail}")
            if self.state is not State.ERROR:
                self._set_state(State.ERROR, f"the {kind} is gone: {detail}")
            await self._end_lesson("error")
        elif self.state in (State.IDLE, State.ERROR):
            self._set_state(State.ERROR, f"the {kind} is gone: {detail}")

    # -- ending ------------------------------------------------------------------------------

    async def _end_lesson(self, reason: str) -> None:
        """Hang up, save the record durably, then sync in the background. Idempotent.

        Whatever fails on the way (a hang-up that never returns, a record that cannot be built, a
        disk that refuses it), the kiosk ends idle (through error where it is one) and the lesson is
        on disk or held in memory and retried: never lost, never wedged.
        """
        lesson, call = self.lesson, self.call
        if lesson is None:
            return
        self.lesson = None
        self.call = None
        if self._audible_since is not None:  # the tutor was still audible: count that audio too
            lesson.tutor_audio_s += max(0.0, time.monotonic() - self._audible_since)
        self._reset_lesson_flags()
        if self.prefetcher is not None:
            self.prefetcher.kick()
        await self._hang_up(call)
        try:
            for turn in lesson.transcript.flush():
                self.observer.turn(turn)
        except Exception:
            log.exception("could not close the last turns of lesson %s", lesson.session_id)
        if lesson.connected_at is None:
            # Never connected: nothing was said, nothing to keep.
            if self.state is State.CONNECTING and self._running:
                self._set_state(State.IDLE, "lesson cancelled before it started")
            return
        record = self._final_record(lesson, reason)
        self.store.drop_checkpoint(lesson.session_id)
        try:
            await self.store.save(record)
        except StoreError as exc:
            self._hold_unsaved(record, exc)
            return
        log.info("lesson %s saved (%s, %d turns)", lesson.session_id, record["end_reason"], len(record["turns"]),
                 extra={"SESSION_ID": lesson.session_id, "END_REASON": record["end_reason"]})
        self._lesson_kept(record)
        await self._apply_retention()
        if self.state is State.ERROR and self._running:  # the error stays shown a moment, then idle
            self.timers.later(ERROR_SHOWN_S, lambda: self.post(_ErrorShown()), key="error_shown")
        elif self.state is not State.IDLE and self._running:
            self._set_state(State.IDLE, "ready")
        elif not self._running:
            self._show(State.IDLE, "stopped")

    def _reset_lesson_flags(self) -> None:
        self._resuming = None
        self._reset_call_flags()
        self.timers.cancel_lesson()

    def _reset_call_flags(self) -> None:
        """What belongs to one call (a resumed lesson gets a fresh set with its new call)."""
        if self._pump_task is not None:
            self._pump_task.cancel()
            self._pump_task = None
        self._tutor_audible = False
        self._tutor_speaking_hint = False
        self._tutor_speaking = False
        self._listening = False
        self._ending_reason = None
        self.gate.set_tutor_audible(False)
        self._init_call_state()

    def _init_call_state(self) -> None:
        """Per-call protocol state: what the server has confirmed, what is playing, what is active."""
        self._awaiting_session = False
        self._greeting_pending = False
        self._greeting_event_id: str | None = None
        self._greeting_response_id: str | None = None
        self._greeting_retried = False
        self._active_response: str | None = None
        self._response_items: dict[str, str] = {}
        self._response_audio_ms: dict[str, float] = {}
        self._playing_item: tuple[str, str | None] | None = None
        self._playing_audible_at: float | None = None
        self._audible_since: float | None = None
        self._speech_started_ms: dict[str, int] = {}
        self._held_samples = 0

    async def _hang_up(self, call: RealtimeCall | None) -> None:
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

    def _final_record(self, lesson: Lesson, reason: str) -> dict[str, Any]:
        """The lesson's record; if building it fails (a bug), the turns are still kept."""
        try:
            return lesson.to_record(reason)
        except Exception:
            log.exception("could not build the record of lesson %s; keeping a minimal one", lesson.session_id)
            record = Lesson(kiosk_id=lesson.kiosk_id, session_id=lesson.session_id).to_record(reason)
            with contextlib.suppress(Exception):
                record["turns"] = lesson.transcript.to_records()
            record["errors"] = [{"code": "internal", "message": "record rebuilt after an internal error",
                                 "at": record["ended_at"]}]
            return record

    def _hold_unsaved(self, record: dict[str, Any], exc: Exception) -> None:
        """The disk refused a finished lesson: keep it in memory, show the error, retry later."""
        log.error("the lesson could not be saved (kept in memory, retrying every %.0f s): %s",
                  self.save_retry_s, exc, extra={"SESSION_ID": record["session_id"]})
        self.unsaved.hold(record)
        self._remember(record)
        self.timers.later(self.save_retry_s, lambda: self.post(_RetrySave()), key="retry_save")
        if self._running:
            if self.state is not State.ERROR:
                self._set_state(State.ERROR, f"cannot save lessons: {exc}")
            self.timers.later(ERROR_SHOWN_S, lambda: self.post(_ErrorShown()), key="error_shown")
        else:
            self._show(State.ERROR, f"cannot save lessons: {exc}")

    def _lesson_kept(self, record: dict[str, Any]) -> None:
        self._remember(record)
        self._queue_for_sync(record)

    def _queue_for_sync(self, record: dict[str, Any]) -> None:
        """A lesson is on disk: count it for the syncer and wake it (the first attempt is reported)."""
        self.syncer.waiting += 1  # corrected by the syncer's next look at the store
        if len(self._awaiting_first_sync) < 100:
            self._awaiting_first_sync[record["session_id"]] = record
        self.syncer.kick()

    def _remember(self, record: dict[str, Any]) -> None:
        self.lessons_saved_count += 1
        self.lessons_saved.append({"session_id": record["session_id"], "ended_at": record["ended_at"],
                                   "end_reason": record["end_reason"], "turns": len(record["turns"])})

    def _sync_attempted(self, session_id: str, synced: bool) -> None:
        record = self._awaiting_first_sync.pop(session_id, None)
        if record is not None:
            self.observer.lesson_saved(record, synced)

    async def _retry_unsaved(self) -> bool:
        """Try again to write lessons the disk refused; True when all are written, else retried later."""
        if await self.unsaved.write(self._queue_for_sync):
            return True
        if self._running:
            self.timers.later(self.save_retry_s, lambda: self.post(_RetrySave()), key="retry_save")
        return False

    async def _apply_retention(self) -> None:
        settings = self.config.kiosk
        try:
            await self.store.run("apply_retention", settings.keep_synced_days,
                                 settings.max_stored_lessons)
        except StoreError as exc:
            log.error("retention: %s", exc)

    def _checkpoint(self, lesson: Lesson) -> None:
        """Keep the lesson so far on disk: a power cut loses at most the turn being spoken.

        Queued to the store thread (never waits for the disk on the loop that paces the audio)."""
        try:
            self.store.checkpoint_soon(lesson.to_record("interrupted"))
        except Exception:
            log.exception("checkpoint failed (the lesson continues, kept in memory)")

    # -- helpers -----------------------------------------------------------------------------

    def _set_state(self, state: State, detail: str) -> None:
        check_transition(self.state, state)
        if state is self.state:
            return
        previous = self.state
        self._show(state, detail)
        if state is State.CONNECTED:
            self._cue(Cue.CONNECTED)
        elif state is State.ERROR:
            self._cue(Cue.ERROR)
        elif state is State.IDLE and previous in (State.CONNECTED, State.DISCONNECTED):
            self._cue(Cue.ENDED)

    def _cue(self, cue: Cue) -> None:
        if self._earcons is not None:
            self.speaker.write(self._earcons[cue])

    def _show(self, state: State, detail: str) -> None:
        self.state = state
        if state is State.ERROR:
            self.last_error = detail
        # Upper-case extras become journal fields: journalctl -u stella-kiosk STATE=error
        session_id = self.lesson.session_id if self.lesson is not None else ""
        log.info("state: %s (%s)", state.value, detail, extra={"STATE": state.value, "SESSION_ID": session_id})
        if self.leds is not None:
            self.leds.show(state)
        self.notifier.status(f"{state.value}: {detail}")
        self.observer.state_changed(state, detail)

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.companion.aclose()
