"""The kiosk's states, the transitions allowed between them and the cue each transition plays (pure rules).

Every condition the kiosk can be in is one of these states; there is no flag beside them. Inside a
connected lesson, who has the floor (the tutor speaking, the learner holding the button) is a second,
orthogonal region owned by the call's :class:`~appliance.core.conversation.Conversation`; the LEDs show
it as the connected state's activity.
"""

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
    ENDING = "ending"
    """The tutor is saying goodbye (the learner went quiet); the lesson ends once it has been heard."""
    DISCONNECTED = "disconnected"
    """The call dropped mid-lesson: the kiosk is opening a new call to resume the same lesson."""
    ERROR = "error"
    """Something failed (no companion, no network, a full disk); back to idle once it has been shown."""
    DEVICE_MISSING = "device_missing"
    """A microphone or speaker is gone; no lesson starts until it is back."""
    STOPPING = "stopping"
    """The kiosk is shutting down: the lesson in progress is being saved; presses are ignored."""


IN_LESSON = frozenset({State.CONNECTING, State.CONNECTED, State.ENDING, State.DISCONNECTED})
"""States that have a lesson (the first connecting has one that is not yet kept)."""

_ANY_TO = frozenset({State.STOPPING, State.DEVICE_MISSING})

ALLOWED: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.CONNECTING, State.ERROR}) | _ANY_TO,
    State.CONNECTING: frozenset({State.CONNECTED, State.ERROR, State.IDLE}) | _ANY_TO,
    State.CONNECTED: frozenset({State.ENDING, State.DISCONNECTED, State.ERROR, State.IDLE}) | _ANY_TO,
    State.ENDING: frozenset({State.DISCONNECTED, State.ERROR, State.IDLE}) | _ANY_TO,
    State.DISCONNECTED: frozenset({State.CONNECTED, State.ERROR, State.IDLE}) | _ANY_TO,
    State.ERROR: frozenset({State.IDLE, State.CONNECTING}) | _ANY_TO,
    State.DEVICE_MISSING: frozenset({State.IDLE, State.STOPPING}),
    State.STOPPING: frozenset(),
}


class TransitionError(RuntimeError):
    """A transition the rules do not allow: a bug in the kiosk, never a learner's doing."""


def check_transition(current: State, new: State) -> None:
    """Raise TransitionError unless ``current → new`` is allowed (same state is a no-op)."""
    if new is current:
        return
    if new not in ALLOWED[current]:
        raise TransitionError(f"{current.value} → {new.value} is not allowed")


class Cue(Enum):
    """Short sounds that tell a learner what happened without a screen."""

    READY = "ready"
    CONNECTED = "connected"
    ENDED = "ended"
    ERROR = "error"


def cue_for(previous: State, new: State) -> Cue | None:
    """The sound a transition plays, if any."""
    if new in (State.ERROR, State.DISCONNECTED, State.DEVICE_MISSING):
        return Cue.ERROR
    if new is State.CONNECTED and previous is State.CONNECTING:
        return Cue.CONNECTED
    if new is State.CONNECTED and previous is State.DISCONNECTED:
        return Cue.CONNECTED
    if new is State.IDLE and previous in (State.CONNECTED, State.ENDING, State.DISCONNECTED):
        return Cue.ENDED
    return None
