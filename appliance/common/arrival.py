"""How evenly a stream of 20 ms audio frames arrives: late frames and lost audio, in bounded memory.

Used where audio is received (the simulator hearing a kiosk's microphone, a benchmark's speaker) to
tell a glitch-free call from one that stutters. A frame is *late* when it comes more than
``LATE_GAP_MS`` after the one before it (its own 20 ms slot plus one frame of slack: what a device's
small buffer absorbs); audio is *lost* when the frames' timestamps skip over samples that never came.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FRAME_MS = 20.0
"""The usual frame: 20 ms of audio."""
LATE_GAP_MS = 40.0
"""A gap between two frames longer than this is a glitch a learner can hear."""
HISTOGRAM_MS = 2000
"""Gaps are counted in 1 ms bins up to this; longer ones land in the last bin (and in ``max_gap_ms``)."""
LATE_KEPT = 20
"""Where the first late frames fell is kept (frame number, ms since the first frame); later ones are only counted."""


@dataclass
class ArrivalGaps:
    """Frames seen, late frames, lost samples, and the gap distribution (1 ms bins)."""

    frames: int = 0
    late_frames: int = 0
    max_gap_ms: float = 0.0
    samples_expected: int = 0
    samples_lost: int = 0
    #: (frame number, ms since the first frame, gap ms) of the first ``LATE_KEPT`` late frames.
    late: list[tuple[int, float, float]] = field(default_factory=list)
    _first_at: float | None = None
    _extra_ms: float = 0.0
    _last_at: float | None = None
    _next_pts: int | None = None
    _bins: list[int] = field(default_factory=lambda: [0] * (HISTOGRAM_MS + 1))

    def frame(self, at: float, pts: int | None = None, samples: int = 960, holds_ms: float = FRAME_MS) -> None:
        """A frame arrived at ``at`` (monotonic seconds); ``pts`` in samples when the stream has them.

        ``holds_ms`` is how much audio the frame carries: a longer chunk (a sound cue written to a
        speaker in one piece) keeps the listener busy for longer, so the gap after it is counted
        from where a 20 ms frame would have ended (a sink fed 320 ms at once does not starve 80 ms later).
        """
        self.frames += 1
        if self._last_at is not None:
            gap_ms = max(0.0, (at - self._last_at) * 1000 - self._extra_ms)
            self._bins[min(HISTOGRAM_MS, int(gap_ms))] += 1
            self.max_gap_ms = max(self.max_gap_ms, gap_ms)
            if gap_ms > LATE_GAP_MS:
                self.late_frames += 1
                if len(self.late) < LATE_KEPT:
                    self.late.append((self.frames, round((at - (self._first_at or at)) * 1000, 1), round(gap_ms, 1)))
        else:
            self._first_at = at
        self._last_at = at
        self._extra_ms = max(0.0, holds_ms - FRAME_MS)
        if pts is not None:
            if self._next_pts is not None and pts > self._next_pts:
                skipped = pts - self._next_pts
                self.samples_lost += skipped
                self.samples_expected += skipped
            if self._next_pts is None or pts >= self._next_pts:
                self._next_pts = pts + samples
            self.samples_expected += samples

    def gap_percentile_ms(self, q: float) -> float:
        """The gap below which a share ``q`` of all gaps fall (1 ms resolution); 0 before two frames."""
        total = sum(self._bins)
        if total == 0:
            return 0.0
        wanted = q * total
        seen = 0
        for ms, count in enumerate(self._bins):
            seen += count
            if seen >= wanted:
                return float(ms + 1) if ms < HISTOGRAM_MS else self.max_gap_ms
        return self.max_gap_ms

    @property
    def lost_share(self) -> float:
        """The share of the stream's audio that never arrived (0 when it has no timestamps)."""
        return self.samples_lost / self.samples_expected if self.samples_expected else 0.0

    def summary(self) -> dict[str, float | list[tuple[int, float, float]]]:
        return {"frames": self.frames, "late_frames": self.late_frames, "p99_gap_ms": self.gap_percentile_ms(0.99),
                "max_gap_ms": round(self.max_gap_ms, 1), "lost_share": round(self.lost_share, 4),
                "late": list(self.late)}
