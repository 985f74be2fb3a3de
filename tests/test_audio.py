"""Audio without hardware: the scripted microphone, the WAV and null sinks, resampling, the
speaker pump on a synthetic WebRTC track, and the half-duplex gate."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import wave
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from appliance.audio.base import AudioDeviceError
from appliance.audio.dsp import resample, rms_dbfs
from appliance.audio.gate import HalfDuplexGate
from appliance.audio.speaker import SpeakerPump
from appliance.audio.wav import NullSink, ScriptedMicrophone, WavFileSink, read_wav
from tests.audio_helpers import ScriptedTrack, Segment, espeak_wav, peak_hz, tone, voiced_seconds, wav_seconds

# -- ScriptedMicrophone ------------------------------------------------------------------------


async def test_scripted_microphone_says_a_clip_then_silence_and_signals_idle() -> None:
    idle_calls: list[str] = []
    called = asyncio.Event()

    def on_idle() -> None:
        idle_calls.append("idle")
        called.set()

    mic = ScriptedMicrophone(sample_rate=16000, on_idle=on_idle)
    await mic.start()
    assert not mic.read(320).any() and not mic.speaking
    clip = tone(440, 0.1, rate=16000)  # 1600 samples: 5 reads of 320
    assert mic.say(clip, rate=16000) == pytest.approx(0.1)
    assert mic.speaking and mic.queued_s == pytest.approx(0.1)
    idle = asyncio.ensure_future(mic.wait_idle())
    got = [mic.read(320) for _ in range(5)]
    assert np.array_equal(np.concatenate(got), clip)
    async with asyncio.timeout(2):
        await idle
    assert not mic.speaking and mic.clips_spoken == 1
    assert not mic.read(320).any()  # silence after the clip
    await asyncio.wait_for(called.wait(), 2)  # on_idle is delivered by the loop
    assert idle_calls == ["idle"]


async def test_scripted_microphone_wav_is_resampled_and_mid_read_boundaries_are_exact(tmp_path: Path) -> None:
    path = espeak_wav("Hello teacher", tmp_path / "hello.wav")
    original, rate = read_wav(path)
    assert rate == 22050
    mic = ScriptedMicrophone(sample_rate=48000)
    await mic.start()
    seconds = mic.say(path)
    assert seconds == pytest.approx(len(original) / rate, abs=0.001)
    assert seconds == pytest.approx(wav_seconds(path), abs=0.01)
    mic.say(np.full(100, 1000, dtype=np.int16), rate=48000)  # a second clip right after the first
    out = np.concatenate([mic.read(700) for _ in range(int(seconds * 48000) // 700 + 3)])
    speech = resample(original, rate, 48000)
    assert np.array_equal(out[:len(speech)], speech)
    assert np.array_equal(out[len(speech):len(speech) + 100], np.full(100, 1000))
    assert not out[len(speech) + 100:].any()
    async with asyncio.timeout(2):
        await mic.wait_idle()


async def test_scripted_microphone_read_from_another_thread_wakes_the_loop() -> None:
    mic = ScriptedMicrophone(sample_rate=8000)
    await mic.start()
    mic.say(np.ones(80, dtype=np.int16))
    got: list[np.ndarray] = []
    reader = threading.Thread(target=lambda: got.append(mic.read(160)))
    reader.start()
    async with asyncio.timeout(2):  # fails unless the reader thread's read woke the loop
        await mic.wait_idle()
    reader.join()
    [out] = got
    assert out.tolist() == [1] * 80 + [0] * 80  # the queued clip, then silence


async def test_scripted_microphone_close_releases_waiters() -> None:
    mic = ScriptedMicrophone()
    await mic.start()
    mic.say(np.ones(48000, dtype=np.int16))
    mic.read(960)
    await mic.close()
    async with asyncio.timeout(2):
        await mic.wait_idle()
    assert not mic.read(960).any()


def test_scripted_microphone_missing_or_bad_wav_is_a_clear_error(tmp_path: Path) -> None:
    mic = ScriptedMicrophone()
    with pytest.raises(AudioDeviceError, match="does not exist"):
        mic.say(tmp_path / "nope.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not a RIFF file")
    with pytest.raises(AudioDeviceError, match="cannot read WAV file"):
        mic.say(bad)
    assert not mic.speaking


def test_read_wav_downmixes_stereo_and_8_bit(tmp_path: Path) -> None:
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.array([1000, 3000, -2000, -4000], dtype="<i2").tobytes())
    samples, rate = read_wav(stereo)
    assert rate == 8000 and samples.tolist() == [2000, -3000]
    eight = tmp_path / "eight.wav"
    subprocess.run(["sox", str(stereo), "-b", "8", "-c", "1", str(eight)], check=True)
    samples, _ = read_wav(eight)
    assert samples.dtype == np.int16 and len(samples) == 2 and samples[0] > 0 > samples[1]


# -- sinks --------------------------------------------------------------------------------------


async def test_wav_file_sink_round_trip_and_sox_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "out" / "speaker.wav"
    sink = WavFileSink(path, sample_rate=24000)
    await sink.start()
    signal = tone(300, 0.5, rate=24000)
    for i in range(0, len(signal), 480):
        sink.write(signal[i:i + 480])
    # Before close: the header already counts everything written (a killed kiosk leaves a usable file).
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == len(signal)
    await sink.close()
    await sink.close()  # idempotent
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 24000)
        back = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert np.array_equal(back, signal) and sink.seconds_written == pytest.approx(0.5)
    assert wav_seconds(path) == pytest.approx(0.5)
    info = subprocess.run(["sox", "--i", str(path)], capture_output=True, text=True, check=True).stdout
    assert "24000" in info and "16-bit" in info


async def test_wav_file_sink_survives_a_kill(tmp_path: Path) -> None:
    """A process killed mid-lesson leaves a valid WAV with what it wrote."""
    path = tmp_path / "killed.wav"
    code = (
        "import asyncio, os, signal, numpy as np\n"
        "from appliance.audio.wav import WavFileSink\n"
        f"sink = WavFileSink({str(path)!r}, 16000)\n"
        "asyncio.run(sink.start())\n"
        "for _ in range(10): sink.write(np.full(320, 1234, dtype=np.int16))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent)
    assert proc.returncode == -9
    samples, rate = read_wav(path)
    assert rate == 16000 and len(samples) == 3200 and (samples == 1234).all()


async def test_wav_file_sink_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(AudioDeviceError, match="cannot write"):
        await WavFileSink(blocker / "sub" / "out.wav").start()


async def test_null_sink_counts() -> None:
    sink = NullSink(16000)
    await sink.start()
    sink.write(np.zeros(320, dtype=np.int16))
    await sink.close()
    assert sink.samples_written == 320


# -- resampling ---------------------------------------------------------------------------------


def test_resample_keeps_a_sine_frequency_48k_16k_24k() -> None:
    signal = tone(1000, 1.0, rate=48000)
    down = resample(signal, 48000, 16000)
    up = resample(down, 16000, 24000)
    assert (len(down), len(up)) == (16000, 24000)
    for samples, rate in ((signal, 48000), (down, 16000), (up, 24000)):
        assert peak_hz(samples, rate) == pytest.approx(1000, abs=2)
        assert rms_dbfs(samples) == pytest.approx(rms_dbfs(signal), abs=1.0)


# -- SpeakerPump ----------------------------------------------------------------------------------


async def test_speaker_pump_audibility_samples_and_energy(tmp_path: Path) -> None:
    sink = WavFileSink(tmp_path / "tutor.wav", sample_rate=16000)
    await sink.start()
    changes: list[bool] = []
    became = {True: asyncio.Event(), False: asyncio.Event()}
    loop = asyncio.get_running_loop()

    def on_audible(audible: bool) -> None:
        assert asyncio.get_running_loop() is loop  # delivered on the loop
        changes.append(audible)
        became[audible].set()

    track = ScriptedTrack([Segment(0.5), Segment(1.0, 440, level=0.25), Segment(1.0)])
    pump = SpeakerPump(sink, on_audible=on_audible)
    async with asyncio.timeout(10):
        await pump.run(track)  # ends when the track ends (MediaStreamError)
        await became[True].wait()
        await became[False].wait()
    await sink.close()
    assert changes == [True, False]
    assert pump.frames == track.sent_frames == 125
    assert pump.audible_s == pytest.approx(1.0, abs=0.021)
    assert pump.seconds_in == pytest.approx(2.5)
    assert pump.first_audible_at is not None
    played, rate = read_wav(tmp_path / "tutor.wav")
    assert rate == 16000 and len(played) == 125 * 320  # every frame, resampled 48 kHz → 16 kHz
    tone_part = played[int(0.5 * rate):int(1.5 * rate)]
    assert rms_dbfs(tone_part) == pytest.approx(20 * np.log10(0.25 / np.sqrt(2)), abs=0.5)
    assert peak_hz(tone_part, rate) == pytest.approx(440, abs=2)
    assert voiced_seconds(played, rate) == pytest.approx(1.0, abs=0.04)


async def test_speaker_pump_goes_quiet_when_frames_stop_and_applies_volume() -> None:
    """A server that stops sending after the last word still ends the tutor's turn."""
    became_quiet = asyncio.Event()
    changes: list[bool] = []

    def on_audible(audible: bool) -> None:
        changes.append(audible)
        if not audible:
            became_quiet.set()

    class Capture(NullSink):
        def __init__(self) -> None:
            super().__init__(48000)
            self.chunks: list[np.ndarray] = []

        def write(self, samples: np.ndarray) -> None:
            super().write(samples)
            self.chunks.append(samples)

    sink = Capture()
    pump = SpeakerPump(sink, volume=50, on_audible=on_audible, hangover_s=0.1)
    task = asyncio.ensure_future(pump.run(ScriptedTrack([Segment(0.2, 300, level=0.5)], hold_at_end=True)))
    async with asyncio.timeout(5):
        await became_quiet.wait()
    assert changes == [True, False] and not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    played = np.concatenate(sink.chunks)
    assert rms_dbfs(played) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)) + 20 * np.log10(0.25), abs=0.5)


async def test_the_silence_watch_sets_one_timer_per_hangover_not_one_per_frame(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames at their real pace for 1 s, then none: the tutor goes quiet one hangover after the last
    frame, and the watch armed a handful of timers, not one per frame (50)."""
    loop = asyncio.get_running_loop()
    quiet = asyncio.Event()
    timers: list[Any] = []
    original_call_at = loop.call_at

    def call_at(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        if getattr(callback, "__name__", "") == "_no_frames":
            timers.append(when)
        return original_call_at(when, callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", call_at)
    monkeypatch.setattr(loop, "call_later", lambda delay, cb, *a, **k: call_at(loop.time() + delay, cb, *a, **k))

    class Paced(ScriptedTrack):
        last_frame_at = 0.0

        async def recv(self) -> av.AudioFrame:
            frame = await super().recv()
            await asyncio.sleep(0.02)
            self.last_frame_at = loop.time()
            return frame

    hangover = 0.3
    track = Paced([Segment(1.0, 440, level=0.25)], hold_at_end=True)
    pump = SpeakerPump(NullSink(), on_audible=lambda audible: None if audible else quiet.set(), hangover_s=hangover)
    task = asyncio.ensure_future(pump.run(track))
    async with asyncio.timeout(5):
        await quiet.wait()
    quiet_after = loop.time() - track.last_frame_at
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert hangover <= quiet_after < hangover + 0.1
    assert pump.frames == 50 and 1 <= len(timers) <= 1 + 1.0 / hangover + 1, timers


async def test_speaker_pump_cancelled_while_audible_reports_quiet() -> None:
    changes: list[bool] = []
    pump = SpeakerPump(NullSink(), on_audible=changes.append, hangover_s=60)
    task = asyncio.ensure_future(pump.run(ScriptedTrack([Segment(0.1, 500)], hold_at_end=True)))
    async with asyncio.timeout(5):
        while not changes:
            await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert changes == [True, False] and not pump.audible


async def test_speaker_pump_waits_for_the_sink_backlog() -> None:
    """With a buffering sink the tutor stays audible until the backlog has played."""
    clock_events: list[tuple[bool, float]] = []
    quiet = asyncio.Event()

    class Buffered(NullSink):
        buffered_s = 0.3

    def on_audible(audible: bool) -> None:
        clock_events.append((audible, asyncio.get_running_loop().time()))
        if not audible:
            quiet.set()

    pump = SpeakerPump(Buffered(), on_audible=on_audible, hangover_s=0.05)
    task = asyncio.ensure_future(pump.run(ScriptedTrack([Segment(0.1, 500), Segment(0.2)], hold_at_end=True)))
    async with asyncio.timeout(5):
        await quiet.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (on, t_on), (off, t_off) = clock_events
    assert on and not off and t_off - t_on >= 0.29


# -- HalfDuplexGate -------------------------------------------------------------------------------


class _Loud:
    sample_rate = 16000

    def __init__(self) -> None:
        self.read_samples = 0

    def read(self, n: int) -> np.ndarray:
        self.read_samples += n
        return np.full(n, 1000, dtype=np.int16)


def test_half_duplex_gate_silences_while_audible_and_for_the_tail() -> None:
    now = [50.0]
    source = _Loud()
    gate = HalfDuplexGate(source, clock=lambda: now[0])  # default tail 300 ms
    assert gate.sample_rate == 16000 and gate.read(320).all()
    gate.set_tutor_audible(True)
    assert gate.gated and not gate.read(320).any()
    now[0] += 5
    assert not gate.read(320).any()
    gate.set_tutor_audible(False)
    now[0] += 0.299
    assert not gate.read(320).any()  # the room's echo tail
    now[0] += 0.002
    assert not gate.gated and gate.read(320).all()
    gate.set_tutor_audible(False)  # a repeated "stopped" does not restart the tail
    assert gate.read(320).all()
    assert source.read_samples == 6 * 320  # the source was drained while gated, too
    assert gate.gated_samples == 3 * 320


def test_full_duplex_passes_through() -> None:
    gate = HalfDuplexGate(_Loud(), mode="full_duplex")
    gate.set_tutor_audible(True)
    assert gate.full_duplex and not gate.gated and gate.read(160).all()
