"""How a call is opened: the kiosk core's :class:`~appliance.core.ports.CallOpener`.

The lesson's materials (plan and ephemeral token) come prefetched when the kiosk was idle, else from
the companion now; a resumed lesson keeps its plan and gets a fresh token whose instructions carry
the conversation so far. A token the Realtime server refuses with 401 (expired or revoked, a server
restarted) is replaced by a fresh one once, so the learner never has to press again for it.
The whole open is bounded: a companion that drips its answer must not keep the kiosk connecting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from appliance.call import events
from appliance.call.webrtc import CallError, RealtimeCall
from appliance.common import timeline as stages
from appliance.common.supervise import supervise
from appliance.config import Config
from appliance.contract.voices import DEFAULT_VOICE, VOICES
from appliance.core.lesson import Lesson
from appliance.core.ports import CallHandlers, OpenedCall, OpenFailed
from appliance.core.resume import resume_instructions
from appliance.uplink.client import CompanionClient, CompanionError, LessonPlan, RealtimeToken
from appliance.uplink.prefetch import Prefetcher

log = logging.getLogger(__name__)

CallFactory = Callable[..., RealtimeCall]


def _tapped(supplier: Callable[[int], np.ndarray],
            tap: Callable[[np.ndarray], np.ndarray]) -> Callable[[int], np.ndarray]:
    def frames(n: int) -> np.ndarray:
        return tap(supplier(n))
    return frames


class CompanionCallOpener:
    def __init__(self, config: Config, companion: CompanionClient, call_factory: CallFactory = RealtimeCall,
                 warmed_up: asyncio.Event | None = None,
                 mic_tap: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.config = config
        self.mic_tap = mic_tap
        """Sees each frame the call's microphone sends, after the gate (the status light's level meter)."""
        self.companion = companion
        self.call_factory = call_factory
        self.prefetcher = Prefetcher(companion, config.lesson.level) if config.companion.prefetch else None
        self._prefetch_task: asyncio.Task[None] | None = None
        self.warmed_up = warmed_up
        """Set once the call stack is imported (the loop never waits on the import lock of a warm-up thread)."""

    async def aclose(self) -> None:
        await self.companion.aclose()

    async def start(self, post: Callable[[object], None]) -> None:
        """As a kiosk service: keep the next lesson's plan and token ready while idle."""
        if self.prefetcher is not None:
            self._prefetch_task = asyncio.create_task(supervise("prefetch", self.prefetcher.run), name="prefetch")

    async def stop(self) -> None:
        if self._prefetch_task is not None:
            self._prefetch_task.cancel()
            await asyncio.gather(self._prefetch_task, return_exceptions=True)

    def lesson_over(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.kick()

    async def open(self, lesson: Lesson, handlers: CallHandlers, *, resume: bool) -> OpenedCall:
        settings = self.config
        budget_s = 2 * settings.companion.timeout_s + settings.realtime.connect_timeout_s + 5
        try:
            async with asyncio.timeout(budget_s):
                return await self._open(lesson, handlers, resume)
        except TimeoutError:
            raise OpenFailed("timeout", f"the lesson did not start within {budget_s:.0f} s") from None
        except CompanionError as exc:
            raise OpenFailed(f"companion_{exc.code}", str(exc.message), exc.retryable) from None
        except CallError as exc:
            raise OpenFailed(exc.code, exc.message, exc.retryable) from None

    async def _open(self, lesson: Lesson, handlers: CallHandlers, resume: bool) -> OpenedCall:
        prefetched = False
        if resume:
            token = await self.companion.token(plan_id=lesson.plan_id)
            instructions = resume_instructions(token.prompt, lesson.transcript.to_records())
        else:
            plan, token, prefetched = await self._materials()
            lesson.plan_id = plan.plan_id
            lesson.targets = [t.to_record() for t in plan.targets]
            lesson.model = token.model
            instructions = token.prompt
        lesson.timeline.mark(stages.MATERIALS_READY)
        if self.warmed_up is not None:
            await self.warmed_up.wait()
        try:
            call = await self._call(lesson, token, handlers)
        except CallError as exc:
            if exc.status != 401 or not prefetched:
                raise
            log.warning("the prefetched token was refused (%s); trying once with a fresh one", exc.message)
            token = await self.companion.token(plan_id=lesson.plan_id)
            call = await self._call(lesson, token, handlers)
        lesson.transcript.transcribed = token.transcription_model is not None
        return OpenedCall(call, self._session_config(token, instructions, lesson))

    async def _call(self, lesson: Lesson, token: RealtimeToken, handlers: CallHandlers) -> Any:
        realtime = self.config.realtime
        mic_frames = handlers.mic_frames if self.mic_tap is None else _tapped(handlers.mic_frames, self.mic_tap)
        call = self.call_factory(
            realtime.base_url, token.token, mic_frames, on_event=handlers.on_event,
            on_remote_track=handlers.on_remote_track, on_closed=handlers.on_closed,
            ice_servers=realtime.ice_servers, consent_fix=realtime.ice_lite_consent_fix,
            mic_sample_rate=self.config.audio.sample_rate, timeline=lesson.timeline)
        try:
            await call.open(realtime.connect_timeout_s)
        except BaseException:
            await _close_quietly(call)
            raise
        return call

    async def _materials(self) -> tuple[LessonPlan, RealtimeToken, bool]:
        """The prefetched plan + token when fresh (no companion round trip), else fetched now."""
        if self.prefetcher is not None:
            # A pair fetched while idle, or the one being fetched right now (never a second one).
            ready = await self.prefetcher.take_or_wait(self.config.companion.timeout_s)
            if ready is not None:
                return ready[0], ready[1], True
        plan = await self.companion.plan(level=self.config.lesson.level)
        token = await self.companion.token(plan_id=plan.plan_id)
        return plan, token, False

    def _session_config(self, token: RealtimeToken, instructions: str, lesson: Lesson) -> dict[str, Any]:
        """The session the kiosk sends when the channel opens: the token's own config (a server that
        applied the token gets the same again), with manual turns in hold mode and the lesson's voice."""
        detection = None if self.config.button.mode == "hold" else {"type": "server_vad",
                                                                     "silence_duration_ms": token.silence_ms}
        lesson.voice = self._voice(token)
        session = events.session_config(instructions, lesson.voice, transcription_model=token.transcription_model,
                                        turn_detection=detection, noise_reduction="far_field")
        if token.transcription_model is None:  # the companion found no transcription model: say so again
            session["audio"]["input"]["transcription"] = None
        if not instructions:
            session.pop("instructions")  # never blank out instructions the token did carry
        return session

    def _voice(self, token: RealtimeToken) -> str:
        """The kiosk's own voice when its config names one (whoever set up this kiosk chose it for this
        room), else the companion's (its voice for the lesson's level, else its default), else the default.
        A name outside the GA list (a misconfigured or newer companion) is replaced by the default: the
        model would refuse it, and the lesson record must carry a voice the companion accepts."""
        chosen = self.config.lesson.voice or token.voice
        if chosen and chosen not in VOICES:
            log.warning("the companion named the voice %r, which is not a Realtime voice; using %s",
                        chosen[:40], DEFAULT_VOICE)
        return chosen if chosen in VOICES else DEFAULT_VOICE


async def _close_quietly(call: Any) -> None:
    try:
        async with asyncio.timeout(5):
            await call.close()
    except Exception:
        log.exception("error while closing a call that did not open")
