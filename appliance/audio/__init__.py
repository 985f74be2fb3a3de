"""audio part of Stella Kiosk."""
