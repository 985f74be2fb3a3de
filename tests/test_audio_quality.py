"""Audio you can hear: a pure tone through the kiosk's real audio paths must come out pure.

The tutor's audio reaches the speaker as 20 ms frames; the microphone arrives in PortAudio periods.
Any resampling on the way must be one continuous filter over the stream. Resampling each chunk on
its own leaves a discontinuity at every chunk boundary (a buzz at 50 Hz and its harmonics), and
plain linear interpolation leaves images of the tone that fold back into the audible band. Both
are measured here on the real code paths (SpeakerPump and the PortAudio backend's ring buffers
and converters), with a scripted PortAudio standing in for the sound card:

* THD+N: everything that is not the tone (a least-squares fit of a sine at the tone's exact
  frequency), relative to the tone. A rate error shows here too (the fit drifts out of phase).
* Spectral purity: energy outside the tone's band in a windowed spectrum.
* Clicks: the largest second difference of the output against that of the fitted pure tone; a
  chunk-boundary step or kink multiplies it.
"""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from appliance.audio.pyaudio_backend import PyAudioSink, PyAudioSource
from appliance.audio.speaker import SpeakerPump
from tests.portaudio_helpers import usb_card_portaudio

TONE_HZ = 1000.0
LEVEL = 0.25
MAX_THD_N_DB = -70.0
"""Linear interpolation of a 1 kHz tone leaves images at about -55 to -65 dB; a windowed-sinc
resampler (swresample) reaches the int16 noise floor (about -85 dB at this level)."""
MAX_OUT_OF_BAND_DB = -70.0
MAX_CLICK_RATIO = 1.25
"""Largest |second difference| of the output over the pure tone's; a boundary step gives 3x or more."""


class ToneTrack(MediaStreamTrack):
    """A remote track that yields ``frames`` 20 ms frames of a sine (as fast as it is read), then ends."""

    kind = "audio"

    def __init__(self, rate: int, channels: int, frames: int = 50) -> None:
        super().__init__()
        self.rate, self.channels, self.left = rate, channels, frames
        self.n = rate // 50
        self.pts = 0

    async def recv(self) -> av.AudioFrame:
        if self.left == 0:
            self.stop()
            raise MediaStreamError
        self.left -= 1
        t = (self.pts + np.arange(self.n)) / self.rate
        mono = np.round(LEVEL * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
        layout = "mono" if self.channels == 1 else "stereo"
        frame = av.AudioFrame.from_ndarray(np.repeat(mono, self.channels).reshape(1, -1), format="s16",
                                           layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = self.rate, self.pts, fractions.Fraction(1, self.rate)
        self.pts += self.n
        await asyncio.sleep(0)
        return frame


class CaptureSink:
    """A speaker that keeps what it is given (at its own rate)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.chunks: list[np.ndarray] = []

    def write(self, samples: np.ndarray) -> None:
        self.chunks.append(np.array(samples, dtype=np.int16))

    @property
    def samples(self) -> np.ndarray:
        return np.concatenate(self.chunks)


def tone_quality(samples: np.ndarray, rate: int, trim_s: float = 0.05) -> tuple[float, float, float]:
    """(THD+N dB, out-of-band energy dB, click ratio) of a 1 kHz tone; the ends are trimmed (filter warm-up)."""
    trim = int(trim_s * rate)
    x = samples[trim:len(samples) - trim].astype(np.float64)
    assert x.size > rate // 2, f"too little audio came out: {samples.size} samples"
    t = np.arange(x.size) / rate
    basis = np.stack([np.sin(2 * np.pi * TONE_HZ * t), np.cos(2 * np.pi * TONE_HZ * t), np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    fit = basis @ coef
    assert np.hypot(coef[0], coef[1]) == pytest.approx(LEVEL * 32767, rel=0.05), "the tone lost its level"
    thd_n = 20 * np.log10(np.sqrt(np.mean((x - fit) ** 2)) / np.sqrt(np.mean(fit ** 2)))
    window = np.blackman(x.size)
    power = np.abs(np.fft.rfft(x * window)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / rate)
    band = np.abs(freqs - TONE_HZ) <= 100
    out_of_band = 10 * np.log10(power[~band].sum() / power[band].sum())
    clicks = np.abs(np.diff(x, 2)).max() / np.abs(np.diff(fit, 2)).max()
    return float(thd_n), float(out_of_band), float(clicks)


def assert_clean(samples: np.ndarray, rate: int) -> None:
    thd_n, out_of_band, clicks = tone_quality(samples, rate)
    summary = f"THD+N {thd_n:.1f} dB, out of band {out_of_band:.1f} dB, clicks x{clicks:.2f}"
    assert thd_n <= MAX_THD_N_DB, summary
    assert out_of_band <= MAX_OUT_OF_BAND_DB, summary
    assert clicks <= MAX_CLICK_RATIO, summary


@pytest.mark.parametrize(("track_rate", "channels", "sink_rate"), [
    (24000, 1, 44100),  # the Realtime API's 24 kHz, 20 ms frames, to a 44.1 kHz speaker
    (24000, 1, 48000),
    (48000, 2, 44100),  # what aiortc's Opus decoder really hands over: 48 kHz stereo
])
async def test_tone_through_the_speaker_pump_comes_out_pure(track_rate: int, channels: int, sink_rate: int) -> None:
    """Guards against resampling each frame on its own (the speaker path did until now: THD+N about
    -50 dB and clicks at every 20 ms boundary, measured on the earlier code: this test failed)."""
    sink = CaptureSink(sink_rate)
    pump = SpeakerPump(sink)  # type: ignore[arg-type]
    await asyncio.wait_for(pump.run(ToneTrack(track_rate, channels)), 10)
    assert pump.frames == 50
    out = sink.samples
    assert out.size == pytest.approx(sink_rate, abs=sink_rate // 50)  # one second in, one second out
    assert_clean(out, sink_rate)


async def test_tone_through_the_pump_and_a_44k1_sound_card_comes_out_pure() -> None:
    """The whole speaker path: track → pump → PyAudioSink (asked for 48 kHz mono; the USB card only
    runs 44.1 kHz stereo) → the bytes PortAudio's callback hands to the card. Guards against a second,
    linear resampling in the sink (images at about -60 dB before)."""
    pa = usb_card_portaudio()
    sink = PyAudioSink("USB", sample_rate=48000, pa_factory=lambda: pa)
    await sink.start()
    try:
        (stream,) = pa.streams
        assert (sink.device_rate, sink.channels) == (44100, 2)
        pump = SpeakerPump(sink)
        await asyncio.wait_for(pump.run(ToneTrack(48000, 2)), 10)
        played = []
        while len(sink.buffer) >= stream.frames:
            played.append(np.frombuffer(stream.run_callback(), dtype="<i2").reshape(-1, 2))
        both = np.concatenate(played)
        assert np.array_equal(both[:, 0], both[:, 1])
        assert_clean(both[:, 0], 44100)
    finally:
        await sink.close()


async def test_tone_through_the_microphone_path_comes_out_pure() -> None:
    """The microphone path: a 44.1 kHz stereo card, read by the call's track at 48 kHz in 20 ms
    frames while PortAudio delivers 20 ms periods. The capture side already resampled as one stream
    (no chunk clicks) but by linear interpolation (images at about -65 dB); this guards both."""
    pa = usb_card_portaudio()
    mic = PyAudioSource("USB", sample_rate=48000, pa_factory=lambda: pa)
    await mic.start()
    try:
        (stream,) = pa.streams
        assert (mic.device_rate, mic.channels) == (44100, 2)
        t = np.arange(44100) / 44100
        signal = np.round(LEVEL * 32767 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)
        stereo = np.repeat(signal, 2)
        reads = []
        for i in range(0, signal.size, stream.frames):
            stream.run_callback(stereo[2 * i:2 * (i + stream.frames)].astype("<i2").tobytes())
            reads.append(mic.read(960))
        audio = np.concatenate(reads)
        start = int(np.flatnonzero(audio)[0])  # skip the silence of the first underrun
        assert_clean(audio[start:], 48000)
    finally:
        await mic.close()
