#!/usr/bin/env python3
"""Benchmark: what one 20 ms frame, and one data-channel event, cost the kiosk's process.

A Pi's core is 4–10× slower than this machine's, and a call runs 50 microphone frames, 50 speaker
frames and (while the tutor talks) 20–60 events a second, so a cost of tens of microseconds here is
what decides whether a board keeps up. Each figure is CPU time of the whole process (all threads, so a
hand-off to a worker thread is counted), divided by the frames or events handled:

  * microphone: a raw frame the way aiortc takes one (its audio level loop, a hand-off to its encoder
    thread, resampled to stereo, encoded at 96 kbit/s) against the kiosk's ready-encoded mono Opus
    track, for speech and for the silence the half-duplex gate sends;
  * speaker: aiortc's decoded frame (48 kHz stereo) through the kiosk's pump to a null sink,
    silence watch included;
  * both again with the status light's level meter on (single LEDs on gpiozero's mock PWM pins,
    the meter's clock stepped 20 ms per frame, so it updates the light 25 times a second of audio
    as in a real call);
  * events: one greeting transcript delta parsed, and handled by the conversation; a whole
    post-connect burst (session events plus 120 deltas) handed to the kiosk's queue.

    .venv/bin/python scripts/bench_audio_path.py            # ~20 s
    .venv/bin/python scripts/bench_audio_path.py --frames 500 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def cpu_us_per(count: int, started: float) -> float:
    return (time.process_time() - started) * 1e6 / count


def speech(n: int, index: int) -> np.ndarray:
    """A voiced-sounding test signal (two tones and a little noise), different in every frame."""
    t = (np.arange(n) + index * n) / 48000
    rng = np.random.default_rng(index)
    return (6000 * np.sin(2 * np.pi * 180 * t) + 2500 * np.sin(2 * np.pi * 1200 * t)
            + rng.normal(0, 300, n)).astype(np.int16)


class _NoWait:
    """A pacer that never sleeps, so a track's own cost is what is timed."""

    def __init__(self, samples_per_frame: int) -> None:
        self.pts = 0
        self.samples_per_frame = samples_per_frame

    async def wait(self) -> int:
        return self.pts

    def advance(self) -> None:
        self.pts += self.samples_per_frame


async def mic_aiortc(frames: int, voiced: bool) -> float:
    """PacedAudioTrack → what aiortc's sender does with a raw frame (level, encoder thread)."""
    from aiortc import rtp
    from aiortc.codecs.opus import OpusEncoder

    from appliance.audio.tracks import PacedAudioTrack

    track = PacedAudioTrack(signal(frames + WARM_UP, voiced))
    track._pacer = _NoWait(track.samples_per_frame)  # type: ignore[assignment]
    encoder = OpusEncoder()
    loop = asyncio.get_running_loop()
    started = 0.0
    for index in range(frames + WARM_UP):
        if index == WARM_UP:
            started = time.process_time()
        frame = await track.recv()
        rtp.compute_audio_level_dbov(frame)
        await loop.run_in_executor(None, encoder.encode, frame, False)
    return cpu_us_per(frames, started)


class AudioClock:
    """The meter's clock stepped by the audio (20 ms a frame): frames come unpaced here, as fast as they
    are made, but the meter must update the light as often as in a real call (every other frame)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def metered(clock: AudioClock) -> Any:
    """The level meter as the kiosk wires it, showing on single LEDs on mock PWM pins (connected state)."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin

    from appliance.audio.meter import LevelMeter
    from appliance.config import LedSettings
    from appliance.core.state import State
    from appliance.hardware.leds import StatusLeds

    Device.pin_factory = MockFactory(pin_class=MockPWMPin)
    leds = StatusLeds(LedSettings())
    leds.show(State.CONNECTED)
    return LevelMeter(leds.level, clock=clock)


async def mic_opus(frames: int, voiced: bool, meter: bool = False) -> float:
    """The kiosk's OpusMicTrack → what aiortc's sender does with a ready packet (``pack``)."""
    from aiortc.codecs.opus import OpusEncoder

    from appliance.audio.tracks import OpusMicTrack

    supplier = signal(frames + WARM_UP, voiced)
    if meter:
        clock, plain = AudioClock(), supplier
        level = metered(clock)

        def supplier(n: int) -> np.ndarray:
            clock.now += 0.02
            return level.heard(plain(n))  # type: ignore[no-any-return]
    track = OpusMicTrack(supplier)
    track._pacer = _NoWait(track.samples_per_frame)  # type: ignore[assignment]
    packer = OpusEncoder()
    started = 0.0
    for index in range(frames + WARM_UP):
        if index == WARM_UP:
            started = time.process_time()
        packet = await track.recv()
        packer.pack(packet)
    return cpu_us_per(frames, started)


WARM_UP = 20
"""Frames run before the clock starts: the first ones pay for imports and the codecs' set-up."""


def signal(frames: int, voiced: bool) -> Callable[[int], np.ndarray]:
    """A microphone that hands out frames made in advance (so making them is not timed)."""
    made = iter([speech(960, index) if voiced else np.zeros(960, np.int16) for index in range(frames)])
    return lambda n: next(made)


async def speaker(frames: int, meter: bool = False) -> float:
    """Decoded 48 kHz stereo frames (what aiortc hands over) through the pump into a null sink."""
    import av
    from aiortc.codecs.opus import OpusDecoder, OpusEncoder
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.mediastreams import MediaStreamError

    from appliance.audio.speaker import SpeakerPump
    from appliance.audio.wav import NullSink

    encoder, decoder = OpusEncoder(), OpusDecoder()
    decoded: list[av.AudioFrame] = []
    for index in range(frames):
        mono = av.AudioFrame.from_ndarray(speech(960, index).reshape(1, -1), format="s16", layout="mono")
        mono.sample_rate, mono.pts = 48000, index * 960
        payloads, timestamp = encoder.encode(mono)
        for payload in payloads:
            decoded += decoder.decode(JitterFrame(data=payload, timestamp=timestamp))  # type: ignore[misc]

    clock = AudioClock()

    class Replay:
        def __init__(self) -> None:
            self.frames = iter(decoded)

        async def recv(self) -> av.AudioFrame:
            clock.now += 0.02
            try:
                return next(self.frames)
            except StopIteration:
                raise MediaStreamError from None

    pump = SpeakerPump(NullSink(sample_rate=48000), meter=metered(clock) if meter else None)
    started = time.process_time()
    await pump.run(Replay())  # type: ignore[arg-type]
    return cpu_us_per(len(decoded), started)


def greeting_burst() -> list[str]:
    """What a Realtime server sends right after connect: session and response events, then deltas."""
    messages = [
        {"type": "session.created", "event_id": "e1", "session": {"type": "realtime", "id": "sess_1",
                                                                  "instructions": "x" * 2000}},
        {"type": "session.updated", "event_id": "e2", "session": {"type": "realtime", "instructions": "x" * 2000}},
        {"type": "response.created", "event_id": "e3", "response": {"id": "resp_1", "status": "in_progress"}},
        {"type": "response.output_item.added", "event_id": "e4", "response_id": "resp_1", "output_index": 0,
         "item": {"id": "item_1", "type": "message", "role": "assistant", "content": []}},
        {"type": "output_audio_buffer.started", "event_id": "e5", "response_id": "resp_1"},
    ]
    words = ("Hello! I am your English tutor today. What would you like to talk about? "
             "We can practise greetings, food, school, or your favourite games. ") * 4
    for index, word in enumerate(words.split(" ")[:120]):
        messages.append({"type": "response.output_audio_transcript.delta", "event_id": f"d{index}",
                         "response_id": "resp_1", "item_id": "item_1", "output_index": 0, "content_index": 0,
                         "delta": word + " "})
    return [json.dumps(m) for m in messages]


def parse_cost(rounds: int) -> float:
    from appliance.call.events import parse_server_event

    burst = greeting_burst()
    started = time.process_time()
    for _ in range(rounds):
        for message in burst:
            parse_server_event(message)
    return cpu_us_per(rounds * len(burst), started)


def handle_cost(rounds: int) -> float:
    """One event through the conversation (the core's pure logic: no I/O)."""
    from appliance.call.events import parse_server_event
    from appliance.core.conversation import Conversation
    from appliance.core.lesson import Lesson

    parsed = [parse_server_event(m) for m in greeting_burst()]
    events = [e for e in parsed if e is not None]
    total = 0.0
    for _ in range(rounds):
        lesson = Lesson(kiosk_id="bench")
        lesson.connected_at = lesson.started_mono
        conversation = Conversation(lesson)
        started = time.process_time()
        for index, event in enumerate(events):
            conversation.on_event(event, 1.0 + index * 0.001)
        total += time.process_time() - started
    return total * 1e6 / (rounds * len(events))


async def run(frames: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for voiced in (True, False):
        kind = "speech" if voiced else "silence"
        figures[f"mic_aiortc_{kind}_us"] = await mic_aiortc(frames, voiced)
        figures[f"mic_opus_{kind}_us"] = await mic_opus(frames, voiced)
        figures[f"mic_opus_{kind}_meter_us"] = await mic_opus(frames, voiced, meter=True)
    figures["speaker_us"] = await speaker(frames)
    figures["speaker_meter_us"] = await speaker(frames, meter=True)
    figures["parse_event_us"] = parse_cost(max(1, frames // 100))
    figures["handle_event_us"] = handle_cost(max(1, frames // 100))
    figures["burst_events"] = len(greeting_burst())
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=3000, help="frames per figure (20 ms each)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    figures = asyncio.run(run(args.frames))
    print(f"CPU µs per 20 ms frame ({args.frames} frames; all threads):")
    print(f"  microphone, speech:  aiortc raw frame {figures['mic_aiortc_speech_us']:7.1f}   "
          f"kiosk Opus track {figures['mic_opus_speech_us']:7.1f}")
    print(f"  microphone, silence: aiortc raw frame {figures['mic_aiortc_silence_us']:7.1f}   "
          f"kiosk Opus track {figures['mic_opus_silence_us']:7.1f}")
    print(f"  speaker pump (48 kHz stereo in, null sink): {figures['speaker_us']:7.1f}")
    print(f"  with the level meter (25 light updates per s): microphone, speech "
          f"{figures['mic_opus_speech_meter_us']:7.1f}   silence {figures['mic_opus_silence_meter_us']:7.1f}   "
          f"speaker pump {figures['speaker_meter_us']:7.1f}")
    print(f"CPU µs per data-channel event (a post-connect burst of {figures['burst_events']}):")
    burst_ms = (figures["parse_event_us"] + figures["handle_event_us"]) * figures["burst_events"] / 1000
    print(f"  parse {figures['parse_event_us']:6.1f}   conversation {figures['handle_event_us']:6.1f}   "
          f"burst total {burst_ms:5.2f} ms")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
