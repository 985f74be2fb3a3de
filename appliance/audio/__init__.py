"""Audio for Stella Kiosk: a microphone (AudioSource) and a speaker (AudioSink) behind one small
interface, with WAV, null and PortAudio backends, the speaker pump and the half-duplex gate.

Names are loaded on first use, so importing a small helper (``appliance.audio.dsp``) does not pull
in aiortc or PortAudio; PortAudio is imported only when a PyAudio device is opened or listed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AudioDeviceError": "base",
    "AudioSink": "base",
    "AudioSource": "base",
    "HalfDuplexGate": "gate",
    "SpeakerPump": "speaker",
    "NullSink": "wav",
    "ScriptedMicrophone": "wav",
    "WavFileSink": "wav",
    "read_wav": "wav",
    "PyAudioSink": "pyaudio_backend",
    "PyAudioSource": "pyaudio_backend",
    "DeviceInfo": "devices",
    "list_devices": "devices",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
