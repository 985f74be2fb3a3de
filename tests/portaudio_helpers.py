"""A scripted PortAudio (PyAudio's interface) with named devices and the rates and channel counts each
one accepts: device choice and negotiation tested without a sound card. Shared by
tests/test_audio_pyaudio.py and tests/test_audio_quality.py."""

from __future__ import annotations

import threading
from typing import Any


class FakeStream:
    """One PortAudio stream: its callback is run on demand, on a thread of its own."""

    def __init__(self, rate: int, channels: int, is_input: bool, callback: Any, frames: int) -> None:
        self.rate, self.channels, self.is_input, self.frames = rate, channels, is_input, frames
        self.callback = callback
        self.active = False
        self.closed = False

    def start_stream(self) -> None:
        self.active = True

    def is_active(self) -> bool:
        return self.active

    def stop_stream(self) -> None:
        self.active = False

    def close(self) -> None:
        self.closed = True

    def get_input_latency(self) -> float:
        return 0.01

    def get_output_latency(self) -> float:
        return 0.03

    def run_callback(self, data: bytes | None = None, status: int = 0) -> bytes | None:
        """One PortAudio period, on a thread of its own as PortAudio does."""
        result: list[Any] = []
        thread = threading.Thread(target=lambda: result.append(self.callback(data, self.frames, {}, status)))
        thread.start()
        thread.join()
        return result[0][0]


class FakePyAudio:
    """Devices as dicts like PyAudio returns; ``supported`` = device index → {(rate, channels)}."""

    def __init__(self, devices: list[dict[str, Any]], supported: dict[int, set[tuple[int, int]]],
                 default_in: int = -1, default_out: int = -1) -> None:
        self.devices, self.supported = devices, supported
        self.default_in, self.default_out = default_in, default_out
        self.streams: list[FakeStream] = []
        self.terminated = False

    def get_device_count(self) -> int:
        return len(self.devices)

    def get_device_info_by_index(self, i: int) -> dict[str, Any]:
        return {"index": i, "hostApi": 0, **self.devices[i]}

    def get_host_api_info_by_index(self, i: int) -> dict[str, Any]:
        return {"name": "ALSA"}

    def get_default_input_device_info(self) -> dict[str, Any]:
        if self.default_in < 0:
            raise OSError("No Default Input Device Available")
        return self.get_device_info_by_index(self.default_in)

    def get_default_output_device_info(self) -> dict[str, Any]:
        if self.default_out < 0:
            raise OSError("No Default Output Device Available")
        return self.get_device_info_by_index(self.default_out)

    def open(self, *, format: int, channels: int, rate: int, input: bool, output: bool,
             input_device_index: int | None, output_device_index: int | None, frames_per_buffer: int,
             stream_callback: Any) -> FakeStream:
        index = input_device_index if input else output_device_index
        assert index is not None, "the backend always names the device it chose"
        if (rate, channels) not in self.supported.get(index, set()):
            raise OSError(-9997, "Invalid sample rate")
        stream = FakeStream(rate, channels, input, stream_callback, frames_per_buffer)
        self.streams.append(stream)
        return stream

    def terminate(self) -> None:
        self.terminated = True


def device(name: str, ins: int, outs: int, rate: float = 44100.0) -> dict[str, Any]:
    return {"name": name, "maxInputChannels": ins, "maxOutputChannels": outs, "defaultSampleRate": rate}


def usb_card_portaudio() -> FakePyAudio:
    """A Pi with HDMI (output only) and a USB card that only runs 44.1 kHz stereo."""
    return FakePyAudio(
        [device("vc4-hdmi-0: MAI PCM i2s-hifi-0 (hw:0,0)", 0, 2, 48000),
         device("USB PnP Sound Device: Audio (hw:1,0)", 2, 2, 44100),
         device("default", 32, 32, 44100)],
        supported={1: {(44100, 2)}, 0: {(48000, 2)}, 2: {(r, c) for r in (16000, 44100, 48000) for c in (1, 2)}},
        default_in=2, default_out=2)
