"""The kiosk's settings, one frozen dataclass per section of the TOML file.

Why this module holds only the dataclasses: each field's default and docstring are the reference an
admin reads, and the loader derives the allowed sections, keys, types and choices from them, so a
new setting is one field here (and a range check in ``validation`` when it needs one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.config.errors import ConfigError
from appliance.contract.names import LEVELS


def _check(choices: tuple[str, ...]) -> dict[str, Any]:
    return {"choices": choices}


@dataclass(frozen=True)
class KioskSettings:
    """Identity and local state of this kiosk."""

    id: str = "kiosk-01"
    """Name of this kiosk at the companion (letters, digits, '-', '_')."""
    state_dir: Path = Path("/var/lib/stella-kiosk")
    """Where lessons are stored (session database, outbox). Must be writable by the service."""
    log_level: str = field(default="info", metadata=_check(("debug", "info", "warning", "error")))
    """Logging verbosity."""
    keep_synced_days: float = 30.0
    """Lessons the companion confirmed are deleted from the kiosk after this many days (counted on a
    synchronized clock only, so a clock stepped by network time never deletes a lesson early)."""
    max_stored_lessons: int = 5000
    """Cap on stored lessons; the oldest synced ones go first, unsynced ones are never deleted."""
    control_socket: Path = Path("/run/stella-kiosk/control.sock")
    """UNIX socket for `stella-kiosk status|press|stop|say` (mode 0660: the service's group only)."""


@dataclass(frozen=True)
class CompanionSettings:
    """The school's companion service: lesson plans, ephemeral tokens, finished sessions."""

    url: str = "http://127.0.0.1:8700"
    """Base URL of the companion. https:// is the rule; http:// only to this machine (127.0.0.1, ::1,
    localhost) unless allow_insecure_http. Never user:password@ in it: the device key authenticates."""
    allow_insecure_http: bool = False
    """Allow http:// to another machine. The device key and learners' transcripts then cross the
    network in clear text: only for a closed lab network."""
    ca_file: Path | None = None
    """A PEM file with the school's own CA certificate(s), trusted in addition to the OS store
    (/etc/ssl/certs). Not needed when the CA is installed in the OS store (update-ca-certificates)."""
    device_key_file: Path = Path("/etc/stella-kiosk/device.key")
    """File holding this kiosk's device key (one line). Checked at start-up like ssh checks its keys: a
    regular file, not empty, owned by the user the kiosk runs as (or root), and no group or other
    permission bits (mode 0600 or 0400). The installer makes it stella-kiosk:stella-kiosk 0600, the
    service's own user. When root runs the check, any owner is accepted (root reads it anyway)."""
    timeout_s: float = 5.0
    """Per-request timeout; a press never hangs longer than this waiting for the companion."""
    prefetch: bool = True
    """Keep the next lesson's plan and token ready while idle, so a press goes straight to the call."""
    sync_interval_s: float = 300.0
    """Besides after every lesson, waiting lessons are sent this often (and retried with capped
    exponential backoff while the companion is unreachable)."""


@dataclass(frozen=True)
class RealtimeSettings:
    """The Realtime API call (OpenAI, a proxy, or the local simulator)."""

    base_url: str = "https://api.openai.com"
    """Base URL; the kiosk POSTs its SDP offer to {base_url}/v1/realtime/calls. Same rules as
    companion.url: https://, or http:// to this machine (the local simulator)."""
    allow_insecure_http: bool = False
    """Allow http:// to another machine (the call's token then crosses the network in clear text)."""
    ice_servers: list[str] = field(default_factory=list)
    """STUN/TURN URLs (e.g. "stun:stun.example.org:3478"). Empty: host candidates only, no waiting."""
    allow_loopback_ice: bool = False
    """Offer 127.0.0.1 as an ICE candidate. Only for a simulator on the same machine."""
    connect_timeout_s: float = 10.0
    """How long a press may take to reach a connected call before it counts as failed."""
    ice_lite_consent_fix: bool = True
    """Nominate consent checks toward ICE-lite peers, which otherwise drop the call after ~30 s."""


@dataclass(frozen=True)
class LessonSettings:
    """What a lesson is and how it ends."""

    level: str = field(default="A2", metadata=_check(LEVELS))
    """Learner level (CEFR) sent to the planner."""
    stop_phrases: list[str] = field(default_factory=lambda: ["stop"])
    """Learner words that end the lesson (matched on the learner's transcribed words only)."""
    max_minutes: float = 10.0
    """Hard limit of one lesson, so a forgotten call never runs up a bill."""
    idle_limit_s: float = 90.0
    """No learner speech for this long: the tutor says goodbye and the lesson ends."""
    greeting: bool = True
    """The tutor speaks first as soon as the call is up, so the learner knows it listens."""
    voice: str = ""
    """The tutor's voice on this kiosk: alloy ash ballad coral echo sage shimmer verse marin cedar.
    Empty: the companion's choice (its voice for the lesson's level, else its default). Set, it wins
    over the companion's. A voice the model refuses falls back to marin, with a warning."""


@dataclass(frozen=True)
class AudioSettings:
    """Microphone and speaker."""

    input: str = field(default="pyaudio", metadata=_check(("pyaudio", "wav")))
    """pyaudio: a real microphone; wav: a scripted learner playing WAV files (demo, tests)."""
    input_device: str = "default"
    """Microphone chosen by a substring of its name (e.g. "USB", "seeed"), never by index."""
    input_wavs: list[Path] = field(default_factory=list)
    """With input = "wav": clips the scripted learner says, one after each tutor turn."""
    output: str = field(default="pyaudio", metadata=_check(("pyaudio", "wav", "null")))
    """pyaudio: a real speaker; wav: record the tutor to output_wav; null: discard."""
    output_device: str = "default"
    """Speaker chosen by a substring of its name."""
    output_wav: Path = Path("tutor.wav")
    """With output = "wav": where the tutor's audio is recorded."""
    sample_rate: int = 48000
    """Preferred device rate in Hz; the kiosk resamples when the device wants another."""
    volume: int = 80
    """Speaker volume, 0–100."""
    echo: str = field(default="half_duplex", metadata=_check(("half_duplex", "full_duplex")))
    """half_duplex: the mic sends silence while the tutor is audible (speaker next to the mic, no
    echo cancellation); full_duplex: for AEC hardware or PulseAudio's echo-cancel module."""
    echo_tail_ms: int = 300
    """With half_duplex: how long after the tutor stops before the mic opens again (room echo)."""
    cues: bool = True
    """Short sounds for ready, connected, lesson ended and error (the learner has no screen)."""


@dataclass(frozen=True)
class ButtonSettings:
    """The big button."""

    pin: int = 17
    """BCM GPIO number of the button."""
    pull_up: bool = True
    """True: button wired to ground (internal pull-up); False: wired to 3.3 V."""
    bounce_ms: int = 50
    """Presses closer together than this are one press (contact bounce)."""
    mode: str = field(default="toggle", metadata=_check(("toggle", "hold")))
    """toggle: press starts, press again ends. hold: press starts, then hold the button to talk
    (for noisy classrooms: the tutor only hears the learner while the button is held)."""
    long_press_s: float = 3.0
    """Holding the button this long ends the lesson, in every mode (in hold mode: a silent hold, so a
    long spoken turn never ends the lesson by accident)."""


@dataclass(frozen=True)
class LedSettings:
    """Status light: one LED per state, one RGB LED (BCM numbers; 0 = not fitted), or the APA102 pixels of a
    ReSpeaker 2-mic / 4-mic Pi HAT (on SPI 0, chip select 1)."""

    kind: str = field(default="single", metadata=_check(("single", "rgb", "apa102")))
    """single: the four pins below, one LED per state; rgb: one RGB LED on red/green/blue; apa102: the
    ReSpeaker HAT's pixels (enable SPI: dtparam=spi=on; its button is GPIO17, the button's default pin)."""
    idle: int = 22
    connecting: int = 23
    connected: int = 24
    error: int = 25
    red: int = 0
    green: int = 0
    blue: int = 0
    level_meter: bool = True
    """While the learner talks, the connected light's brightness follows the microphone's level (what the
    tutor hears); while the tutor talks, the speaker's. False: steady, or the tutor's slow pulse."""
    pixels: int = 3
    """apa102: how many pixels: 3 on the 2-mic HAT, 12 on the 4-mic HAT (1-64 for another strip)."""
    brightness: float = 0.5
    """apa102: the brightest the pixels ever get, 0.05-1.0 of full (they are bright at arm's length)."""
    power_pin: int = 0
    """apa102: a pin to drive high to power the pixels (5 on the 4-mic HAT; 0: none, as on the 2-mic HAT)."""


@dataclass(frozen=True)
class GpioSettings:
    """Which GPIO library drives the pins."""

    pin_factory: str = field(default="auto", metadata=_check(("auto", "mock", "lgpio", "rpigpio")))
    """auto: gpiozero's choice; mock: simulated pins (demo, machines without GPIO)."""


@dataclass(frozen=True)
class SyncSettings:
    """Sending lessons and the kiosk's state to the companion."""

    heartbeat_s: float = 300.0
    """While idle, tell the companion this kiosk's state (version, unsent lessons, free disk, last error)
    this often, besides after every sync, so the school's fleet view shows a kiosk that is up but unused."""


@dataclass(frozen=True)
class UpdateSettings:
    """Updates over the air from the companion's signed repository (the updater service,
    stella-kiosk-updater.service; see docs/UPDATES.md)."""

    enabled: bool = False
    """Check for, install and switch to new releases on the schedule below."""
    trusted_root: Path = Path("/etc/stella-kiosk/root.json")
    """The repository's root metadata the kiosk was installed with: where its trust in release signatures
    starts (it then follows every key rotation by itself)."""
    check_hours: float = 6.0
    """Check this often (and at the updater's start, e.g. after an offline kiosk boots again)."""
    jitter_minutes: float = 60.0
    """Each wait is lengthened by a random 0..jitter_minutes, so a fleet never asks all at once."""
    prefix: Path = Path("/opt/stella-kiosk")
    """Where versions are installed: releases/<version>, and the current and previous links."""
    health_timeout_s: float = 120.0
    """After a switch the new version must be ready, answer its control socket with its version and pass
    `doctor --local` within this bound; otherwise the previous version is restored."""


@dataclass(frozen=True)
class Config:
    """The whole kiosk configuration."""

    kiosk: KioskSettings = field(default_factory=KioskSettings)
    companion: CompanionSettings = field(default_factory=CompanionSettings)
    realtime: RealtimeSettings = field(default_factory=RealtimeSettings)
    lesson: LessonSettings = field(default_factory=LessonSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    button: ButtonSettings = field(default_factory=ButtonSettings)
    leds: LedSettings = field(default_factory=LedSettings)
    gpio: GpioSettings = field(default_factory=GpioSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    updates: UpdateSettings = field(default_factory=UpdateSettings)
    source: str = "<defaults>"
    """The file this was loaded from (for messages)."""

    def read_device_key(self) -> str:
        """The device key, read when needed so it never sits in logs or repr output."""
        path = self.companion.device_key_file
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(self.source, "companion.device_key_file",
                              f"cannot read {path}: {exc.strerror or exc}") from None
        if not key:
            raise ConfigError(self.source, "companion.device_key_file", f"{path} is empty")
        return key
