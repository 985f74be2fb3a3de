"""The kiosk's sound devices as a start-up service: started off the message loop, watched, closed at exit.

Why a service and not a step before the kiosk runs: a USB sound card that is not enumerated yet at boot,
or a sound server still starting, must not keep the kiosk from showing a press. A device that did not
start is reported (the kiosk shows it missing) and retried with backoff until it starts; health changes
from the backends' own threads are posted to the kiosk's queue, never applied here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from appliance.audio.base import AudioSink, AudioSource
from appliance.common.backoff import backoff_delay
from appliance.core.messages import DeviceHealth

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 5.0


class SoundDevices:
    before_ready = True
    """The kiosk announces ready once the devices were tried (their state is then shown)."""

    def __init__(self, mic: AudioSource, speaker: AudioSink,
                 on_speaker_started: Callable[[], None] | None = None) -> None:
        self.devices: list[tuple[str, AudioSource | AudioSink]] = [("microphone", mic), ("speaker", speaker)]
        self.on_speaker_started = on_speaker_started
        """Called once the speaker first plays (the kiosk's "ready" cue needs a started speaker)."""
        self._retries: list[asyncio.Task[None]] = []

    async def start(self, post: Callable[[object], None]) -> None:
        for _kind, device in self.devices:
            register = getattr(device, "set_health_callback", None)
            if callable(register):
                register(lambda kind, ok, detail: post(DeviceHealth(kind, ok, detail)))
        for kind, device in self.devices:
            problem = await start_device(kind, device)
            if problem is None:
                post(DeviceHealth(kind, True, "started"))
                self._started(kind)
            else:  # e.g. a USB sound card not enumerated yet at boot
                post(DeviceHealth(kind, False, problem))
                self._retries.append(asyncio.create_task(self._keep_starting(kind, device, post),
                                                         name=f"{kind}-start"))

    async def _keep_starting(self, kind: str, device: AudioSource | AudioSink,
                             post: Callable[[object], None]) -> None:
        failures = 0
        while True:
            failures += 1
            await asyncio.sleep(backoff_delay(failures, 2.0, 60.0))
            if await start_device(kind, device) is None:
                post(DeviceHealth(kind, True, "started"))
                self._started(kind)
                return

    def _started(self, kind: str) -> None:
        if kind == "speaker" and self.on_speaker_started is not None:
            self.on_speaker_started()

    async def stop(self) -> None:
        for task in self._retries:
            task.cancel()
        await asyncio.gather(*self._retries, return_exceptions=True)
        for _kind, device in self.devices:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await device.close()


async def start_device(kind: str, device: AudioSource | AudioSink) -> str | None:
    """Start a sound device (bounded); the reason when it did not start."""
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            await device.start()
    except Exception as exc:
        log.error("the %s did not start: %s", kind, exc)
        return str(exc) or type(exc).__name__
    return None


class CallStackWarmUp:
    """Import the call stack and load the trust store in a worker thread right after start-up.

    ``done`` is set when it finished (or failed: the first call then imports what is missing), so the
    call opener waits on it instead of blocking the loop on the import lock the worker holds."""

    def __init__(self, warm_up: Callable[[], None]) -> None:
        self.warm_up = warm_up
        self.done = asyncio.Event()

    async def start(self, post: Callable[[object], None]) -> None:
        try:
            await asyncio.to_thread(self.warm_up)
        except Exception:
            log.exception("warming up the call stack failed; the first call will load it")
        finally:
            self.done.set()

    async def stop(self) -> None:
        self.done.set()
