"""Real microphone and speaker through PortAudio (PyAudio), chosen by device name.

PortAudio calls back on its own thread; that thread only converts its own chunk (channels) and
moves it in or out of a bounded, lock-protected ring buffer. Resampling happens on the event
loop's side, with state kept across chunks. Devices are picked by a case-insensitive substring of
their name ("USB", "seeed", "pulse"), never by index, because indexes change between boots. When
the device will not run at the wanted rate (or in mono), it runs at its own default rate (or with
its own channel count) and the samples are converted.

Callback streams never raise on overflow (``exception_on_overflow`` only concerns blocking
reads): an overflow reported by PortAudio, or a full ring buffer, is counted and the oldest audio
is dropped; an underrun plays or returns silence and is counted.

Why this module: it is the backend's one public face (the daemon's parts and the tests import the
microphone and the speaker from here), while each piece lives where it reads at once:
``ring`` (the buffer between the two threads), ``portaudio_stream`` (opening a device by name,
the stall watchdog and reopening), ``pyaudio_source`` (the microphone) and ``pyaudio_sink``
(the speaker).
"""

from __future__ import annotations

from appliance.audio.pyaudio_sink import PyAudioSink
from appliance.audio.pyaudio_source import PyAudioSource
from appliance.audio.ring import RingBuffer

__all__ = ["PyAudioSink", "PyAudioSource", "RingBuffer"]
