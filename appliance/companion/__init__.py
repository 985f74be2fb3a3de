"""companion part of Stella Kiosk."""
