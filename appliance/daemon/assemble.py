"""Build a kiosk from its real parts: the one place that knows which adapter fills which port.

`stella-kiosk run`, the demo, the benchmarks and the tests all build their kiosk here, so they run the
same wiring; each may hand in its own microphone, speaker, LEDs, store, observer or call factory.
"""

from __future__ import annotations

from typing import Any

from appliance.audio.base import AudioSink, AudioSource
from appliance.audio.meter import LevelMeter
from appliance.call.webrtc import RealtimeCall, warm_up
from appliance.config import Config
from appliance.core.kiosk import Kiosk
from appliance.core.observer import NullObserver
from appliance.core.ports import Activity, KioskObserver, KioskParts
from appliance.core.state import Cue, State
from appliance.daemon.devices import CallStackWarmUp, SoundDevices
from appliance.daemon.keeper import StoreKeeper
from appliance.daemon.opener import CallFactory, CompanionCallOpener
from appliance.daemon.speaker_link import SpeakerLink
from appliance.daemon.systemd import Notifier
from appliance.store.sessions import SessionStore
from appliance.uplink.client import CompanionClient


class NoLights:
    """A kiosk without status LEDs (a trial on a laptop, most tests)."""

    def show(self, state: State, activity: Activity = Activity.NONE) -> None:
        pass


def level_meter(config: Config, leds: Any) -> LevelMeter | None:
    """The status light's level meter, fed by the microphone's track and the speaker pump; None when the
    config turns it off or the light cannot show a level (no LEDs)."""
    show = getattr(leds, "level", None)
    if not config.leds.level_meter or not callable(show):
        return None
    return LevelMeter(show)


def build_kiosk(config: Config, *, companion: CompanionClient, store: SessionStore, mic: AudioSource,
                speaker: AudioSink, leds: Any = None, observer: KioskObserver | None = None,
                notifier: Notifier | None = None, call_factory: CallFactory = RealtimeCall,
                warm: Any = warm_up) -> Kiosk:
    """A kiosk wired to these parts; ``warm`` is the call stack's warm-up (a test may slow it)."""
    meter = level_meter(config, leds)
    link = SpeakerLink(speaker, volume=config.audio.volume, cues=config.audio.cues, meter=meter)
    warm_up_service = CallStackWarmUp(warm)
    opener = CompanionCallOpener(config, companion, call_factory, warmed_up=warm_up_service.done,
                                 mic_tap=meter.heard if meter is not None else None)
    parts = KioskParts(
        lights=leds if leds is not None else NoLights(),
        speaker=link,
        mic=mic,
        keeper=StoreKeeper(config, store, companion),
        opener=opener,
        notifier=notifier or Notifier(),
        observer=observer or NullObserver(),
        services=[SoundDevices(mic, speaker, on_speaker_started=lambda: link.cue(Cue.READY)), warm_up_service,
                  opener],
    )
    return Kiosk(config, parts)
