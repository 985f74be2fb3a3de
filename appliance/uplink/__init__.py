"""The kiosk's side of the companion API: the client, the prefetched lesson, sync and fleet reports."""
