"""How a configuration mistake is told: ConfigError, its exit status, and how a bad value is shown.

Why its own module: loading, validation, the URL rules and the settings themselves all raise the
same error with the same wording of values, and a caller (the CLI, preflight, the doctor) needs only
this to catch it.
"""

from __future__ import annotations

from typing import Any

EX_CONFIG = 78


class ConfigError(Exception):
    """A configuration problem, phrased for the admin who edits the file."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


def show_value(value: Any) -> str:
    """A value as the admin typed it in TOML (strings quoted, true/false, a table, a list)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)
