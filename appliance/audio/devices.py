"""Sound devices as PortAudio sees them, and picking one by a substring of its name."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from appliance.audio.base import AudioDeviceError


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_rate: float


def pyaudio_instance() -> Any:
    """A PyAudio instance with PortAudio's probing chatter (ALSA warnings on stderr) silenced."""
    import pyaudio

    with _quiet_stderr():
        return pyaudio.PyAudio()


@contextlib.contextmanager
def _quiet_stderr() -> Any:
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def list_devices(pa: Any = None) -> list[DeviceInfo]:
    """Every PortAudio device (empty when there is none or PortAudio cannot start)."""
    own = pa is None
    try:
        pa = pa or pyaudio_instance()
    except Exception:  # no PortAudio at all
        return []
    try:
        devices = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            devices.append(DeviceInfo(i, str(info["name"]), int(info["maxInputChannels"]),
                                      int(info["maxOutputChannels"]), float(info["defaultSampleRate"])))
        return devices
    finally:
        if own:
            pa.terminate()


def find_device(devices: list[DeviceInfo], name: str, direction: str) -> DeviceInfo:
    """The first device whose name contains ``name`` (case-insensitive) and can do ``direction``."""
    usable = [d for d in devices if (d.max_input_channels if direction == "input" else d.max_output_channels) > 0]
    for device in usable:
        if name.lower() in device.name.lower():
            return device
    names = ", ".join(repr(d.name) for d in usable) or "none at all (no sound card or server found)"
    raise AudioDeviceError(f"no {direction} device matches {name!r}; {direction} devices here: {names}. "
                           f"Set [audio] {direction}_device to part of one of these names.")
