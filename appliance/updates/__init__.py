"""The kiosk's side of fleet updates: finding and verifying a signed release (The Update Framework's
client), with no signing key anywhere on the kiosk."""
