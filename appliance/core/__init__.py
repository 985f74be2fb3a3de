"""The kiosk core: the orchestrator, its states, the conversation of one call and the lesson it keeps.

No I/O of its own: devices, the call, the store and the companion reach it through ports."""
