"""Small helpers for hand-written SVG: escaping, fixed number formatting, scales and tick steps.

Numbers are written with a fixed number of decimals, so the same input always gives the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape


def esc(value: object) -> str:
    """Text or an attribute value, escaped for HTML and SVG."""
    return escape(str(value), quote=True)


def num(value: float) -> str:
    """A coordinate: one decimal, no "-0.0"."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def nice_step(span: float, max_ticks: int) -> float:
    """The smallest step of the form 1, 2 or 5 x 10^k that cuts `span` into at most `max_ticks` parts."""
    if span <= 0:
        return 1.0
    raw = span / max(1, max_ticks)
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 5.0, 10.0):
        if factor * power >= raw - 1e-12:
            return factor * power
    return 10.0 * power


def ticks(lo: float, hi: float, max_ticks: int) -> list[float]:
    """Tick values at a nice step from `lo` (rounded up to the step) to `hi`."""
    step = nice_step(hi - lo, max_ticks)
    first = math.ceil(lo / step - 1e-9)
    out = []
    k = first
    while k * step <= hi + 1e-9:
        out.append(round(k * step, 10))
        k += 1
    return out


def tick_label(value: float) -> str:
    """A tick value without needless decimals: 0, 0.5, 2, 1000."""
    if value == int(value):
        return str(int(value))
    return f"{value:g}"


@dataclass(frozen=True, slots=True)
class LinearScale:
    lo: float
    hi: float
    out_lo: float
    out_hi: float

    def __call__(self, value: float) -> float:
        span = self.hi - self.lo
        fraction = (value - self.lo) / span if span else 0.0
        return self.out_lo + fraction * (self.out_hi - self.out_lo)


@dataclass(frozen=True, slots=True)
class LogScale:
    """Base-10 log scale over [lo, hi] (both > 0); values below `lo` are drawn at `lo`."""

    lo: float
    hi: float
    out_lo: float
    out_hi: float

    def __call__(self, value: float) -> float:
        value = min(max(value, self.lo), self.hi)
        span = math.log10(self.hi) - math.log10(self.lo)
        fraction = (math.log10(value) - math.log10(self.lo)) / span if span else 0.0
        return self.out_lo + fraction * (self.out_hi - self.out_lo)

    @staticmethod
    def covering(values: list[float]) -> tuple[float, float]:
        """The decades [10^a, 10^b] around `values` (positive ones), at least one decade apart."""
        positive = [v for v in values if v > 0 and math.isfinite(v)]
        if not positive:
            return 1.0, 10.0
        lo = 10.0 ** math.floor(math.log10(min(positive)))
        hi = 10.0 ** math.ceil(math.log10(max(positive)))
        return lo, hi if hi > lo else lo * 10

    def ticks(self) -> list[float]:
        """1, 2 and 5 times every decade in range."""
        out: list[float] = []
        decade = self.lo
        while decade <= self.hi * (1 + 1e-9):
            out.extend(v for v in (decade, 2 * decade, 5 * decade) if v <= self.hi * (1 + 1e-9))
            decade *= 10
        return out
