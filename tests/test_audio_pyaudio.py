"""The PortAudio backend: device choice, rate/channel negotiation, ring buffers and backlog control
against a scripted PortAudio, then real PortAudio through a private headless PulseAudio."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from appliance.audio.base import AudioDeviceError
from appliance.audio.devices import DeviceInfo, find_device, list_devices
from appliance.audio.dsp import StreamResampler, rms_dbfs
from appliance.audio.pyaudio_backend import PyAudioSink, PyAudioSource, RingBuffer
from appliance.audio.wav import read_wav
from tests.audio_helpers import PulseServer, espeak_wav, peak_hz, pulse, tone, voiced_seconds  # noqa: F401
from tests.portaudio_helpers import FakePyAudio, device, usb_card_portaudio

# -- device choice ------------------------------------------------------------------------------


def test_find_device_by_name_default_and_clear_error() -> None:
    devices = list_devices(usb_card_portaudio())
    assert [d.name.split(":")[0] for d in devices] == ["vc4-hdmi-0", "USB PnP Sound Device", "default"]
    assert devices[2].is_default_input and devices[2].host_api == "ALSA"
    assert find_device(devices, "usb", "input").index == 1  # case-insensitive substring
    assert find_device(devices, "Default", "output").index == 2  # PortAudio's default device
    assert find_device(devices, "hdmi", "output").index == 0
    with pytest.raises(AudioDeviceError) as info:
        find_device(devices, "hdmi", "input")  # HDMI cannot record
    message = str(info.value)
    assert "'hdmi'" in message and "'USB PnP Sound Device: Audio (hw:1,0)'" in message and "input_device" in message
    assert "vc4" not in message  # only devices that can record are offered


def test_default_without_a_default_device_falls_back_to_a_device_named_default() -> None:
    pa = FakePyAudio([device("USB mic", 1, 0), device("default", 2, 2)], {}, default_in=-1)
    assert find_device(list_devices(pa), "default", "input").name == "default"
    exact = [DeviceInfo(0, "pulse monitor", 2, 0, 44100.0), DeviceInfo(1, "pulse", 2, 0, 44100.0)]
    assert find_device(exact, "PULSE", "input").index == 1  # an exact name beats a longer one


def test_no_devices_at_all() -> None:
    assert list_devices(FakePyAudio([], {})) == []
    with pytest.raises(AudioDeviceError, match="none at all"):
        find_device([], "default", "output")


async def test_unknown_device_error_lists_devices_and_releases_portaudio() -> None:
    pa = usb_card_portaudio()
    with pytest.raises(AudioDeviceError, match="no input device matches 'seeed'") as info:
        await PyAudioSource("seeed", pa_factory=lambda: pa).start()
    assert "USB PnP" in str(info.value) and pa.terminated


async def test_device_that_cannot_open_is_a_clear_error() -> None:
    pa = FakePyAudio([device("USB mic", 1, 0, 44100)], supported={})  # busy: every open fails
    with pytest.raises(AudioDeviceError) as info:
        await PyAudioSource("usb", pa_factory=lambda: pa).start()
    message = str(info.value)
    assert "cannot open input device 'USB mic'" in message and "in use" in message and "'USB mic'" in message
    assert pa.terminated


# -- negotiation and conversion ---------------------------------------------------------------------


async def test_source_negotiates_rate_and_channels_and_converts_on_read() -> None:
    pa = usb_card_portaudio()
    mic = PyAudioSource("USB", sample_rate=16000, pa_factory=lambda: pa)
    await mic.start()
    (stream,) = pa.streams
    assert (mic.device_rate, mic.channels, stream.rate, stream.channels) == (44100, 2, 44100, 2)
    assert stream.is_input and stream.active and stream.frames == 882
    signal = tone(1000, 1.0, rate=44100)
    stereo = np.stack([signal, signal], axis=1).reshape(-1)
    reads = []
    for i in range(0, len(signal), 882):
        stream.run_callback(stereo[2 * i:2 * (i + 882)].astype("<i2").tobytes())
        reads.append(mic.read(320))  # the call track reads 20 ms at 16 kHz as PortAudio delivers 20 ms
    audio = np.concatenate(reads)
    assert peak_hz(audio, 16000) == pytest.approx(1000, abs=2)
    assert rms_dbfs(audio[320:]) == pytest.approx(rms_dbfs(signal), abs=0.5)
    assert mic.underruns == 0 and mic.overruns == 0
    await mic.close()
    assert stream.closed and pa.terminated and not mic.read(320).any()


async def test_source_underrun_is_silence_then_the_backlog_absorbs_jitter() -> None:
    pa = usb_card_portaudio()
    mic = PyAudioSource("default", sample_rate=48000, pa_factory=lambda: pa)
    await mic.start()
    (stream,) = pa.streams
    assert mic.device_rate == 48000 and mic.channels == 1
    assert not mic.read(960).any() and mic.underruns == 1  # nothing captured yet
    ramp = np.arange(1, 961, dtype=np.int16)
    stream.run_callback(ramp[:500].tobytes())
    assert not mic.read(960).any() and mic.underruns == 2  # half a frame: kept for later
    stream.run_callback(ramp[500:].tobytes())
    assert np.array_equal(mic.read(960), ramp)  # nothing lost, nothing reordered
    stream.run_callback(b"\x00\x00", status=0x2)  # PortAudio reports an input overflow
    assert mic.overruns == 1
    await mic.close()


async def test_source_sheds_pauses_not_words_when_reads_fall_behind() -> None:
    pa = usb_card_portaudio()
    mic = PyAudioSource("default", sample_rate=48000, pa_factory=lambda: pa)
    await mic.start()
    (stream,) = pa.streams
    word = tone(300, 0.3, level=0.3)
    gap = np.zeros(int(0.04 * 48000), dtype=np.int16)  # a "t" closure inside a word: kept
    pause = np.zeros(int(0.5 * 48000), dtype=np.int16)
    backlog = np.concatenate([word, gap, word, pause, word])  # 1.44 s captured while nobody read
    stream.run_callback(backlog.tobytes())
    out = np.concatenate([mic.read(960) for _ in range(60)])
    assert mic.shed_blocks == 15 and mic.latency_trims == 0  # the pause, minus 100 ms at each end
    delivered = out[: len(backlog) - mic.shed_blocks * 960]
    assert voiced_seconds(delivered, 48000) == pytest.approx(0.9, abs=0.04)  # every word arrives
    assert np.array_equal(delivered[: len(word) * 2 + len(gap)], backlog[: len(word) * 2 + len(gap)])
    assert np.array_equal(delivered[-len(word):], word)
    await mic.close()


async def test_sink_resamples_plays_mono_as_stereo_and_counts_underruns() -> None:
    pa = usb_card_portaudio()
    speaker = PyAudioSink("usb", sample_rate=48000, pa_factory=lambda: pa)
    await speaker.start()
    (stream,) = pa.streams
    assert (speaker.device_rate, speaker.channels, stream.is_input) == (44100, 2, False)
    assert speaker.buffered_s == pytest.approx(0.03)  # the device's own latency
    signal = tone(440, 1.0, rate=48000)
    for i in range(0, len(signal), 960):
        speaker.write(signal[i:i + 960])
    assert speaker.buffered_s == pytest.approx(1.03, abs=0.01)
    played = []
    while len(speaker.buffer):
        out = np.frombuffer(stream.run_callback(None), dtype="<i2").reshape(-1, 2)
        assert np.array_equal(out[:, 0], out[:, 1])
        played.append(out[:, 0])
    audio = np.concatenate(played)
    assert peak_hz(audio[:44100], 44100) == pytest.approx(440, abs=2)
    silent = np.frombuffer(stream.run_callback(None), dtype="<i2")
    assert not silent.any() and speaker.underruns == 0  # an empty queue is a pause, not an underrun
    speaker.write(tone(440, 0.005))
    stream.run_callback(None)
    assert speaker.underruns == 1  # a period only partly filled is
    speaker.write(tone(440, 0.1))
    speaker.clear()
    assert speaker.buffered_s == pytest.approx(0.03)
    async with asyncio.timeout(5):
        await speaker.close()
    assert stream.closed and pa.terminated


def test_ring_buffer_overrun_underrun_and_wraparound() -> None:
    ring = RingBuffer(100)
    ring.push(np.arange(80, dtype=np.int16))
    ring.push(np.arange(80, 150, dtype=np.int16))  # the 50 oldest are dropped
    assert ring.overruns == 1 and len(ring) == 100
    assert ring.pop(10).tolist() == list(range(50, 60))
    ring.push(np.arange(150, 160, dtype=np.int16))  # wraps around the end of the array
    assert ring.pop_all().tolist() == list(range(60, 160)) and ring.underruns == 0
    out = ring.pop(5)
    assert ring.underruns == 1 and not out.any()


def test_stream_resampler_is_continuous_across_odd_chunks() -> None:
    """Cutting a stream into odd chunks must not change a single output sample (no steps at the cuts)."""
    signal = tone(440, 1.0, rate=16000)
    whole = StreamResampler(16000, 48000).process(signal)
    resampler = StreamResampler(16000, 48000)
    cuts = np.cumsum(np.random.default_rng(1).integers(7, 500, size=80))
    out = np.concatenate([resampler.process(chunk) for chunk in np.split(signal, cuts[cuts < len(signal)])])
    assert abs(len(out) - 48000) <= 64  # the filter holds back under 1 ms
    assert len(out) == len(whole) and np.array_equal(out, whole)
    assert peak_hz(out, 48000) == pytest.approx(440, abs=2)


# -- real PortAudio through a private PulseAudio ------------------------------------------------------


async def test_real_portaudio_lists_the_sound_server(pulse: PulseServer) -> None:  # noqa: F811
    names = [d.name for d in list_devices()]
    assert "pulse" in names and "default" in names
    with pytest.raises(AudioDeviceError) as info:
        await PyAudioSink("seeed-voicecard", sample_rate=48000).start()
    assert "'pulse'" in str(info.value) and "output_device" in str(info.value)


async def test_real_portaudio_speaker_is_heard_on_the_sink_monitor(pulse: PulseServer, tmp_path: Path) -> None:  # noqa: F811
    recording = tmp_path / "speaker.raw"
    parec = pulse.record(recording, rate=48000)
    try:
        speaker = PyAudioSink("pulse", sample_rate=24000)  # the device runs 24 kHz or converts
        await speaker.start()
        speaker.write(tone(660, 1.0, rate=24000, level=0.25))
        async with asyncio.timeout(10):
            assert await speaker.drain()
            await speaker.close()  # returns once the device's own buffer has played
        # The monitor stream lags the sink; stop recording once it holds the whole tone's tail.
        async with asyncio.timeout(10):
            while voiced_seconds(_raw(recording), 48000) < 0.85:
                await asyncio.sleep(0.05)  # polling a file another process writes
    finally:
        parec.terminate()
        parec.wait(10)
    played = _raw(recording)
    # PulseAudio may glitch a block or two as the stream starts: about the tone's length, not exact.
    assert voiced_seconds(played, 48000) == pytest.approx(1.0, abs=0.15)
    assert peak_hz(played, 48000) == pytest.approx(660, abs=3)


async def test_real_portaudio_microphone_hears_speech(pulse: PulseServer, tmp_path: Path) -> None:  # noqa: F811
    clip = espeak_wav("Hello, I am the microphone test. One two three.", tmp_path / "mic.wav")
    samples, rate = read_wav(clip)
    expected = voiced_seconds(samples, rate)
    mic = PyAudioSource("pulse", sample_rate=16000)
    await mic.start()
    proc = await asyncio.create_subprocess_exec("paplay", "--device=micfeed", str(clip), env=pulse.env)
    captured: list[np.ndarray] = []
    done = asyncio.ensure_future(proc.wait())
    async with asyncio.timeout(20):
        while True:  # until paplay has finished and the last half second was quiet
            await asyncio.sleep(0.02)  # read in 20 ms steps, like the call's paced track
            captured.append(mic.read(320))
            if done.done() and len(captured) > 25 and voiced_seconds(np.concatenate(captured[-25:]), 16000) == 0:
                break
    assert done.result() == 0
    await mic.close()
    audio = np.concatenate(captured)
    assert voiced_seconds(audio, 16000) == pytest.approx(expected, rel=0.2)
    assert rms_dbfs(audio) > -50


def _raw(path: Path) -> np.ndarray:
    data = path.read_bytes()
    return np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
