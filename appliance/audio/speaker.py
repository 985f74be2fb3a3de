"""Drain the tutor's WebRTC audio track into the speaker and tell when the tutor is audible.

Why measure audibility here: the kiosk gates its microphone (half duplex) and times "press → first
tutor audio" on what the speaker actually plays. Events are only hints: some servers keep the
track running with silence, send ``response.done`` seconds before the audio ends, or never send
``output_audio_buffer.*``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from appliance.audio.base import AudioSink
from appliance.audio.dsp import apply_volume, resample, rms_dbfs
from appliance.audio.tracks import frame_to_mono

AUDIBLE_DBFS = -45.0
QUIET_HANGOVER_S = 0.3


class SpeakerPump:
    """Reads every frame of a remote track (its queue is unbounded) and plays it."""

    def __init__(self, sink: AudioSink, volume: int = 100,
                 on_audible: Callable[[bool], None] | None = None,
                 threshold_dbfs: float = AUDIBLE_DBFS, hangover_s: float = QUIET_HANGOVER_S) -> None:
        self.sink = sink
        self.volume = volume
        self.on_audible = on_audible
        self.threshold_dbfs = threshold_dbfs
        self.hangover_s = hangover_s
        self.audible = False
        self.first_audible_at: float | None = None
        self.frames = 0
        self.audible_s = 0.0
        self._quiet_s = 0.0

    async def run(self, track: MediaStreamTrack) -> None:
        """Until the track ends (call closed) or the task is cancelled."""
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            samples = frame_to_mono(frame)
            rate = frame.sample_rate
            self.frames += 1
            self._update(samples, len(samples) / rate)
            out = resample(samples, rate, self.sink.sample_rate)
            self.sink.write(apply_volume(out, self.volume))
        if self.audible:
            self._set(False)

    def _update(self, samples, seconds: float) -> None:
        loud = rms_dbfs(samples) > self.threshold_dbfs
        if loud:
            self._quiet_s = 0.0
            self.audible_s += seconds
            if not self.audible:
                if self.first_audible_at is None:
                    self.first_audible_at = time.monotonic()
                self._set(True)
        elif self.audible:
            self._quiet_s += seconds
            if self._quiet_s >= self.hangover_s:
                self._set(False)

    def _set(self, audible: bool) -> None:
        self.audible = audible
        if self.on_audible is not None:
            self.on_audible(audible)
