"""Capped exponential backoff with jitter, shared by everything that retries the network."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_delay(failures: int, base_s: float, max_s: float,
                  jitter: Callable[[], float] = random.random) -> float:
    """Delay before the next try after ``failures`` failures in a row: base·2^(n-1), capped, then
    scaled into [50 %, 100 %] so a room full of kiosks does not retry in lockstep."""
    step = min(max_s, base_s * (2 ** max(0, failures - 1)))
    return step * (0.5 + 0.5 * jitter())
