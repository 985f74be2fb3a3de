"""Drain the tutor's WebRTC audio track into the speaker and tell when the tutor is audible.

Why measure audibility here: the kiosk gates its microphone (half duplex) and times "press → first
tutor audio" on what the speaker actually plays. Events are only hints: some servers keep the
track running with silence, send ``response.done`` seconds before the audio ends, or never send
``output_audio_buffer.*``; others stop sending packets altogether when the tutor is done, so
silence is also inferred from frames that stop arriving.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import av
import numpy as np

from appliance.audio.base import AudioSink
from appliance.audio.dsp import apply_volume, rms_dbfs
from appliance.audio.meter import LevelMeter
from appliance.common import timeline as stages
from appliance.common.timeline import CallTimeline

if TYPE_CHECKING:  # aiortc and PyAV load with the first call, not with the daemon (see realtime.call.warm_up)
    import av
    from aiortc.mediastreams import MediaStreamTrack

AUDIBLE_DBFS = -45.0
QUIET_HANGOVER_S = 0.3


class SpeakerPump:
    """Reads every frame of a remote track (its queue is unbounded) and plays it.

    ``on_audible(True)`` fires on the first frame louder than ``threshold_dbfs``;
    ``on_audible(False)`` after ``hangover_s`` of quieter frames (or of no frames at all), plus
    whatever the sink still holds when it reports ``buffered_s``. Callbacks run on the event loop.
    """

    def __init__(self, sink: AudioSink, volume: int = 100,
                 on_audible: Callable[[bool], None] | None = None,
                 threshold_dbfs: float = AUDIBLE_DBFS, hangover_s: float = QUIET_HANGOVER_S,
                 timeline: CallTimeline | None = None, meter: LevelMeter | None = None) -> None:
        self.sink = sink
        self.meter = meter
        """Shown the level of each frame while the tutor is audible (it keeps at most 25 a second)."""
        self.timeline = timeline
        self.volume = volume
        self.on_audible = on_audible
        self.threshold_dbfs = threshold_dbfs
        self.hangover_s = hangover_s
        self.audible = False
        #: time.monotonic() when the first audible frame will leave the speaker (None: not yet).
        self.first_audible_at: float | None = None
        self.frames = 0
        self.seconds_in = 0.0
        self.audible_s = 0.0
        self.last_level_dbfs = -120.0
        self._quiet_s = 0.0
        self._quiet_timer: asyncio.TimerHandle | None = None
        self._silence_watch: asyncio.TimerHandle | None = None
        self._last_frame_at = 0.0
        from appliance.audio.tracks import FrameConverter

        self._converter = FrameConverter(sink.sample_rate)

    async def run(self, track: MediaStreamTrack) -> None:
        """Until the track ends (call closed) or the task is cancelled; ends inaudible."""
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                try:
                    frame = await track.recv()
                except MediaStreamError:
                    break
                if not isinstance(frame, av.AudioFrame):  # an audio track yields audio frames
                    continue
                self._play(frame)
                self._watch_for_silence()
        finally:
            self._cancel_silence_watch()
            self._cancel_quiet_timer()
            if self.audible:
                self._set(False)

    def _watch_for_silence(self) -> None:
        """While audible, frames that stop arriving count as silence after the hangover.

        Why a time stamp per frame and one timer per hangover, not a timer re-armed per frame or a
        timeout on each ``recv``: a timeout needs the read wrapped in a task plus a waiter (two extra
        loop passes, 50 times a second), re-arming a timer costs a heap push and a cancel per frame;
        storing a float costs nothing, and the one timer, when it fires, looks at when the last frame
        came and sleeps again for the rest of the hangover if one came since.
        """
        loop = asyncio.get_running_loop()
        self._last_frame_at = loop.time()
        if self.audible and self._quiet_timer is None and self._silence_watch is None:
            self._silence_watch = loop.call_at(self._last_frame_at + self.hangover_s, self._no_frames)

    def _no_frames(self) -> None:
        self._silence_watch = None
        if not self.audible or self._quiet_timer is not None:
            return
        loop = asyncio.get_running_loop()
        due = self._last_frame_at + self.hangover_s
        if loop.time() < due:  # a frame came since the timer was set: wait for the rest of the hangover
            self._silence_watch = loop.call_at(due, self._no_frames)
            return
        self._went_quiet()

    def _cancel_silence_watch(self) -> None:
        if self._silence_watch is not None:
            self._silence_watch.cancel()
            self._silence_watch = None

    def _play(self, frame: av.AudioFrame) -> None:
        """Downmix and resample in one continuous filter (never frame by frame), meter, and play."""
        self.frames += 1
        seconds = frame.samples / (frame.sample_rate or 48000)
        self.seconds_in += seconds
        if self._converter.rate != self.sink.sample_rate:  # the sink was reopened at another rate
            self._converter = type(self._converter)(self.sink.sample_rate)
        samples = self._converter.convert(frame)
        self._update(samples, seconds)
        self.sink.write(apply_volume(samples, self.volume))
        if self.timeline is not None:
            self.timeline.mark(stages.FIRST_FRAME)

    def _update(self, samples: np.ndarray, seconds: float) -> None:
        self.last_level_dbfs = rms_dbfs(samples)
        if self.last_level_dbfs > self.threshold_dbfs:
            self._quiet_s = 0.0
            self.audible_s += seconds
            self._cancel_quiet_timer()
            if not self.audible:
                if self.first_audible_at is None:
                    self.first_audible_at = time.monotonic() + self._sink_backlog_s()
                    if self.timeline is not None:
                        self.timeline.mark(stages.FIRST_AUDIBLE, at=self.first_audible_at)
                self._set(True)
        elif self.audible and self._quiet_timer is None:
            self._quiet_s += seconds
            if self._quiet_s >= self.hangover_s:
                self._went_quiet()
        if self.meter is not None:
            self.meter.played(self.last_level_dbfs, self.audible)

    def _went_quiet(self) -> None:
        """The track has been quiet for the hangover; the sink may still be playing its backlog."""
        backlog = self._sink_backlog_s()
        if backlog <= 0.02:
            self._set(False)
            return
        self._quiet_timer = asyncio.get_running_loop().call_later(backlog, self._backlog_played)

    def _backlog_played(self) -> None:
        self._quiet_timer = None
        if self.audible:
            self._set(False)

    def _cancel_quiet_timer(self) -> None:
        if self._quiet_timer is not None:
            self._quiet_timer.cancel()
            self._quiet_timer = None

    def _sink_backlog_s(self) -> float:
        """Audio the sink has queued but not played yet (0 for sinks that play at once)."""
        try:
            return max(0.0, float(getattr(self.sink, "buffered_s", 0.0)))
        except (TypeError, ValueError):
            return 0.0

    def _set(self, audible: bool) -> None:
        self.audible = audible
        self._quiet_s = 0.0
        if self.on_audible is not None:
            self.on_audible(audible)
