"""realtime part of Stella Kiosk."""
