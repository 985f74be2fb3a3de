"""Sound devices as PortAudio sees them, and picking one by a substring of its name.

Why names, not indexes: PortAudio numbers devices in probing order, which changes when a USB
sound card is plugged in later or the kernel enumerates cards differently after an update.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from appliance.audio.base import AudioDeviceError

DEFAULT_NAMES = ("", "default")


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device (for ``doctor`` and for choosing a device by name)."""

    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_rate: float
    host_api: str = ""
    is_default_input: bool = False
    is_default_output: bool = False

    def can(self, direction: str) -> bool:
        """Whether the device can record (``"input"``) or play (``"output"``)."""
        return (self.max_input_channels if direction == "input" else self.max_output_channels) > 0

    def describe(self) -> str:
        marks = [m for m, on in (("default in", self.is_default_input), ("default out", self.is_default_output)) if on]
        extra = f", {', '.join(marks)}" if marks else ""
        return (f"{self.name!r} (in {self.max_input_channels}/out {self.max_output_channels}, "
                f"{self.default_rate:.0f} Hz{extra})")


def pyaudio_instance() -> Any:
    """A PyAudio instance with PortAudio's probing chatter (ALSA/JACK warnings on stderr) silenced.

    AudioDeviceError when PortAudio itself cannot start.
    """
    try:
        import pyaudio
    except ImportError as exc:
        raise AudioDeviceError(f"PyAudio is not installed ({exc}); install the kiosk with its dependencies "
                               "(build needs portaudio19-dev)") from None
    try:
        with _quiet_stderr():
            return pyaudio.PyAudio()
    except Exception as exc:  # PortAudio's init error types vary
        raise AudioDeviceError(f"PortAudio cannot start: {exc}") from None


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 while PortAudio probes (C libraries write there directly)."""
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


def _default_index(pa: Any, direction: str) -> int:
    try:
        info = pa.get_default_input_device_info() if direction == "input" else pa.get_default_output_device_info()
        return int(info["index"])
    except (OSError, KeyError, TypeError, ValueError):  # "No Default Input Device Available"
        return -1


def list_devices(pa: Any = None) -> list[DeviceInfo]:
    """Every PortAudio device (empty when there is none or PortAudio cannot start)."""
    own = pa is None
    try:
        pa = pa or pyaudio_instance()
    except AudioDeviceError:
        return []
    try:
        default_in, default_out = _default_index(pa, "input"), _default_index(pa, "output")
        devices = []
        for i in range(pa.get_device_count()):
            try:
                info = pa.get_device_info_by_index(i)
                host_api = ""
                with contextlib.suppress(Exception):
                    host_api = str(pa.get_host_api_info_by_index(int(info["hostApi"]))["name"])
                index = int(info.get("index", i))
                devices.append(DeviceInfo(index, str(info["name"]), int(info["maxInputChannels"]),
                                          int(info["maxOutputChannels"]), float(info["defaultSampleRate"]),
                                          host_api, index == default_in, index == default_out))
            except (OSError, KeyError, TypeError, ValueError):
                continue  # a device that vanished while listing
        return devices
    finally:
        if own:
            pa.terminate()


def find_device(devices: list[DeviceInfo], name: str, direction: str) -> DeviceInfo:
    """The device ``name`` names for ``direction`` ("input"/"output").

    "default" (or empty) is PortAudio's default device; otherwise an exact (case-insensitive)
    name wins over the first name containing ``name``. AudioDeviceError lists what exists.
    """
    usable = [d for d in devices if d.can(direction)]
    wanted = name.strip().lower()
    if wanted in DEFAULT_NAMES:
        for device in usable:
            if device.is_default_input if direction == "input" else device.is_default_output:
                return device
        wanted = "default"
    for device in usable:
        if device.name.lower() == wanted:
            return device
    for device in usable:
        if wanted in device.name.lower():
            return device
    raise AudioDeviceError(no_device_message(devices, name, direction))


def no_device_message(devices: list[DeviceInfo], name: str, direction: str, problem: str = "") -> str:
    """An actionable message: what was asked for, what went wrong, which devices exist."""
    usable = [d for d in devices if d.can(direction)]
    names = ", ".join(repr(d.name) for d in usable) or "none at all (no sound card or sound server found)"
    what = problem or f"no {direction} device matches {name!r}"
    return (f"{what}; {direction} devices here: {names}. "
            f"Set [audio] {direction}_device to part of one of these names.")


def missing_device_line(kind: str, name: str, devices: list[DeviceInfo], direction: str) -> str | None:
    """"microphone 'USB' not found: devices present: ..." when ``name`` matches no device, else None.

    For ``doctor`` and support calls: which configured device is missing, and what could be
    configured instead (only the devices that can record, or play, are listed).
    """
    try:
        find_device(devices, name, direction)
        return None
    except AudioDeviceError:
        pass
    usable = [d.describe() for d in devices if d.can(direction)]
    present = ", ".join(usable) or "none (no sound card or sound server found)"
    return (f"{kind} {name!r} not found: devices present: {present}; "
            f"set [audio] {direction}_device to part of one of these names")
