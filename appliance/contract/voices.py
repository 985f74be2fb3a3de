"""The Realtime API's output voices (GA), and which one is used when nothing else is chosen.

Why one definition: the kiosk config, the companion config, the lesson record, the session config and
the simulator all check a voice name against the same list; a voice the list lacks would be refused
by the model at the start of a lesson, so it is refused at start-up instead.
"""

from __future__ import annotations

from typing import Final

VOICES: Final[tuple[str, ...]] = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse",
                                  "marin", "cedar")
"""The GA voices of the Realtime API (marin and cedar are the recommended ones)."""

DEFAULT_VOICE: Final = "marin"
"""The voice a lesson falls back to when the chosen one is refused, and the companion's default."""


def voice_problem(value: object) -> str | None:
    """Why ``value`` is not a voice name (for an error naming the key), or None when it is one."""
    if isinstance(value, str) and value in VOICES:
        return None
    shown = repr(value) if isinstance(value, str | int | float) else "a table" if isinstance(value, dict) else "a list"
    return f"{shown[:40]} is not a Realtime voice; use one of: {' '.join(VOICES)}"
