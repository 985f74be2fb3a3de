"""Build the kiosk's real or simulated parts from its configuration (the factory seams' defaults)."""

from __future__ import annotations

import logging

from gpiozero import Device

from appliance.audio.base import AudioDeviceError, AudioSink, AudioSource
from appliance.audio.wav import NullSink, ScriptedMicrophone, WavFileSink
from appliance.config import Config

log = logging.getLogger(__name__)


class HardwareError(Exception):
    """GPIO or audio hardware is missing or cannot be opened; the message says what to do."""


def select_pin_factory(config: Config) -> None:
    """Choose gpiozero's pin factory as configured; mock pins need no hardware at all."""
    choice = config.gpio.pin_factory
    if choice == "auto":
        return
    try:
        if choice == "mock":
            from gpiozero.pins.mock import MockFactory, MockPWMPin

            Device.pin_factory = MockFactory(pin_class=MockPWMPin)
        elif choice == "lgpio":
            from gpiozero.pins.lgpio import LGPIOFactory

            Device.pin_factory = LGPIOFactory()
        elif choice == "rpigpio":
            from gpiozero.pins.rpigpio import RPiGPIOFactory

            Device.pin_factory = RPiGPIOFactory()
    except Exception as exc:  # import errors and "not a Pi" errors vary by library
        raise HardwareError(f"GPIO library {choice!r} is not usable here ({exc}); "
                            "install it, or set [gpio] pin_factory = \"mock\" to run without pins") from None


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
