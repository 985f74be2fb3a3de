"""Which of the tutor's items the learner is hearing, and for how long: one call's playhead.

Why its own piece: truncating an interrupted answer must name the item actually audible, at the
milliseconds actually played, and servers differ in what they say. An OpenAI server announces each
answer's audio (``output_audio_buffer.started`` / ``stopped``); a third-party server may send nothing of
the kind. So the items are queued in the order the server names them (any event that carries an item
id will do), and the head of the queue starts when the speaker itself becomes audible (or when the
server says its audio started); it is over when the speaker goes quiet after its answer is complete
(unless its known length says that is only a pause), or when the server says so. Pure bookkeeping:
every input carries its instant.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

PAUSE_TOLERANCE_MS = 500.0
"""A quiet speaker this long before an item's known end is a pause inside it, not its end."""
GAP_S = 0.8
"""Silence inside an item this long is a server pausing its answer, not audio: it is not counted as
heard. Shorter silences are the speech's own pauses (sent as audio, so counted). While the speaker is
quiet, the silence so far is never counted: a truncate must not claim more than was played."""
SPEECH_EDGE_S = 0.4
"""Of such a pause, this much is the speech's own silence at the end and start of its sentences (sent as
audio, so counted as heard); the speaker's lag behind the server keeps the estimate on the safe side."""
QUIET_LAG_S = 0.3
"""The speaker reports quiet after this much silence (its hangover): the sound stopped that long before."""
MAX_QUEUED = 64
"""Items queued per call (a bound: a call never has more than a few waiting)."""


@dataclass
class Audio:
    """One tutor item's audio, in the order the speaker plays it."""

    response_id: str
    item_id: str
    started_at: float | None = None
    """When it became audible at the speaker (None: still queued behind another item, or silent)."""
    server_started: bool = False
    """The server said its audio started playing (``output_audio_buffer.started``), heard here or not yet."""
    paused_s: float = 0.0
    """Silence inside it so far (pauses between sentences): not audio the learner heard."""
    quiet_since: float | None = None
    """When its sound stopped, while it waits for its next sentence."""


class Playhead:
    def __init__(self, length_ms: Callable[[str], float | None], quiet_lag_s: float = QUIET_LAG_S) -> None:
        """``length_ms(response_id)``: an answer's audio length once the server said it (else None);
        ``quiet_lag_s``: how long after the sound stopped the speaker reports it quiet."""
        self._quiet_lag_s = quiet_lag_s
        self._length_ms = length_ms
        self.queue: deque[Audio] = deque()
        self.audible = False
        """The speaker emits sound now (measured on what it plays)."""
        self.audible_since: float | None = None
        self.buffer_playing = False
        """The server says its audio buffer is playing (a hint some servers never send)."""
        self.ignore_audible = False
        """After a barge-in: what the speaker still drains was cleared, so it holds no floor."""

    @property
    def playing(self) -> bool:
        """The tutor's audio is playing, as far as who has the floor is concerned."""
        return (self.audible and not self.ignore_audible) or self.buffer_playing

    @property
    def head(self) -> Audio | None:
        return self.queue[0] if self.queue else None

    @property
    def audible_item(self) -> Audio | None:
        """The item being played (at the speaker, or by the server's word), if any."""
        head = self.head
        return head if head is not None and (head.started_at is not None or head.server_started) else None

    def named(self, response_id: str, item_id: str, response_created_at: float, now: float) -> None:
        """The server named an item of an answer: queue it for the speaker."""
        if len(self.queue) >= MAX_QUEUED:
            return
        self.queue.append(Audio(response_id, item_id))
        if len(self.queue) == 1 and self.audible and not self.ignore_audible:
            # Audio often arrives before the words that name its item: it started when the speaker
            # became audible, but not before its response existed.
            since = self.audible_since if self.audible_since is not None else now
            self.queue[0].started_at = max(since, response_created_at)

    def server_started(self, response_id: str, now: float) -> None:
        """``output_audio_buffer.started``: this answer's audio is what plays now."""
        self.buffer_playing = True
        while self.queue and self.queue[0].response_id != response_id and any(
                a.response_id == response_id for a in self.queue):
            self.queue.popleft()  # items queued before it are over
        head = self.head
        if head is not None and head.response_id == response_id:
            head.server_started = True
            if head.started_at is None and self.audible:
                head.started_at = now

    def server_stopped(self, response_id: str | None, cleared: bool) -> None:
        """``output_audio_buffer.stopped`` (everything up to this answer played out) or ``.cleared``."""
        self.buffer_playing = False
        if response_id is not None and any(a.response_id == response_id for a in self.queue):
            while any(a.response_id == response_id for a in self.queue):  # an answer may hold several items
                self.queue.popleft()
        elif cleared:
            self.queue.clear()

    def speaker(self, audible: bool, now: float, generating: str | None) -> float:
        """The speaker started or stopped emitting sound; returns the seconds of audio just heard out.
        ``generating``: the answer still being generated (its item is never over yet)."""
        heard_s = 0.0
        if audible and not self.audible:
            self.audible_since = now
        elif not audible and self.audible and self.audible_since is not None:
            heard_s = max(0.0, now - self.audible_since)
            self.audible_since = None
        self.audible = audible
        head = self.head
        if audible:
            if head is not None and head.started_at is None and not self.ignore_audible:
                head.started_at = now
            elif head is not None and head.quiet_since is not None:  # sound again inside it
                gap = max(0.0, now - head.quiet_since)
                if gap >= GAP_S:  # a server that paused its answer (short silences are part of the speech)
                    head.paused_s += gap - SPEECH_EDGE_S
                head.quiet_since = None
        else:
            self.ignore_audible = False
            self._finish(now, generating)
            head = self.head
            if head is not None and head.started_at is not None and head.quiet_since is None:
                head.quiet_since = max(head.started_at, now - self._quiet_lag_s)  # a pause inside it
        return heard_s

    def _finish(self, now: float, generating: str | None) -> None:
        """Items whose answer is complete have been heard out, unless their length says this is a pause."""
        while self.queue:
            head = self.queue[0]
            if head.started_at is None or head.response_id == generating:
                return
            length = self._length_ms(head.response_id)
            if length is not None and (now - head.started_at) * 1000 < length - PAUSE_TOLERANCE_MS:
                return
            self.queue.popleft()

    def played_ms(self, now: float, backlog_s: float = 0.0) -> float | None:
        """Milliseconds of the audible item heard so far (the speaker's backlog not yet played excluded)."""
        head = self.audible_item
        if head is None:
            return None
        if head.started_at is None:
            return 0.0  # playing on the server's side, not yet out of this speaker
        paused = head.paused_s + (max(0.0, now - head.quiet_since) if head.quiet_since is not None else 0.0)
        played = max(0.0, (now - head.started_at - paused - max(0.0, backlog_s)) * 1000)
        length = self._length_ms(head.response_id)
        return played if length is None else min(played, length)

    def waiting_for(self, response_id: str) -> bool:
        """An item of this answer is queued and has not started playing."""
        return any(a.response_id == response_id and a.started_at is None for a in self.queue)

    def drop_unstarted(self, keep: Callable[[Audio], bool]) -> None:
        """Forget queued items that never started, except those ``keep`` says are still coming."""
        self.queue = deque(a for a in self.queue if a.started_at is not None or keep(a))

    def interrupt(self) -> tuple[Audio | None, list[Audio]]:
        """A barge-in: returns the item being played (if any) and the ones never heard; the queue empties
        and whatever the speaker still drains holds no floor."""
        playing = self.audible_item
        rest = [a for a in self.queue if a is not playing]
        self.queue.clear()
        self.buffer_playing = False
        self.ignore_audible = self.audible
        return playing, rest
