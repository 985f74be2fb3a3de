"""The speaker as the kiosk core sees it (:class:`~appliance.core.ports.Speaker`): cues, the call's audio
drained by a :class:`~appliance.audio.speaker.SpeakerPump`, and a way to cut the tutor off."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from appliance.audio.base import AudioSink
from appliance.audio.earcons import Earcons
from appliance.audio.meter import LevelMeter
from appliance.common.timeline import CallTimeline
from appliance.core.state import Cue

log = logging.getLogger(__name__)


class SpeakerLink:
    def __init__(self, sink: AudioSink, *, volume: int = 100, cues: bool = True,
                 meter: LevelMeter | None = None) -> None:
        self.sink = sink
        self.meter = meter
        self.volume = volume
        self._earcons = Earcons(sink.sample_rate) if cues else None
        self._task: asyncio.Task[None] | None = None
        self.pump: Any = None

    def cue(self, cue: Cue) -> None:
        if self._earcons is not None:
            self.sink.write(self._earcons[cue])

    def play(self, track: Any, on_audible: Callable[[bool, float], None],
             timeline: CallTimeline | None = None) -> None:
        """Drain the call's track into the speaker (one pump per call)."""
        from appliance.audio.speaker import SpeakerPump

        self.stop()
        pump = SpeakerPump(self.sink, volume=self.volume, timeline=timeline, meter=self.meter,
                           on_audible=lambda audible: on_audible(audible, time.monotonic()))
        self.pump = pump
        self._task = asyncio.create_task(self._run_pump(pump, track), name="speaker")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def clear(self) -> None:
        clear = getattr(self.sink, "clear", None)  # a real speaker may hold ~1 s of queue
        if callable(clear):
            clear()

    @property
    def backlog_s(self) -> float:
        try:
            return max(0.0, float(getattr(self.sink, "buffered_s", 0.0)))
        except (TypeError, ValueError):
            return 0.0

    @staticmethod
    async def _run_pump(pump: Any, track: Any) -> None:
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
