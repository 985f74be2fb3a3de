"""Geometry of a stacked bar chart (one bar per day, one segment per kiosk), drawn as SVG by a template.

Made on the server so the console needs no JavaScript; the page also shows the same numbers as a table,
which is what a screen reader reads (the SVG carries a <title> and a <desc> that summarise it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from appliance.companion.console.queries import DayUsage

#: Okabe-Ito's blue, vermillion, green and pink (told apart with the common colour-vision deficiencies), and
#: in place of its yellow, sky blue and orange (1.3-2.3:1 on white) darker ochre, purple and wine: every bar
#: at least 3:1 against the white page (WCAG 1.4.11 for graphics).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#996600", "#5D3A9B", "#000000", "#882255")
WIDTH, HEIGHT = 640, 240
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 12, 40


@dataclass(frozen=True)
class Segment:
    x: float
    y: float
    width: float
    height: float
    colour: str
    label: str
    """e.g. "2026-11-24, kiosk-a: 12.5 minutes" (a tooltip via <title>)."""


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class DayLabel:
    x: float
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    desc: str
    width: int
    height: int
    segments: list[Segment]
    ticks: list[Tick]
    days: list[DayLabel]
    legend: list[tuple[str, str]]
    """(kiosk, colour) pairs."""
    left: int = LEFT
    baseline: float = HEIGHT - BOTTOM


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 × 10ⁿ at or above ``value`` (so the axis reads in round numbers)."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= value * (1 - 1e-9))


def stacked_bars(usage: Sequence[DayUsage], value: Callable[[DayUsage], float], title: str, unit: str,
                 fmt: Callable[[float], str]) -> Chart:
    days = sorted({u.day for u in usage})
    kiosks = sorted({u.kiosk_id for u in usage})
    colours = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(kiosks)}
    totals = {d: sum(value(u) for u in usage if u.day == d) for d in days}
    top = _nice_max(max(totals.values(), default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(days), 1)
    bar_w = max(min(slot * 0.7, 48), 2)
    segments: list[Segment] = []
    labels: list[DayLabel] = []
    every = max(1, len(days) // 10)  # at most ~10 day labels under the axis
    for i, day in enumerate(days):
        x = LEFT + i * slot + (slot - bar_w) / 2
        y = float(TOP + plot_h)
        for u in (u for u in usage if u.day == day):
            h = plot_h * value(u) / top
            y -= h
            segments.append(Segment(round(x, 1), round(y, 1), round(bar_w, 1), round(h, 1), colours[u.kiosk_id],
                                    f"{day}, {u.kiosk_id}: {fmt(value(u))} {unit}"))
        if i % every == 0:
            labels.append(DayLabel(round(x + bar_w / 2, 1), day[5:]))
    ticks = [Tick(round(TOP + plot_h * (1 - f), 1), f"{round(top * f, 6):g}") for f in (0, 0.2, 0.4, 0.6, 0.8, 1)]
    if days:
        busiest = max(days, key=lambda d: totals[d])
        desc = (f"{len(days)} days from {days[0]} to {days[-1]}, {len(kiosks)} kiosks; "
                f"total {fmt(sum(totals.values()))} {unit}; busiest day {busiest} with {fmt(totals[busiest])} {unit}. "
                "The table below lists every value.")
    else:
        desc = "No lessons match the filter."
    return Chart(title, desc, WIDTH, HEIGHT, segments, ticks, labels, [(k, colours[k]) for k in kiosks])


def minutes_chart(usage: Sequence[DayUsage]) -> Chart:
    return stacked_bars(usage, lambda u: u.minutes, "Lesson minutes per day", "minutes", lambda v: f"{v:.1f}")


def cost_chart(usage: Sequence[DayUsage]) -> Chart:
    return stacked_bars(usage, lambda u: u.cost_usd, "Estimated cost per day (USD)", "USD", lambda v: f"{v:.2f}")
