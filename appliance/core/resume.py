"""Instructions for a call that resumes a lesson after the previous call dropped.

A new Realtime call starts with an empty conversation, so the tutor would greet the learner again
as if nothing had happened. Appending what was said so far (the newest turns, bounded so a long
lesson cannot blow up the session instructions) plus a note about the drop lets the tutor apologise
briefly and carry on. Turn texts came from the network (transcripts, typed text): they are
sanitised here, so a lone surrogate cannot break JSON encoding and a newline cannot forge a turn.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: At most this many of the newest turns are repeated to the tutor.
MAX_TURNS = 30
#: The whole appended section (heading, turns, note) is at most this many characters.
MAX_SECTION_CHARS = 6000
#: A single turn longer than this is cut (with an ellipsis), so one monologue cannot crowd out the rest.
MAX_TURN_CHARS = 1000

SPEAKERS = {"learner": "Learner", "user": "Learner", "tutor": "Tutor", "assistant": "Tutor"}

HEADING = "# Conversation so far (oldest first)"
NOTE = ("The call dropped for a moment and has just been reconnected. Start with one short apology "
        "(for example \"Sorry, where were we…\"), then continue the lesson from where it stopped. "
        "Do not greet the learner again and do not restart the lesson.")


def resume_instructions(base_prompt: str, turns: Sequence[Mapping[str, Any]]) -> str:
    """``base_prompt`` plus the newest turns (≤ MAX_TURNS, section ≤ MAX_SECTION_CHARS) and the resume note.

    ``turns`` are session-record turns (``{"role": "learner"|"tutor", "text": ...}``); entries that
    are not such dicts, or have no text after sanitising, are skipped rather than failing the resume.
    """
    budget = MAX_SECTION_CHARS - len(HEADING) - len(NOTE) - 4  # the blank lines around the turns
    lines: list[str] = []
    for line in reversed(list(_turn_lines(turns))):
        if len(lines) >= MAX_TURNS or len(line) + 1 > budget:
            break
        lines.append(line)
        budget -= len(line) + 1
    parts = [HEADING, "\n".join(reversed(lines)), NOTE] if lines else [NOTE]
    section = "\n\n".join(parts)
    base = clean_prompt(base_prompt).rstrip()
    return f"{base}\n\n{section}" if base else section


def _turn_lines(turns: Iterable[Any]) -> Iterable[str]:
    for turn in turns if isinstance(turns, list) else []:
        if not isinstance(turn, dict):
            continue
        speaker = SPEAKERS.get(str(turn.get("role", "")).lower())
        text = clean_text(turn.get("text"))
        if speaker is None or not text:
            continue
        if len(text) > MAX_TURN_CHARS:
            text = text[: MAX_TURN_CHARS - 1].rstrip() + "…"
        yield f"{speaker}: {text}"


def clean_text(value: Any) -> str:
    """One line of printable text: no control or format characters, no lone surrogates, single spaces."""
    if not isinstance(value, str):
        return ""
    kept = "".join(" " if ch.isspace() else ch for ch in value if _printable(ch) or ch.isspace())
    return " ".join(kept.split())


def clean_prompt(value: Any) -> str:
    """Like :func:`clean_text` but keeps the prompt's line breaks and tabs."""
    if not isinstance(value, str):
        return ""
    return "".join(ch for ch in value if ch in "\n\t" or _printable(ch))


def _printable(ch: str) -> bool:
    # Cc: control characters; Cs: lone surrogates; Cf: invisible format characters (bidi overrides).
    # ZWJ stays: emoji sequences use it.
    return unicodedata.category(ch) not in ("Cc", "Cs", "Cf") or ch == "\u200d"
