"""Build the kiosk's real or simulated parts from its configuration (the factory seams' defaults)."""

from __future__ import annotations

import logging
import warnings

from gpiozero import Device, PinFactoryFallback

from appliance.audio.base import AudioDeviceError, AudioSink, AudioSource
from appliance.audio.wav import NullSink, ScriptedMicrophone, WavFileSink
from appliance.config import Config

log = logging.getLogger(__name__)


class HardwareError(Exception):
    """GPIO or audio hardware is missing or cannot be opened; the message says what to do."""


class PinFactoryError(HardwareError):
    """No GPIO pin library works here: a setup step to take (install one, or choose mock pins), which
    restarting the kiosk never fixes."""


MOCK_HINT = 'or set [gpio] pin_factory = "mock" to run without pins'


def select_pin_factory(config: Config) -> None:
    """Choose gpiozero's pin factory as configured; mock pins need no hardware at all.

    ``auto`` asks gpiozero for its default now rather than at the first LED, with its fallback warnings
    caught: they would reach the admin as four ``PinFactoryFallback`` lines before any error. Their
    reasons go into the one error line when nothing loads, and into one log line when a fallback worked.
    """
    choice = config.gpio.pin_factory
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            Device.pin_factory = _load_factory(choice)
        except Exception as exc:  # import errors and "not a Pi" errors vary by library
            if choice != "auto":
                raise PinFactoryError(f"the {choice} pin library is not usable here ({exc}); install it, "
                                      f"{MOCK_HINT}") from None
            tried = "; ".join(_fallback_reason(w.message) for w in caught
                              if isinstance(w.message, PinFactoryFallback)) or str(exc)
            raise PinFactoryError(f"no GPIO pin library works on this machine ({tried}); on a Raspberry Pi "
                                  f"install lgpio (python3-lgpio, or the kiosk extra), {MOCK_HINT}") from None
    fallbacks = [_fallback_reason(w.message) for w in caught if isinstance(w.message, Warning)]
    if fallbacks:
        log.info("GPIO: using gpiozero's %s (%s)", type(Device.pin_factory).__name__, "; ".join(fallbacks))


def _load_factory(choice: str) -> object:
    if choice == "auto":
        Device.ensure_pin_factory()
        return Device.pin_factory
    if choice == "mock":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        return MockFactory(pin_class=MockPWMPin)
    if choice == "lgpio":
        from gpiozero.pins.lgpio import LGPIOFactory

        return LGPIOFactory()
    if choice == "rpigpio":
        from gpiozero.pins.rpigpio import RPiGPIOFactory

        return RPiGPIOFactory()
    raise ValueError(f"unknown pin factory {choice!r}")


def _fallback_reason(message: Warning | str) -> str:
    """gpiozero's "Falling back from lgpio: No module named 'lgpio'" as "lgpio: No module named 'lgpio'"."""
    return str(message).removeprefix("Falling back from ")


def build_microphone(config: Config) -> AudioSource:
    audio = config.audio
    if audio.input == "wav":
        return ScriptedMicrophone(sample_rate=audio.sample_rate)
    from appliance.audio.pyaudio_backend import PyAudioSource

    try:
        return PyAudioSource(audio.input_device, sample_rate=audio.sample_rate)
    except AudioDeviceError as exc:
        raise HardwareError(str(exc)) from None


def build_speaker(config: Config) -> AudioSink:
    audio = config.audio
    if audio.output == "wav":
        return WavFileSink(audio.output_wav, sample_rate=audio.sample_rate)
    if audio.output == "null":
        return NullSink(sample_rate=audio.sample_rate)
    from appliance.audio.pyaudio_backend import PyAudioSink

    try:
        return PyAudioSink(audio.output_device, sample_rate=audio.sample_rate)
    except AudioDeviceError as exc:
        raise HardwareError(str(exc)) from None
