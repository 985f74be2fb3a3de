"""hardware part of Stella Kiosk."""
