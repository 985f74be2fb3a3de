"""The arrival meter that tells a glitch-free call from one that stutters (simulator and benchmarks)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.common.arrival import LATE_KEPT, ArrivalGaps


@given(st.lists(st.integers(min_value=0, max_value=3000_000).filter(lambda g: g != 40_000), min_size=1, max_size=200))
def test_late_frames_and_gaps_follow_the_arrival_times(gaps_us: list[int]) -> None:
    meter, at_us = ArrivalGaps(), 100_000_000
    meter.frame(at_us / 1e6)
    for gap in gaps_us:
        at_us += gap
        meter.frame(at_us / 1e6)
    gaps_ms = [g / 1000 for g in gaps_us]
    assert meter.frames == len(gaps_us) + 1
    assert meter.late_frames == sum(1 for g in gaps_us if g > 40_000)  # (exactly 40 ms is left to float rounding)
    assert abs(meter.max_gap_ms - max(gaps_ms)) < 0.01
    p99 = meter.gap_percentile_ms(0.99)
    below = sum(1 for g in gaps_ms if g <= p99 + 0.01) / len(gaps_ms)
    assert below >= 0.99  # never under the true p99 (1 ms bins, rounded up)
    assert p99 <= max(gaps_ms) + 1.01  # and at most one bin over it


@given(st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=100))
def test_lost_audio_is_the_samples_the_timestamps_skip(skips: list[int]) -> None:
    """Frames of 960 samples; before each frame, ``skip`` frames that never came."""
    meter, pts, at = ArrivalGaps(), 0, 0.0
    for skip in skips:
        pts += skip * 960
        at += 0.02
        meter.frame(at, pts, 960)
        pts += 960
    lost = sum(skips[1:]) * 960  # what was skipped before the first frame is not known to be lost
    assert meter.samples_lost == lost
    assert meter.lost_share == lost / (lost + len(skips) * 960)


def test_a_frame_from_the_past_is_not_counted_as_lost_audio_nor_moves_the_expectation_back() -> None:
    meter = ArrivalGaps()
    for at, pts in ((0.0, 0), (0.02, 960), (0.04, 0), (0.06, 1920)):  # a repeated old frame, then in order
        meter.frame(at, pts, 960)
    assert meter.samples_lost == 0 and meter.late_frames == 0 and meter.frames == 4


def test_an_empty_meter_says_nothing_happened() -> None:
    meter = ArrivalGaps()
    assert meter.summary() == {"frames": 0, "late_frames": 0, "p99_gap_ms": 0.0, "max_gap_ms": 0.0,
                               "lost_share": 0.0, "late": []}


def test_where_the_late_frames_fell_is_kept_up_to_a_bound() -> None:
    meter = ArrivalGaps()
    at = 10.0
    for n in range(1, 101):
        at += 0.1 if n % 4 == 0 else 0.02  # every fourth frame comes 100 ms after the one before
        meter.frame(at)
    assert meter.late_frames == 25
    assert len(meter.late) == LATE_KEPT
    frame, since_first_ms, gap_ms = meter.late[0]
    assert (frame, gap_ms) == (4, 100.0) and since_first_ms == pytest.approx(140.0)


def test_a_long_chunk_covers_the_gap_after_it_but_not_more() -> None:
    meter = ArrivalGaps()
    meter.frame(0.0, holds_ms=320)  # a sound cue written in one piece
    meter.frame(0.080)  # the first 20 ms frame, 80 ms later: the sink still had 240 ms queued
    meter.frame(0.100)
    assert meter.late_frames == 0
    meter.frame(0.200, holds_ms=60)  # 100 ms after a 20 ms frame: late
    meter.frame(0.270)  # 70 ms after a 60 ms chunk: 30 ms beyond a frame's slot, within the slack
    meter.frame(0.350)  # 80 ms after a 20 ms frame: late again
    assert meter.late_frames == 2 and [gap for _, _, gap in meter.late] == [100.0, 80.0]
