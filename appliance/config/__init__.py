"""The kiosk's one TOML configuration file, loaded into frozen dataclasses and validated at start-up.

Why so strict: a kiosk runs unattended for months, so a typo must stop it at boot with one line that
names the file, the key, the bad value and what is allowed (exit 78, EX_CONFIG) rather than surface
as a strange failure in the middle of a lesson.

The pieces: ``settings`` (one dataclass per section), ``loading`` (TOML to a Config), ``validation``
(ranges, pins, files), ``urls`` (the rules for a base URL) and ``errors`` (ConfigError, exit 78).
Callers import everything from here.
"""

from __future__ import annotations

from appliance.config.errors import EX_CONFIG, ConfigError
from appliance.config.loading import SECTIONS, config_from_dict, load_config
from appliance.config.settings import (
    AudioSettings,
    ButtonSettings,
    CompanionSettings,
    Config,
    GpioSettings,
    KioskSettings,
    LedSettings,
    LessonSettings,
    RealtimeSettings,
    SyncSettings,
    UpdateSettings,
)
from appliance.config.urls import check_url, is_loopback_host, redact_url
from appliance.config.validation import VALID_BCM_PINS

__all__ = [
    "EX_CONFIG",
    "SECTIONS",
    "VALID_BCM_PINS",
    "AudioSettings",
    "ButtonSettings",
    "CompanionSettings",
    "Config",
    "ConfigError",
    "GpioSettings",
    "KioskSettings",
    "LedSettings",
    "LessonSettings",
    "RealtimeSettings",
    "SyncSettings",
    "UpdateSettings",
    "check_url",
    "config_from_dict",
    "is_loopback_host",
    "load_config",
    "redact_url",
]
