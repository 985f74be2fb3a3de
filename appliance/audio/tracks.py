"""aiortc media tracks that pace themselves in wall-clock time.

aiortc pulls frames from a track as fast as ``recv()`` returns them, so an outgoing track must
sleep until each 20 ms frame is due (monotonic ``pts``, ``time_base = 1/rate``); when the source
has nothing it sends silence so the far end keeps a steady stream.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections.abc import Callable
from typing import cast

import av
import numpy as np
import numpy.typing as npt
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from appliance.audio.dsp import to_mono

FRAME_MS = 20

#: A frame supplier: called with a sample count, returns that many int16 mono samples.
FrameSupplier = Callable[[int], np.ndarray]


class FramePacer:
    """Wall-clock pacing of 20 ms frames: ``wait()`` returns when the next frame is due.

    Why its own clock: aiortc pulls from a track as fast as ``recv()`` returns; a track that did
    not sleep would send seconds of audio in a burst. After a long stall of the loop the clock
    restarts rather than bursting to catch up.
    """

    def __init__(self, sample_rate: int, samples_per_frame: int) -> None:
        self.sample_rate = sample_rate
        self.samples_per_frame = samples_per_frame
        self.pts = 0
        self._start: float | None = None

    async def wait(self) -> int:
        """Sleep until the next frame is due; its pts (in samples). Call ``advance()`` once it is sent."""
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            due = self._start + self.pts / self.sample_rate
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > 0.5:
                # The loop was blocked for a long time: restart the clock rather than burst.
                self._start = now - self.pts / self.sample_rate
        return self.pts

    def advance(self) -> None:
        self.pts += self.samples_per_frame


def fit(samples: np.ndarray, n: int) -> npt.NDArray[np.int16]:
    """Exactly ``n`` int16 samples: a short read is padded with silence, a long one cut."""
    if samples.size != n:
        padded = np.zeros(n, dtype=np.int16)
        padded[: min(samples.size, n)] = samples[:n]
        return padded
    return cast("npt.NDArray[np.int16]", samples.astype(np.int16, copy=False))


class PacedAudioTrack(MediaStreamTrack):
    """Outgoing mono int16 audio, one 20 ms frame per 20 ms of wall-clock time (aiortc encodes it)."""

    kind = "audio"

    def __init__(self, supplier: FrameSupplier, sample_rate: int = 48000) -> None:
        super().__init__()
        self._supplier = supplier
        self.sample_rate = sample_rate
        self.samples_per_frame = sample_rate * FRAME_MS // 1000
        self._time_base = fractions.Fraction(1, sample_rate)
        self._pacer = FramePacer(sample_rate, self.samples_per_frame)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        pts = await self._pacer.wait()
        samples = fit(self._supplier(self.samples_per_frame), self.samples_per_frame)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = pts
        frame.time_base = self._time_base
        self._pacer.advance()
        return frame


OPUS_RATES = (24000, 48000)
"""Input rates the microphone's own Opus encoder takes as they are. libopus also takes 8, 12 and 16 kHz, but
there it codes a narrower band than aiortc's path (which resamples to 48 kHz first): −44 dB THD+N on a 1 kHz
tone at 16 kHz against aiortc's −48 dB, so those rates keep aiortc's encoder."""
MIC_OPUS_BITRATE = 64000
"""Bits per second of the microphone's Opus stream. Why this many for mono speech: from 64 kbit/s libopus codes
the waveform itself (CELT), as faithfully as aiortc's own 96 kbit/s stereo stream; under it, it models
speech (SILK), which a listener cannot tell apart but a recogniser or a tone measurement can (−18 dB
THD+N on a 1 kHz tone at 32 kbit/s against −48 dB)."""


class OpusMicTrack(MediaStreamTrack):
    """Outgoing microphone audio handed to aiortc already encoded: mono Opus, one packet per 20 ms.

    Why not raw frames: for a raw frame aiortc computes an audio level in a Python loop over every
    sample, then hands the frame to a worker thread that resamples it to stereo and encodes it at
    96 kbit/s, and waits for the thread (two hand-offs, 50 times a second). Here the frame is
    encoded in place (mono, ~0.1 ms here), and while the microphone is silent (the half-duplex
    gate closed, a scripted learner between clips) one packet of encoded silence is sent again
    and again without encoding at all. aiortc sends an ``av.Packet`` as it is (``pack``).
    """

    kind = "audio"

    def __init__(self, supplier: FrameSupplier, sample_rate: int = 48000, bitrate: int = MIC_OPUS_BITRATE) -> None:
        super().__init__()
        self._supplier = supplier
        self.sample_rate = sample_rate
        self.samples_per_frame = sample_rate * FRAME_MS // 1000
        self._time_base = fractions.Fraction(1, sample_rate)
        self._pacer = FramePacer(sample_rate, self.samples_per_frame)
        self._encoder = _opus_encoder(sample_rate, bitrate)
        self.silence = _encoded_silence(sample_rate, bitrate, self.samples_per_frame)
        self.encoded_frames = 0
        self.silent_frames = 0
        self._sent_silence = False

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        pts = await self._pacer.wait()
        samples = fit(self._supplier(self.samples_per_frame), self.samples_per_frame)
        payload = self._encode(samples) if samples.any() else None
        if payload is None:
            self.silent_frames += 1
            self._sent_silence = True
            payload = self.silence
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = self._time_base
        self._pacer.advance()
        return packet

    def _encode(self, samples: npt.NDArray[np.int16]) -> bytes | None:
        if self._sent_silence:
            # The far end's decoder has followed the cached silence packets; bring this encoder to the same
            # settled-on-silence state first, or it predicts from the sound before the silence and the
            # first words after it come out garbled (a short "stop" was then not understood).
            self._sent_silence = False
            for _ in range(SILENCE_SETTLE_FRAMES):
                self._encoder.encode(self._frame(np.zeros(self.samples_per_frame, np.int16)))
        packets = self._encoder.encode(self._frame(samples))
        if not packets:
            return None
        self.encoded_frames += 1
        return bytes(packets[-1])

    def _frame(self, samples: npt.NDArray[np.int16]) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        return frame


SILENCE_SETTLE_FRAMES = 5
"""Frames of silence after which an Opus encoder has settled on it (its energy prediction decayed)."""


def microphone_track(supplier: FrameSupplier, sample_rate: int) -> MediaStreamTrack:
    """The cheapest outgoing track for the microphone's rate: ready-encoded Opus at 24 and 48 kHz;
    otherwise raw frames that aiortc resamples and encodes (see ``OPUS_RATES``)."""
    if sample_rate in OPUS_RATES:
        return OpusMicTrack(supplier, sample_rate)
    return PacedAudioTrack(supplier, sample_rate)


def _opus_encoder(sample_rate: int, bitrate: int) -> av.audio.codeccontext.AudioCodecContext:
    codec = av.CodecContext.create("libopus", "w")
    codec.format = "s16"
    codec.layout = "mono"
    codec.sample_rate = sample_rate
    codec.bit_rate = bitrate
    codec.time_base = fractions.Fraction(1, sample_rate)
    codec.options = {"application": "voip"}
    return codec


def _encoded_silence(sample_rate: int, bitrate: int, samples_per_frame: int) -> bytes:
    """One Opus packet of silence from an encoder that has settled on it (its first packets carry ramp-up)."""
    encoder = _opus_encoder(sample_rate, bitrate)
    packet = b""
    for _ in range(SILENCE_SETTLE_FRAMES):
        frame = av.AudioFrame.from_ndarray(np.zeros((1, samples_per_frame), np.int16), format="s16", layout="mono")
        frame.sample_rate = sample_rate
        packets = encoder.encode(frame)
        if packets:
            packet = bytes(packets[-1])
    return packet


def frame_to_mono(frame: av.AudioFrame) -> np.ndarray:
    """Decode a received aiortc frame (s16, usually stereo 48 kHz interleaved) to mono int16."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    data = data.reshape(channels, -1).T.reshape(-1) if frame.format.is_planar else data.reshape(-1)
    if data.dtype != np.int16:
        data = np.clip(data * 32767.0, -32768, 32767).astype(np.int16)
    return to_mono(data, channels)


class FrameConverter:
    """Received frames (any format, layout, rate) to mono int16 at one rate, as one continuous stream.

    Why one object per stream: downmix and resampling happen in one libswresample call whose
    filter state carries over from frame to frame, so 20 ms frame boundaries are inaudible (a
    stateless per-frame resample clicks at every boundary: a 50 Hz buzz). A change of the
    incoming format starts a new filter (a rare glitch is better than a crash).
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: av.AudioResampler | None = None
        self._input: tuple[str, str, int] | None = None

    def convert(self, frame: av.AudioFrame) -> np.ndarray:
        """The frame's samples as mono int16 at ``rate`` (a few samples fewer at first: filter delay)."""
        key = (frame.format.name, frame.layout.name, frame.sample_rate)
        if key[0] == "s16" and key[2] == self.rate and key[1] in ("mono", "stereo"):
            # Same rate: nothing to filter, so no filter state to keep; a downmix in numpy costs a
            # third of a pass through swresample (aiortc hands over 48 kHz stereo, the usual sink rate).
            self._resampler, self._input = None, key
            data = cast("npt.NDArray[np.int16]", frame.to_ndarray().reshape(-1))  # s16: int16 samples
            if key[1] == "mono":
                return data
            return ((data[0::2].astype(np.int32) + data[1::2]) >> 1).astype(np.int16)
        fresh = self._resampler is None or key != self._input
        if fresh:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=self.rate)
            self._input = key
        assert self._resampler is not None
        frame.pts = None  # the filter keeps its own time; a jump in the sender's pts must not reset it
        out = self._resampler.resample(frame)
        if len(out) == 1:
            samples = out[0].to_ndarray().reshape(-1)
        else:
            samples = np.concatenate([f.to_ndarray().reshape(-1) for f in out]) if out else np.zeros(0, np.int16)
        if fresh:  # leading silence for the filter's delay: every frame in gives exactly one frame out
            short = int(frame.samples * self.rate / key[2]) - samples.size
            if short > 0:
                samples = np.concatenate([np.zeros(short, dtype=np.int16), samples])
        return samples
