"""simulator part of Stella Kiosk."""
