"""Opening a PortAudio device by name and keeping its callback stream alive: the part the
microphone (``pyaudio_source``) and the speaker (``pyaudio_sink``) share.

Why one base: finding the device, negotiating rate and channels, the stall watchdog, the reopen
with backoff and the coordinated PortAudio restart are the same for both directions; only the
callback and what is buffered differ. Devices are picked by a case-insensitive substring of their
name ("USB", "seeed", "pulse"), never by index, because indexes change between boots. When the
device will not run at the wanted rate (or in mono), it runs at its own default rate (or with its
own channel count) and the samples are converted by the subclass.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from appliance.audio.base import AudioDeviceError
from appliance.audio.devices import DeviceInfo, find_device, list_devices, no_device_message, pyaudio_instance
from appliance.audio.health import MICROPHONE, DeviceHealth, HealthCallback
from appliance.audio.portaudio_host import host_for

log = logging.getLogger(__name__)

FRAMES_PER_BUFFER_S = 0.02
"""PortAudio period: 20 ms, the WebRTC frame size (a Pi copes; larger only adds latency)."""
STALL_TIMEOUT_S = 3.0
"""No PortAudio callback for this long while the stream should run: the device hangs.

A pulled card or a removed sink shows at once (stream stopped, PortAudio error); this watchdog is
the backstop for a device that hangs silently. Not shorter: PulseAudio's ALSA plugin pauses its
callbacks for ~1.9 s after every underrun (measured), which is a glitch, not a lost device."""
STARTUP_GRACE_S = 4.0
"""A stream just opened may pause longer: PulseAudio's ALSA plugin goes quiet ~2 s while a sink wakes up."""
SUPERVISE_POLL_S = 0.25
RETRY_MIN_S = 0.5
RETRY_MAX_S = 10.0
"""Reopen attempts after a failure: 0.5 s, 1 s, 2 s … every 10 s (a local device: no jitter needed)."""
RESCAN_INTERVAL_S = 30.0
"""How often a recovering device may restart PortAudio under the other direction's running stream."""


class PortAudioStream:
    """Shared logic: find the device, negotiate rate and channels, open a callback stream, and keep it alive.

    A supervisor thread watches the open stream (PortAudio errors, a stream that stopped, callbacks
    that stopped coming for ``stall_timeout_s``, or for ``startup_grace_s`` just after opening).
    On failure it closes the dead stream, reports ``ok=False``, and retries opening the device by
    its configured name with capped exponential backoff (``retry_min_s`` doubling up to
    ``retry_max_s``), reporting ``ok=True`` once audio flows again. PortAudio work happens only
    on that thread or in worker threads, under the shared :class:`PortAudioHost` lock; the event
    loop only reads and writes ring buffers (silence / dropped writes while the device is gone).

    Callback streams never raise on read/write (that is a blocking-stream behaviour), and
    PortAudio has no callback status flag for "device removed": a removed device shows as a
    stream that is no longer active, an OSError from PortAudio, or callbacks that stop.
    """

    direction = "input"
    kind = MICROPHONE

    def __init__(self, device_name: str, sample_rate: int = 48000,
                 pa_factory: Callable[[], Any] = pyaudio_instance, *,
                 stall_timeout_s: float = STALL_TIMEOUT_S, startup_grace_s: float = STARTUP_GRACE_S,
                 retry_min_s: float = RETRY_MIN_S, retry_max_s: float = RETRY_MAX_S,
                 rescan_interval_s: float = RESCAN_INTERVAL_S) -> None:
        self.device_name = device_name
        self.sample_rate = sample_rate
        self._host = host_for(pa_factory)
        self._stream: Any = None
        self.device: DeviceInfo | None = None
        self.device_rate = sample_rate
        self.channels = 1
        self.latency_s = 0.0
        self.stall_timeout_s = stall_timeout_s
        self.startup_grace_s = max(startup_grace_s, stall_timeout_s)
        self._started_at = 0.0
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.rescan_interval_s = rescan_interval_s
        self._health = DeviceHealth(self.kind)
        self._io_lock = threading.Lock()
        self._last_callback = 0.0
        self._flowing = threading.Event()
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._last_rescan = float("-inf")
        self.failures = 0
        self.recoveries = 0
        self.retries = 0

    # -- health ------------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        return self._health.healthy

    @property
    def problem(self) -> str | None:
        return self._health.problem

    def set_health_callback(self, callback: HealthCallback) -> None:
        """``callback(kind, ok, detail)`` when the device fails or is back; called from the supervisor thread."""
        self._health.set_callback(callback)

    @property
    def running(self) -> bool:
        return self._stream is not None

    # -- opening -----------------------------------------------------------------------------

    def _candidates(self, device: DeviceInfo) -> list[tuple[int, int]]:
        """(rate, channels) to try, best first: the wanted rate, then the device's own, in mono first."""
        rates = dict.fromkeys([self.sample_rate, int(device.default_rate), 48000, 44100, 16000])
        most = device.max_input_channels if self.direction == "input" else device.max_output_channels
        channels = dict.fromkeys([1, min(2, most), most])
        return [(r, c) for c in channels for r in rates if r > 0 and c > 0]

    def _open(self) -> None:
        """Blocking (PortAudio probes devices): run in a worker thread. AudioDeviceError names the device."""
        with self._host.lock:
            try:
                self._open_locked()
            except BaseException:
                self._close_stream()
                raise

    def _open_locked(self) -> None:
        import pyaudio

        pa = self._host.pyaudio()
        devices = list_devices(pa)
        self.device = find_device(devices, self.device_name, self.direction)
        is_input = self.direction == "input"
        errors: list[str] = []
        for rate, channels in self._candidates(self.device):
            self.device_rate, self.channels = rate, channels
            self._prepare()
            try:
                self._flowing.clear()
                self._last_callback = time.monotonic()
                self._stream = pa.open(
                    format=pyaudio.paInt16, channels=channels, rate=rate, input=is_input,
                    output=not is_input,
                    input_device_index=self.device.index if is_input else None,
                    output_device_index=None if is_input else self.device.index,
                    frames_per_buffer=int(rate * FRAMES_PER_BUFFER_S), stream_callback=self._make_callback())
                break
            except (OSError, ValueError) as exc:
                errors.append(f"{rate} Hz x{channels}: {exc}")
        else:
            raise AudioDeviceError(no_device_message(
                devices, self.device_name, self.direction,
                f"cannot open {self.direction} device {self.device.name!r} ({'; '.join(errors[:3])}); "
                "is it in use by another program?"))
        self._host.opened(self)
        try:
            latency = self._stream.get_input_latency() if is_input else self._stream.get_output_latency()
            self.latency_s = max(0.0, float(latency))
        except (OSError, AttributeError, TypeError, ValueError):
            self.latency_s = 0.0
        self._last_callback = self._started_at = time.monotonic()
        self._stream.start_stream()
        if (self.device_rate, self.channels) != (self.sample_rate, 1):
            log.info("%s device %r runs at %d Hz x%d; converting to %d Hz mono", self.direction,
                     self.device.name, self.device_rate, self.channels, self.sample_rate)
        else:
            log.info("%s device %r open at %d Hz", self.direction, self.device.name, self.device_rate)

    def _make_callback(self) -> Callable[[bytes | None, int, Any, int], tuple[bytes | None, int]]:
        raise NotImplementedError

    def _callback_seen(self) -> None:
        """Called by every PortAudio callback: feeds the stall watchdog (cheap: a clock read)."""
        self._last_callback = time.monotonic()
        if not self._flowing.is_set():
            self._flowing.set()

    def _prepare(self) -> None:
        """Set up buffers and resamplers for ``device_rate`` (before the stream runs)."""

    def _forget_audio(self) -> None:
        """Drop what is buffered: after a failure it is stale."""

    def _close_stream(self) -> None:
        """Close the stream (if any) and tell the host; with the host lock held."""
        with self._host.lock:
            self._pause_stream()
            self._host.closed(self)

    # -- coordinated PortAudio restart (called by the host, lock held) ---------------------------

    def _pause_stream(self) -> None:
        """Close the stream, whatever state a lost device left it in (the host lock is held)."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            if stream.is_active():
                stream.stop_stream()
        except OSError as exc:  # a vanished device may refuse even this; closing still frees it
            log.info("stopping the %s stream: %s", self.direction, exc)
        try:
            stream.close()
        except OSError as exc:
            log.warning("closing the %s device: %s", self.direction, exc)

    def _resume_stream(self) -> None:
        try:
            self._open_locked()
        except Exception as exc:  # left closed: the supervisor reports it and retries
            log.warning("%s %r did not reopen after the PortAudio restart: %s", self.kind, self.device_name, exc)
            self._pause_stream()
            self._host.forget(self)

    # -- supervision ---------------------------------------------------------------------------

    def _start_supervisor(self) -> None:
        self._stop.clear()
        self._supervisor = threading.Thread(target=self._supervise, name=f"{self.kind}-supervisor", daemon=True)
        self._supervisor.start()

    def _supervise(self) -> None:
        poll_s = min(SUPERVISE_POLL_S, self.stall_timeout_s / 4)
        while not self._stop.wait(poll_s):
            problem = self._check()
            if problem is None:
                continue
            self.failures += 1
            self._last_rescan = time.monotonic()  # the first retries try PortAudio's current device list
            self._close_stream()
            self._forget_audio()
            self._health.failed(f"{self.kind} {self.device_name!r} stopped working: {problem}")
            self._recover()

    def _check(self) -> str | None:
        """What is wrong with the running stream, or None."""
        with self._host.lock:
            stream = self._stream
            if stream is None:
                return "its stream closed (it did not reopen after a PortAudio restart)"
            try:
                if not stream.is_active():
                    return "the stream stopped (device unplugged or sound server gone)"
            except OSError as exc:
                return f"PortAudio error: {exc}"
            now = time.monotonic()
            silent = now - self._last_callback
        starting = now - self._started_at < self.startup_grace_s
        if silent > (self.startup_grace_s if starting else self.stall_timeout_s):
            return f"no audio callbacks for {silent:.1f} s"
        return None

    def _recover(self) -> None:
        """Reopen by name until it works (or the device is closed), waiting longer after each failure."""
        delay = self.retry_min_s
        while not self._stop.wait(delay):
            self.retries += 1
            problem = self._try_reopen()
            if problem is None:
                self.recoveries += 1
                name = self.device.name if self.device else self.device_name
                self._health.recovered(f"{self.kind} {self.device_name!r} is back ({name!r})")
                return
            self._health.failed(f"{self.kind} {self.device_name!r}: {problem}")
            delay = min(delay * 2, self.retry_max_s)

    def _try_reopen(self) -> str | None:
        """One attempt: open the device and wait for its first callback; None when audio flows."""
        try:
            with self._host.lock:
                now = time.monotonic()
                if self._host.others_open(self) and now - self._last_rescan >= self.rescan_interval_s:
                    self._last_rescan = now
                    self._host.reinitialise(self)
                self._open()
        except AudioDeviceError as exc:
            return str(exc)
        except Exception as exc:  # PortAudio's error types vary; keep retrying
            return f"{type(exc).__name__}: {exc}"
        deadline = time.monotonic() + self.startup_grace_s
        while not self._flowing.wait(0.05) and time.monotonic() < deadline and not self._stop.is_set():
            pass  # waiting for the first callback, stopping early when the device is being closed
        if self._stop.is_set():  # closing: not "back", just closed
            self._close_stream()
            return "closed"
        if self._flowing.is_set() and self._check() is None:
            self._forget_audio()
            return None
        self._close_stream()
        return "opened, but no audio came through"

    # -- closing ---------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self._stop.set()
        supervisor, self._supervisor = self._supervisor, None
        if supervisor is not None and supervisor is not threading.current_thread():
            supervisor.join()
        self._close_stream()

    async def close(self) -> None:
        """Stop the device and its supervisor (off the loop: PortAudio waits for its buffers)."""
        await asyncio.to_thread(self._shutdown)
