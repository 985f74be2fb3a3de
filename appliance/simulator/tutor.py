"""What the simulated tutor says: a small deterministic rule set, enough to hold a short lesson."""

from __future__ import annotations

import re

QUESTIONS = [
    "What do you like to do after school?",
    "Can you tell me about your favourite food?",
    "Who is your best friend?",
    "What did you do yesterday?",
]


def lesson_title(instructions: str) -> str | None:
    match = re.search(r"Today's lesson: ([^.]+)\.", instructions)
    return match.group(1).strip() if match else None


def greeting(instructions: str) -> str:
    title = lesson_title(instructions)
    if title:
        return f"Hello, I'm Stella! Today we will practise {title.lower()}. Are you ready?"
    return "Hello, I'm Stella, your English tutor! What would you like to talk about?"


def reply(learner_text: str, turn: int, instructions: str = "") -> str:
    """One or two short sentences that reuse the learner's words and ask a follow-up question."""
    words = re.findall(r"[A-Za-z']+", learner_text)
    if re.search(r"\bstop\b", learner_text, re.IGNORECASE) and len(words) <= 3:
        return "Okay, we can stop here. Goodbye and well done!"
    if "goodbye" in instructions.lower() or "wrap up" in instructions.lower():
        return "Great work today! Goodbye, see you next time."
    question = QUESTIONS[turn % len(QUESTIONS)]
    if not words or learner_text.startswith("("):
        return f"I heard you. Nice! {question}"
    echo = " ".join(words[-4:])
    return f"You said: {echo}. Very good! {question}"
