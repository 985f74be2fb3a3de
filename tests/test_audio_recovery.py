"""A microphone or speaker that disappears mid-lesson and comes back, against a scripted PortAudio
that behaves like the real one: streams call back on their own clock thread, the device list is
read only when PortAudio is initialised from scratch, and the last ``terminate`` closes every open
stream."""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from appliance.audio.dsp import rms_dbfs
from appliance.audio.pyaudio_backend import PyAudioSink, PyAudioSource
from tests.audio_helpers import peak_hz, tone

PERIOD_S = 0.01
FAST = {"stall_timeout_s": 0.4, "startup_grace_s": 0.4, "retry_min_s": 0.05, "retry_max_s": 0.2,
        "rescan_interval_s": 0.0}
DETECT_BOUND_S = 2.0
"""Failure must reach the kiosk this fast (the brief: within a couple of seconds)."""


class World:
    """The sound cards plugged in now, and PortAudio's process-wide state (init count, open streams)."""

    def __init__(self, names: list[str]) -> None:
        self.plugged = [(name, 0) for name in names]  # (name, serial): a replugged card is a new device
        self.serial = 0
        self.init_count = 0
        self.snapshot: list[tuple[str, int]] = []
        self.streams: list[ClockedStream] = []
        self.full_inits = 0
        self.changed = threading.Condition()

    def pyaudio(self) -> ClockedPyAudio:
        if self.init_count == 0:  # Pa_Initialize from scratch: the only time devices are scanned
            self.snapshot = list(self.plugged)
            self.full_inits += 1
        self.init_count += 1
        with self.changed:
            self.changed.notify_all()  # a reopen attempt: the previous one has finished
        return ClockedPyAudio(self)

    def unplug(self, name: str, how: str) -> None:
        """``how``: "stops" (stream inactive), "stalls" (no more callbacks), "raises" (PortAudio errors)."""
        self.plugged = [(n, serial) for n, serial in self.plugged if n != name]
        for stream in self.streams:
            if stream.device == name and not stream.closed:
                stream.lose(how)

    def plug(self, name: str, at: int | None = None) -> None:
        self.serial += 1
        self.plugged.insert(len(self.plugged) if at is None else at, (name, self.serial))

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        with self.changed:
            assert self.changed.wait_for(predicate, timeout), f"timed out waiting for {what}"


class ClockedStream:
    """Calls back every PERIOD_S on its own thread while active; the mic captures a 440 Hz tone."""

    def __init__(self, world: World, device: str, is_input: bool, rate: int, frames: int, callback: Any) -> None:
        self.world, self.device, self.is_input = world, device, is_input
        self.rate, self.frames, self.callback = rate, frames, callback
        self.active = self.closed = self.stalled = self.broken = False
        self.played: list[np.ndarray] = []
        self._phase = 0
        self._thread: threading.Thread | None = None

    def start_stream(self) -> None:
        self.active = True
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self.active and not self.stalled:
            if self.is_input:
                t = (self._phase + np.arange(self.frames)) / self.rate
                data = (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes()
                self._phase += self.frames
                self.callback(data, self.frames, {}, 0)
            else:
                out, _ = self.callback(None, self.frames, {}, 0)
                self.played.append(np.frombuffer(out, dtype="<i2").copy())
            with self.world.changed:
                self.world.changed.notify_all()
            time.sleep(PERIOD_S)  # the scripted sound card's clock

    def lose(self, how: str) -> None:
        if how == "stops":
            self.active = False
        elif how == "stalls":
            self.stalled = True
        else:
            self.broken = True
            self.stalled = True

    def is_active(self) -> bool:
        if self.broken:
            raise OSError(-9999, "Unanticipated host error")
        return self.active

    def stop_stream(self) -> None:
        self.active = False

    def close(self) -> None:
        self.active = False
        self.closed = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def get_input_latency(self) -> float:
        return 0.01

    def get_output_latency(self) -> float:
        return 0.01


class ClockedPyAudio:
    def __init__(self, world: World) -> None:
        self.world = world
        self.devices = list(world.snapshot)
        self.terminated = False

    def get_device_count(self) -> int:
        return len(self.devices)

    def get_device_info_by_index(self, i: int) -> dict[str, Any]:
        return {"index": i, "hostApi": 0, "name": self.devices[i][0], "maxInputChannels": 2,
                "maxOutputChannels": 2, "defaultSampleRate": 48000.0}

    def get_host_api_info_by_index(self, i: int) -> dict[str, Any]:
        return {"name": "ALSA"}

    def get_default_input_device_info(self) -> dict[str, Any]:
        raise OSError("No Default Input Device Available")

    get_default_output_device_info = get_default_input_device_info

    def open(self, *, format: int, channels: int, rate: int, input: bool, output: bool,
             input_device_index: int | None, output_device_index: int | None, frames_per_buffer: int,
             stream_callback: Any) -> ClockedStream:
        assert not self.terminated, "opened a stream on a terminated PortAudio"
        entry = self.devices[input_device_index if input else output_device_index]  # type: ignore[index]
        if entry not in self.world.plugged:  # unplugged, or this entry is from before it was replugged
            raise OSError(-9996, "Invalid device")
        name = entry[0]
        stream = ClockedStream(self.world, name, input, rate, frames_per_buffer, stream_callback)
        self.world.streams.append(stream)
        return stream

    def terminate(self) -> None:
        assert not self.terminated
        self.terminated = True
        self.world.init_count -= 1
        if self.world.init_count == 0:  # the last Pa_Terminate closes every stream, whoever opened it
            for stream in self.world.streams:
                if not stream.closed:
                    stream.close()


class HealthLog:
    """Collects health reports (from any thread) for the test to wait on."""

    def __init__(self) -> None:
        self.reports: queue.Queue[tuple[str, bool, str, float]] = queue.Queue()
        self.all: list[tuple[str, bool, str]] = []

    def __call__(self, kind: str, ok: bool, detail: str) -> None:
        self.all.append((kind, ok, detail))
        self.reports.put((kind, ok, detail, time.monotonic()))

    async def next(self, timeout: float = 5.0) -> tuple[str, bool, str, float]:
        return await asyncio.to_thread(self.reports.get, True, timeout)


async def read_until_tone(mic: PyAudioSource, timeout: float = 5.0) -> np.ndarray:
    """Read 20 ms frames as the call track does until a whole frame holds the mic's tone."""
    async with asyncio.timeout(timeout):
        while True:
            frame = mic.read(960)
            if rms_dbfs(frame) > -30:
                return frame
            await asyncio.sleep(0.02)  # the paced track's 20 ms step


@pytest.mark.parametrize("how", ["stops", "stalls", "raises"])
async def test_microphone_that_vanishes_is_reported_and_reopened_by_name(how: str) -> None:
    """Guards against a pulled USB microphone leaving the kiosk deaf until a restart, unreported."""
    world = World(["HDMI", "USB PnP Sound Device"])
    mic = PyAudioSource("usb", sample_rate=48000, pa_factory=world.pyaudio, **FAST)
    health = HealthLog()
    mic.set_health_callback(health)
    await mic.start()
    assert peak_hz(await read_until_tone(mic), 48000) == pytest.approx(440, abs=30)
    assert mic.healthy and mic.problem is None

    lost_at = time.monotonic()
    world.unplug("USB PnP Sound Device", how)
    kind, ok, detail, at = await health.next()
    assert (kind, ok) == ("microphone", False) and at - lost_at < DETECT_BOUND_S
    assert "'usb'" in detail
    assert not mic.healthy and mic.problem
    for _ in range(5):
        assert not mic.read(960).any()  # silence, never an exception, while it is gone
    # Retries fail while it is unplugged; the problem then says what is missing and what exists.
    await asyncio.to_thread(world.wait_for, lambda: "no input device matches" in (mic.problem or ""), 5, "a retry")
    assert "'HDMI'" in (mic.problem or "")
    assert health.reports.empty()  # failed retries are not reported again

    world.plug("USB PnP Sound Device")
    kind, ok, detail, _ = await health.next()
    assert (kind, ok) == ("microphone", True) and "back" in detail
    assert mic.healthy and mic.problem is None
    assert peak_hz(await read_until_tone(mic), 48000) == pytest.approx(440, abs=30)
    assert mic.failures == 1 and mic.recoveries == 1 and world.full_inits >= 2  # devices were scanned again
    await mic.close()
    assert world.init_count == 0 and all(s.closed for s in world.streams)


@pytest.mark.parametrize("how", ["stops", "stalls"])
async def test_speaker_that_vanishes_drops_writes_then_plays_again(how: str) -> None:
    """Guards against a lost speaker blocking or raising into the loop, or staying silent forever."""
    world = World(["USB Audio"])
    speaker = PyAudioSink("USB Audio", sample_rate=48000, pa_factory=world.pyaudio, **FAST)
    health = HealthLog()
    speaker.set_health_callback(health)
    await speaker.start()
    (first,) = world.streams
    world.unplug("USB Audio", how)
    kind, ok, _, _ = await health.next()
    assert (kind, ok) == ("speaker", False)
    speaker.write(tone(660, 1.0))  # dropped: nothing queues up to play late
    assert speaker.buffered_s == 0.0 and len(speaker.buffer) == 0
    async with asyncio.timeout(1):
        assert await speaker.drain()  # nothing to wait for

    world.plug("USB Audio")
    kind, ok, _, _ = await health.next()
    assert (kind, ok) == ("speaker", True)
    second = world.streams[-1]
    assert second is not first and first.closed
    speaker.write(tone(660, 0.5, level=0.25))

    def tone_played() -> bool:
        played = np.concatenate(second.played) if second.played else np.zeros(0, dtype=np.int16)
        return sum(rms_dbfs(played[i:i + 960]) > -30 for i in range(0, len(played) - 959, 960)) >= 20

    await asyncio.to_thread(world.wait_for, tone_played, 5, "the tone on the reopened speaker")
    played = np.concatenate(second.played)
    assert peak_hz(played[np.abs(played) > 0][:24000], 48000) == pytest.approx(660, abs=30)
    await speaker.close()
    assert world.init_count == 0


async def test_separate_cards_mic_returns_on_another_port_without_killing_the_speaker() -> None:
    """Guards against terminating PortAudio under the other direction's open stream (the last
    Pa_Terminate closes every stream), and against never seeing a card that comes back at another
    place in the device list (PortAudio scans devices only when initialised from scratch)."""
    world = World(["HDMI", "USB mic", "USB speaker"])
    mic = PyAudioSource("USB mic", sample_rate=48000, pa_factory=world.pyaudio, **FAST)
    speaker = PyAudioSink("USB speaker", sample_rate=48000, pa_factory=world.pyaudio, **FAST)
    health = HealthLog()
    mic.set_health_callback(health)
    speaker.set_health_callback(health)
    await mic.start()
    await speaker.start()
    assert world.init_count == 1  # one shared PortAudio instance

    world.unplug("USB mic", "stops")
    assert (await health.next())[:2] == ("microphone", False)
    assert speaker.healthy
    world.plug("USB mic", at=0)  # back in another USB port: a new place in the list
    assert (await health.next())[:2] == ("microphone", True)
    assert peak_hz(await read_until_tone(mic), 48000) == pytest.approx(440, abs=30)

    # The speaker was paused for the restart and reopened: it still plays, and never failed.
    speaker.write(tone(660, 0.3))
    live = [s for s in world.streams if s.device == "USB speaker" and not s.closed]
    assert len(live) == 1

    def tone_played() -> bool:
        return any(rms_dbfs(chunk) > -30 for chunk in live[0].played)

    await asyncio.to_thread(world.wait_for, tone_played, 5, "the speaker playing after the restart")
    assert speaker.healthy and all(kind == "microphone" for kind, _, _ in health.all)
    await mic.close()
    await speaker.close()
    assert world.init_count == 0


async def test_one_card_for_both_directions_fails_and_returns_as_a_whole() -> None:
    """Guards against the two supervisors of one pulled USB card (mic + speaker) deadlocking or
    leaving one direction dead when the card comes back at another place in the device list."""
    world = World(["HDMI", "USB Audio"])
    mic = PyAudioSource("usb", sample_rate=48000, pa_factory=world.pyaudio, **{**FAST, "rescan_interval_s": 30.0})
    speaker = PyAudioSink("usb", sample_rate=48000, pa_factory=world.pyaudio, **{**FAST, "rescan_interval_s": 30.0})
    health = HealthLog()
    mic.set_health_callback(health)
    speaker.set_health_callback(health)
    await mic.start()
    await speaker.start()
    world.unplug("USB Audio", "stops")
    lost = {(await health.next())[:2], (await health.next())[:2]}
    assert lost == {("microphone", False), ("speaker", False)}
    world.plug("USB Audio", at=0)
    back = {(await health.next())[:2], (await health.next())[:2]}
    assert back == {("microphone", True), ("speaker", True)}
    assert peak_hz(await read_until_tone(mic), 48000) == pytest.approx(440, abs=30)
    speaker.write(tone(660, 0.3))
    live = [s for s in world.streams if s.device == "USB Audio" and not s.is_input and not s.closed]
    assert len(live) == 1
    await asyncio.to_thread(world.wait_for, lambda: any(rms_dbfs(c) > -30 for c in live[0].played), 5,
                            "the speaker playing again")
    await mic.close()
    await speaker.close()
    assert world.init_count == 0
