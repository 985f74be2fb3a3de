"""The kiosk's one TOML configuration file, loaded into frozen dataclasses and validated at start-up.

Why so strict: a kiosk runs unattended for months, so a typo must stop it at boot with one line that
names the file, the key, the bad value and what is allowed (exit 78, EX_CONFIG) rather than surface
as a strange failure in the middle of a lesson.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from appliance.contract.names import LEVELS

EX_CONFIG = 78

# BCM numbers of the GPIO pins on the Raspberry Pi 40-pin header.
VALID_BCM_PINS = range(0, 28)


class ConfigError(Exception):
    """A configuration problem, phrased for the admin who edits the file."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


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
    """Status light: one LED per state, or one RGB LED (BCM numbers; 0 = not fitted)."""

    kind: str = field(default="single", metadata=_check(("single", "rgb")))
    """single: the four pins below, one LED per state; rgb: one RGB LED on red/green/blue."""
    idle: int = 22
    connecting: int = 23
    connected: int = 24
    error: int = 25
    red: int = 0
    green: int = 0
    blue: int = 0


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


SECTIONS: dict[str, type] = {f.name: typing.get_type_hints(Config)[f.name]
                             for f in dataclasses.fields(Config) if f.name != "source"}


def load_config(path: str | Path) -> Config:
    """Read and validate a kiosk TOML file; raise ConfigError with an admin-friendly message."""
    path = Path(path)
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(source, "", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    return config_from_dict(data, source=source, base_dir=path.parent)


def config_from_dict(data: dict[str, Any], source: str = "<dict>", base_dir: Path | None = None) -> Config:
    """Build a validated Config from parsed TOML; relative paths are resolved against base_dir."""
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ConfigError(source, unknown[0],
                          f"unknown section; allowed: {', '.join(SECTIONS)}")
    sections: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        table = data.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(source, name, f"must be a table [{name}], got {_show(table)}")
        sections[name] = _build_section(cls, table, name, source, base_dir)
    config = Config(**sections, source=source)
    _validate(config)
    return config


def _build_section(cls: type, table: dict[str, Any], section: str, source: str,
                   base_dir: Path | None) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(source, f"{section}.{unknown[0]}",
                          f"unknown key; allowed in [{section}]: {', '.join(fields)}")
    values: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{section}.{name}"
        value = _coerce(value, hints[name], key, source, base_dir)
        choices = fields[name].metadata.get("choices")
        if choices and value not in choices:
            raise ConfigError(source, key, f"{_show(value)} is not allowed; use one of: {', '.join(choices)}")
        values[name] = value
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str, source: str, base_dir: Path | None) -> Any:
    origin = typing.get_origin(hint)
    if origin is list:
        (item_type,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(source, key, f"must be a list, got {_show(value)}")
        return [_coerce(v, item_type, f"{key}[{i}]", source, base_dir) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        # Optional[X]: TOML has no null, so a value that is present is always an X.
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _coerce(value, inner, key, source, base_dir)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"must be true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"must be a whole number, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, key, f"must be a number, got {_show(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"must be a string, got {_show(value)}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(source, key, f"must be a file path string, got {_show(value)}")
        p = Path(value).expanduser()
        if not p.is_absolute() and base_dir is not None:
            p = base_dir / p
        return p
    raise TypeError(f"unsupported config type {hint!r} for {key}")  # pragma: no cover


def _validate(config: Config) -> None:
    src = config.source
    check_url(src, "companion.url", config.companion.url, config.companion.allow_insecure_http)
    check_url(src, "realtime.base_url", config.realtime.base_url, config.realtime.allow_insecure_http)
    for i, url in enumerate(config.realtime.ice_servers):
        if not url.startswith(("stun:", "turn:", "turns:")):
            raise ConfigError(src, f"realtime.ice_servers[{i}]",
                              f"{_show(url)} is not a STUN/TURN URL (stun:host:port or turn:host:port)")
    kiosk_id = config.kiosk.id
    if not kiosk_id or not all(c.isalnum() or c in "-_" for c in kiosk_id) or len(kiosk_id) > 64:
        raise ConfigError(src, "kiosk.id", f"{_show(kiosk_id)} must be 1-64 letters, digits, '-' or '_'")
    _positive(src, "kiosk.keep_synced_days", config.kiosk.keep_synced_days, 0, 3650)
    _positive(src, "kiosk.max_stored_lessons", config.kiosk.max_stored_lessons, 10, 1_000_000)
    _positive(src, "companion.timeout_s", config.companion.timeout_s, 0.1, 120)
    _positive(src, "companion.sync_interval_s", config.companion.sync_interval_s, 0.1, 86400)
    _positive(src, "sync.heartbeat_s", config.sync.heartbeat_s, 10, 86400)
    _positive(src, "realtime.connect_timeout_s", config.realtime.connect_timeout_s, 1, 120)
    _positive(src, "lesson.max_minutes", config.lesson.max_minutes, 0.1, 60)
    _positive(src, "lesson.idle_limit_s", config.lesson.idle_limit_s, 5, 3600)
    _positive(src, "button.long_press_s", config.button.long_press_s, 0.5, 30)
    if not config.lesson.stop_phrases or any(not p.strip() for p in config.lesson.stop_phrases):
        raise ConfigError(src, "lesson.stop_phrases", "must list at least one non-empty phrase")
    if not 0 <= config.audio.echo_tail_ms <= 2000:
        raise ConfigError(src, "audio.echo_tail_ms", f"{config.audio.echo_tail_ms} is out of range; use 0-2000")
    if not 0 <= config.audio.volume <= 100:
        raise ConfigError(src, "audio.volume", f"{config.audio.volume} is out of range; use 0-100")
    if config.audio.sample_rate not in (8000, 16000, 22050, 24000, 32000, 44100, 48000):
        raise ConfigError(src, "audio.sample_rate",
                          f"{config.audio.sample_rate} is not a usual rate; use 16000, 24000, 44100 or 48000")
    if config.audio.input == "wav":
        for i, wav in enumerate(config.audio.input_wavs):
            if not wav.is_file():
                raise ConfigError(src, f"audio.input_wavs[{i}]", f"{wav} does not exist")
    _check_pin(src, "button.pin", config.button.pin, allow_none=False)
    if not 0 <= config.button.bounce_ms <= 1000:
        raise ConfigError(src, "button.bounce_ms", f"{config.button.bounce_ms} is out of range; use 0-1000")
    used = {config.button.pin: "button.pin"}
    led_pins = ("red", "green", "blue") if config.leds.kind == "rgb" else ("idle", "connecting", "connected", "error")
    if config.leds.kind == "rgb" and any(getattr(config.leds, c) <= 0 for c in led_pins):
        raise ConfigError(src, "leds.red", "an RGB LED needs red, green and blue pins")
    for name in led_pins:
        pin = getattr(config.leds, name)
        key = f"leds.{name}"
        _check_pin(src, key, pin, allow_none=True)
        if pin > 0:
            if pin in used:
                raise ConfigError(src, key, f"pin {pin} is already used by {used[pin]}")
            used[pin] = key


def check_url(source: str, key: str, url: str, allow_insecure_http: bool = False) -> None:
    """Refuse a base URL the kiosk must not use; raise ConfigError only, whatever the text.

    Why each rule: credentials in a URL end up in logs and error messages (the kiosk authenticates
    with its device key or token instead); plain http:// to another machine exposes the device key,
    tokens and transcripts on the school network. Messages never repeat what stands before an '@'.
    """
    section = key.split(".")[0]
    shown = _show(redact_url(url))
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ConfigError(source, key, f"{shown} contains spaces or control characters")
    try:
        parsed = urlsplit(url)
        host = parsed.hostname
        parsed.port  # noqa: B018 - raises ValueError for a port that is not a number 0-65535
    except ValueError:
        raise ConfigError(source, key, f"{shown} is not a valid URL such as https://host.example.org") from None
    if "@" in parsed.netloc or "@" in url.split("?")[0].split("#")[0]:
        raise ConfigError(source, key, f"{shown} must not contain a user name or password (user:password@): "
                          "remove it; the kiosk authenticates with its device key")
    if parsed.scheme not in ("http", "https") or not host:
        raise ConfigError(source, key, f"{shown} is not an http(s) URL such as https://host.example.org")
    if parsed.query or parsed.fragment:
        raise ConfigError(source, key, f"{shown} must be a base URL without ?query or #fragment")
    if parsed.scheme == "http" and not allow_insecure_http and not is_loopback_host(host):
        raise ConfigError(source, key, f"{shown} uses plain http:// to another machine: use https:// "
                          f"(or set {section}.allow_insecure_http = true on a closed network)")


def is_loopback_host(host: str) -> bool:
    """True for this machine's own addresses: 127.0.0.0/8, ::1 (also IPv4-mapped) and localhost."""
    host = host.rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def redact_url(url: str) -> str:
    """The URL with everything between the scheme and the last '@' hidden (user, password)."""
    at = url.rfind("@")
    if at < 0:
        return url
    start = url.find("://")
    start = start + 3 if 0 <= start < at else 0
    return url[:start] + "***@" + url[at + 1:]


def _check_pin(source: str, key: str, pin: int, allow_none: bool) -> None:
    if allow_none and pin <= 0:
        return
    if pin not in VALID_BCM_PINS:
        raise ConfigError(source, key, f"{pin} is not a GPIO pin; use a BCM number 0-27"
                          + (" (or 0 for no LED)" if allow_none else ""))


def _positive(source: str, key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(source, key, f"{value} is out of range; use {low}-{high}")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)
