"""The microphone's outgoing track: ready-encoded mono Opus, as faithful as aiortc's own encoder,
without aiortc's per-frame level loop or encoder thread, and silence sent without encoding."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc.codecs.opus import OpusDecoder, OpusEncoder
from aiortc.jitterbuffer import JitterFrame

from appliance.audio.tracks import FramePacer, OpusMicTrack, PacedAudioTrack, microphone_track
from appliance.core.state import State
from tests.audio_helpers import tone
from tests.harness import LEARNER_LINES, espeak, lesson_stack, tutor_quiet_after

TONE_HZ = 1000.0


class NoWait(FramePacer):
    """The track's own pacing, minus the sleeping (the wall clock is not what is tested here)."""

    async def wait(self) -> int:
        return self.pts


def reader(samples: np.ndarray) -> Callable[[int], np.ndarray]:
    position = 0

    def read(n: int) -> np.ndarray:
        nonlocal position
        chunk = samples[position:position + n]
        position += n
        return chunk
    return read


def tone_error_db(decoded: np.ndarray, rate: int = 48000) -> tuple[float, float]:
    """(THD+N in dB, amplitude) of a 1 kHz tone, its first and last 0.1 s left out (codec start-up)."""
    x = decoded[rate // 10:-rate // 10].astype(np.float64)
    t = np.arange(x.size) / rate
    basis = np.stack([np.sin(2 * np.pi * TONE_HZ * t), np.cos(2 * np.pi * TONE_HZ * t), np.ones_like(t)], axis=1)
    coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
    fit = basis @ coef
    thd_n = 20 * np.log10(np.sqrt(np.mean((x - fit) ** 2)) / np.sqrt(np.mean(fit ** 2)))
    return float(thd_n), float(np.hypot(*coef[:2]))


def decode_left(payloads: list[tuple[bytes, int]]) -> np.ndarray:
    """What the far end plays: aiortc's decoder (48 kHz stereo), one channel."""
    decoder = OpusDecoder()
    out = [frame.to_ndarray().reshape(-1)[0::2] for data, timestamp in payloads
           for frame in decoder.decode(JitterFrame(data=data, timestamp=timestamp))]
    return np.concatenate(out)


async def opus_track_payloads(samples: np.ndarray, rate: int) -> tuple[list[tuple[bytes, int]], OpusMicTrack]:
    track = OpusMicTrack(reader(samples), sample_rate=rate)
    track._pacer = NoWait(rate, track.samples_per_frame)
    packer = OpusEncoder()  # what aiortc's sender does with a packet: reads its payload and timestamp
    payloads = []
    for _ in range(samples.size // track.samples_per_frame):
        packet = await track.recv()
        data, timestamp = packer.pack(packet)
        payloads.append((data[0], timestamp))
    return payloads, track


async def aiortc_payloads(samples: np.ndarray, rate: int) -> list[tuple[bytes, int]]:
    track = PacedAudioTrack(reader(samples), sample_rate=rate)
    track._pacer = NoWait(rate, track.samples_per_frame)
    encoder = OpusEncoder()
    payloads = []
    for _ in range(samples.size // track.samples_per_frame):
        data, timestamp = encoder.encode(await track.recv())
        payloads += [(payload, timestamp) for payload in data]
    return payloads


@pytest.mark.parametrize("rate", [48000, 24000])
async def test_a_tone_through_the_opus_track_is_as_faithful_as_aiortcs_own_encoder(rate: int) -> None:
    payloads, track = await opus_track_payloads(tone(TONE_HZ, 2.0, rate), rate)
    ours, amplitude = tone_error_db(decode_left(payloads))
    theirs, _ = tone_error_db(decode_left(await aiortc_payloads(tone(TONE_HZ, 2.0, rate), rate)))
    assert ours <= theirs + 1.0 and ours <= -40.0, (ours, theirs)
    assert amplitude == pytest.approx(0.25 * 32767, rel=0.05)  # the level is kept (mono, not halved)
    assert [t for _, t in payloads[:3]] == [0, 960, 1920]  # RTP time in 48 kHz units whatever the input rate
    assert track.encoded_frames == len(payloads) and track.silent_frames == 0


async def test_silence_is_one_cached_packet_sent_again_without_encoding() -> None:
    voice = tone(TONE_HZ, 0.2, 48000)
    gated = np.concatenate([voice, np.zeros(48000, np.int16), voice])  # speech, the gate closed for 1 s, speech
    payloads, track = await opus_track_payloads(gated, 48000)
    silent = payloads[10:60]
    assert {data for data, _ in silent} == {track.silence}
    assert track.silent_frames == 50 and track.encoded_frames == 20
    played = decode_left(payloads)
    quiet = played[int(0.3 * 48000):int(1.1 * 48000)].astype(np.float64)
    assert np.sqrt(np.mean(quiet ** 2)) < 10  # the far end hears silence, not a stale frame
    assert [t for _, t in payloads] == [n * 960 for n in range(len(payloads))]  # no jump in time


def test_rates_libopus_cannot_take_fall_back_to_aiortcs_encoder() -> None:
    assert isinstance(microphone_track(lambda n: np.zeros(n, np.int16), 44100), PacedAudioTrack)
    assert isinstance(microphone_track(lambda n: np.zeros(n, np.int16), 16000), PacedAudioTrack)
    assert isinstance(microphone_track(lambda n: np.zeros(n, np.int16), 24000), OpusMicTrack)


async def test_a_lesson_sends_its_microphone_without_aiortcs_level_loop_or_encoder_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """aiortc measures the level of each raw frame in a Python loop (~0.2 ms here, 1–2 ms on a Pi) and
    encodes it in a worker thread; a lesson's microphone reaches the simulator without either, and
    the learner's words are still understood."""
    import aiortc.rtcrtpsender

    levels: list[Any] = []
    encodes: list[Any] = []
    original_level = aiortc.rtcrtpsender.rtp.compute_audio_level_dbov
    original_encode = OpusEncoder.encode

    def level(frame: av.AudioFrame) -> int:
        levels.append(frame)
        return original_level(frame)

    def encode(self: OpusEncoder, frame: av.AudioFrame, force_keyframe: bool = False) -> Any:
        encodes.append(frame)
        return original_encode(self, frame, force_keyframe)

    from appliance.simulator.call import _GatedAudioTrack

    tutor_frames: list[av.AudioFrame] = []  # the simulator's own track is aiortc-encoded: told apart by identity
    original_recv = _GatedAudioTrack.recv

    async def recv(self: _GatedAudioTrack) -> av.AudioFrame:
        frame = await original_recv(self)
        tutor_frames.append(frame)
        return frame

    monkeypatch.setattr(_GatedAudioTrack, "recv", recv)
    monkeypatch.setattr(aiortc.rtcrtpsender.rtp, "compute_audio_level_dbov", level)
    monkeypatch.setattr(OpusEncoder, "encode", encode)
    clip = espeak(LEARNER_LINES[0], tmp_path / "learner.wav")
    async with lesson_stack(tmp_path) as stack, stack.kiosk() as (kiosk, rec, mic):
        kiosk.press()
        await rec.until(lambda: State.CONNECTED in rec.states, what="connected")
        await rec.until(lambda: tutor_quiet_after(rec, 1), what="greeting")
        mic.say(clip)
        await rec.until(lambda: any(t.source == "voice" for t in rec.learner_turns()), what="learner turn")
        heard = [t.text for t in rec.learner_turns() if t.source == "voice"]
        kiosk.press()
        await rec.until(lambda: bool(rec.saved), what="saved")
    assert heard == [LEARNER_LINES[0]]
    tutor = {id(frame) for frame in tutor_frames}
    assert levels and encodes, "the simulator's track did not go through aiortc's encoder: the spies are blind"
    assert [f for f in levels if id(f) not in tutor] == [] and [f for f in encodes if id(f) not in tutor] == []


async def test_the_track_paces_itself_in_wall_clock_time() -> None:
    track = OpusMicTrack(lambda n: np.zeros(n, np.int16))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(11):
        await track.recv()
    assert 0.19 <= loop.time() - started < 0.5  # ten 20 ms slots after the first frame


def frame_error(decoded: np.ndarray, original: np.ndarray, at: int, search: int = 800) -> float:
    """Relative error of the 20 ms of ``original`` from sample ``at`` against the decoded audio, at the best
    alignment (the codec delays its output by a few ms)."""
    ref = original[at:at + 960].astype(np.float64)
    errors = [np.sqrt(np.mean((decoded[at - search // 2 + lag:at - search // 2 + lag + 960] - ref) ** 2))
              for lag in range(search)]
    return float(min(errors) / np.sqrt(np.mean(ref ** 2)))


async def test_sound_after_silence_is_coded_as_cleanly_as_before_it() -> None:
    """The far end's decoder follows the cached silence packets while the encoder sat idle: unless the
    encoder is brought to the same state first, the frames after the silence came out garbled (52–67 %
    error for 60 ms: the start of a short word, and a spoken "stop" was then not understood)."""
    sound = tone(300, 0.3, 48000) + tone(2000, 0.3, 48000) // 2
    signal = np.concatenate([sound, np.zeros(24000, np.int16), sound])
    payloads, track = await opus_track_payloads(signal, 48000)
    decoded = decode_left(payloads).astype(np.float64)
    resumed = sound.size + 24000
    before = [frame_error(decoded, signal, 4800 + k * 960) for k in range(1, 4)]
    after = [frame_error(decoded, signal, resumed + k * 960) for k in range(1, 4)]  # the onset frame aside
    assert max(before) < 0.1 and max(after) < 0.1, (before, after)
    assert track.silent_frames == 25
