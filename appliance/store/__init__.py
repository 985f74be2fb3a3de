"""The kiosk's own store: lessons on disk (journal + index), the store thread, the instance lock."""
