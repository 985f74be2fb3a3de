"""Stella Kiosk: a voice-first English-tutor appliance (headless, WebRTC to the OpenAI Realtime API)."""

__version__ = "0.1.0"
