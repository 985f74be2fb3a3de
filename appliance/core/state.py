"""The kiosk's states and the transitions allowed between them (pure rules, no I/O)."""

from __future__ import annotations

from enum import Enum


class State(Enum):
    """What the learner sees on the LEDs."""

    IDLE = "idle"
    """Ready: press the button to start a lesson."""
    CONNECTING = "connecting"
    """Fetching the lesson and opening the call."""
    CONNECTED = "connected"
    """In a lesson."""
    ERROR = "error"
    """Something failed (no companion, no network); back to idle once it has been shown."""
    DISCONNECTED = "disconnected"
    """The call dropped mid-lesson; the lesson is being saved."""


ALLOWED: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.CONNECTING, State.ERROR}),
    State.CONNECTING: frozenset({State.CONNECTED, State.ERROR, State.IDLE}),
    State.CONNECTED: frozenset({State.IDLE, State.DISCONNECTED, State.ERROR}),
    State.ERROR: frozenset({State.IDLE, State.CONNECTING}),
    State.DISCONNECTED: frozenset({State.IDLE, State.ERROR}),
}


class TransitionError(RuntimeError):
    """A transition the rules do not allow: a bug in the kiosk, never a learner's doing."""


def check_transition(current: State, new: State) -> None:
    """Raise TransitionError unless ``current → new`` is allowed (same state is a no-op)."""
    if new is current:
        return
    if new not in ALLOWED[current]:
        raise TransitionError(f"{current.value} → {new.value} is not allowed")
