"""Rules beyond a value's type: ranges, URLs, STUN/TURN servers, GPIO pins used twice, files that must exist.

Why apart from loading: the loader only knows a key's type and choices; these rules know what the
kiosk can run with (a pin on the 40-pin header, a timeout a press can wait for) and say what is allowed.
"""

from __future__ import annotations

from pathlib import Path

from appliance.config.errors import ConfigError, show_value
from appliance.config.settings import Config
from appliance.config.urls import check_url
from appliance.contract.voices import voice_problem

# BCM numbers of the GPIO pins on the Raspberry Pi 40-pin header.
VALID_BCM_PINS = range(0, 28)
LED_PINS = {"single": ("idle", "connecting", "connected", "error"), "rgb": ("red", "green", "blue"),
            "apa102": ("power_pin",)}
"""The [leds] keys that name a pin, per kind of light."""
SPI0_PINS = {7: "CE1", 8: "CE0", 9: "MISO", 10: "MOSI", 11: "SCLK"}
"""The pins of SPI 0, which the APA102 pixels use: nothing else may be wired to them."""
MAX_PIXELS = 64


def validate(config: Config) -> None:
    """Raise ConfigError for the first rule ``config`` breaks."""
    src = config.source
    check_url(src, "companion.url", config.companion.url, config.companion.allow_insecure_http)
    check_url(src, "realtime.base_url", config.realtime.base_url, config.realtime.allow_insecure_http)
    for i, url in enumerate(config.realtime.ice_servers):
        if not url.startswith(("stun:", "turn:", "turns:")):
            raise ConfigError(src, f"realtime.ice_servers[{i}]",
                              f"{show_value(url)} is not a STUN/TURN URL (stun:host:port or turn:host:port)")
    kiosk_id = config.kiosk.id
    if not kiosk_id or not all(c.isalnum() or c in "-_" for c in kiosk_id) or len(kiosk_id) > 64:
        raise ConfigError(src, "kiosk.id", f"{show_value(kiosk_id)} must be 1-64 letters, digits, '-' or '_'")
    _positive(src, "kiosk.keep_synced_days", config.kiosk.keep_synced_days, 0, 3650)
    _positive(src, "kiosk.max_stored_lessons", config.kiosk.max_stored_lessons, 10, 1_000_000)
    _positive(src, "companion.timeout_s", config.companion.timeout_s, 0.1, 120)
    _positive(src, "companion.sync_interval_s", config.companion.sync_interval_s, 0.1, 86400)
    _positive(src, "sync.heartbeat_s", config.sync.heartbeat_s, 10, 86400)
    _positive(src, "updates.check_hours", config.updates.check_hours, 0.05, 168)
    _positive(src, "updates.jitter_minutes", config.updates.jitter_minutes, 0, 1440)
    _positive(src, "updates.health_timeout_s", config.updates.health_timeout_s, 10, 900)
    if not config.updates.prefix.is_absolute() or config.updates.prefix == Path("/"):
        raise ConfigError(src, "updates.prefix", f"{config.updates.prefix} must be an absolute directory (not /)")
    _positive(src, "realtime.connect_timeout_s", config.realtime.connect_timeout_s, 1, 120)
    _positive(src, "lesson.max_minutes", config.lesson.max_minutes, 0.1, 60)
    _positive(src, "lesson.idle_limit_s", config.lesson.idle_limit_s, 5, 3600)
    _positive(src, "button.long_press_s", config.button.long_press_s, 0.5, 30)
    if not config.lesson.stop_phrases or any(not p.strip() for p in config.lesson.stop_phrases):
        raise ConfigError(src, "lesson.stop_phrases", "must list at least one non-empty phrase")
    if config.lesson.voice and (problem := voice_problem(config.lesson.voice)):
        raise ConfigError(src, "lesson.voice", f"{problem} (or leave it out for the companion's choice)")
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
    led_pins = LED_PINS[config.leds.kind]
    if config.leds.kind == "rgb" and any(getattr(config.leds, c) <= 0 for c in led_pins):
        raise ConfigError(src, "leds.red", "an RGB LED needs red, green and blue pins")
    if config.leds.kind == "apa102":
        _check_apa102(config, used)
    for name in led_pins:
        pin = getattr(config.leds, name)
        key = f"leds.{name}"
        _check_pin(src, key, pin, allow_none=True)
        if pin > 0:
            if pin in used:
                raise ConfigError(src, key, f"pin {pin} is already used by {used[pin]}")
            used[pin] = key


def _check_apa102(config: Config, used: dict[int, str]) -> None:
    src, leds = config.source, config.leds
    if not 1 <= leds.pixels <= MAX_PIXELS:
        raise ConfigError(src, "leds.pixels", f"{leds.pixels} is out of range; use 3 (2-mic HAT), 12 (4-mic HAT) "
                          f"or 1-{MAX_PIXELS}")
    if not 0.05 <= leds.brightness <= 1.0:
        raise ConfigError(src, "leds.brightness", f"{leds.brightness} is out of range; use 0.05-1.0")
    for key, pin in (("button.pin", config.button.pin), ("leds.power_pin", leds.power_pin)):
        if pin in SPI0_PINS:
            raise ConfigError(src, key, f"pin {pin} is SPI 0's {SPI0_PINS[pin]}, used by the APA102 pixels")


def _check_pin(source: str, key: str, pin: int, allow_none: bool) -> None:
    if allow_none and pin <= 0:
        return
    if pin not in VALID_BCM_PINS:
        raise ConfigError(source, key, f"{pin} is not a GPIO pin; use a BCM number 0-27"
                          + (" (or 0 for no LED)" if allow_none else ""))


def _positive(source: str, key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(source, key, f"{value} is out of range; use {low}-{high}")
