"""A series' samples over a rule's window, and the exact sums its mean and slope come from.

A rule over an hour of a 1 s series (``disk_filling``: the least-squares slope of
``host.disk.used_bytes``) took each second a pass over 3,600 samples in Python, a few
milliseconds a second. :class:`Stats` keeps the sums the mean and the slope need (count, sum
of times, of squared times, of values, of time x value) as exact integers, so a sample entering
or leaving the window costs O(1) (:mod:`agent.alerting.seriescache` keeps one per series and
window) and the results are exact, rounded once:

* the mean is the correctly rounded sum divided by the count, which is what
  ``math.fsum(values) / len(values)`` gives (``fsum`` is correctly rounded too): the same float;
* the slope is the exact least-squares slope, rounded once. The float formula it replaces
  (mean-centred, ``fsum``) took times as float seconds since 1970, each rounded by ~0.2 us,
  and agreed with it to about 1e-8 relative; no threshold can tell them apart.

Values are floats, so they are kept as integers scaled by ``2**scale`` (a float is an integer
over a power of two); times are integer milliseconds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol


class Stats:
    """Exact running sums over a window's samples."""

    __slots__ = ("n", "scale", "st", "stt", "stv", "sv")

    def __init__(self) -> None:
        self.n = 0
        self.st = 0
        self.stt = 0
        self.sv = 0
        """Sum of values, times ``2**scale``."""
        self.stv = 0
        """Sum of time x value, times ``2**scale``."""
        self.scale = 0

    @classmethod
    def of(cls, ts: Sequence[int], values: Sequence[float]) -> Stats:
        """The sums of these samples."""
        out = cls()
        for t, v in zip(ts, values, strict=True):
            out.add(t, v)
        return out

    def _scaled(self, v: float) -> int:
        num, den = v.as_integer_ratio()
        k = den.bit_length() - 1  # den is a power of two
        if k > self.scale:
            self.sv <<= k - self.scale
            self.stv <<= k - self.scale
            self.scale = k
        return num << (self.scale - k)

    def add(self, t: int, v: float) -> None:
        """One sample enters the window."""
        x = self._scaled(v)
        self.n += 1
        self.st += t
        self.stt += t * t
        self.sv += x
        self.stv += t * x

    def remove(self, t: int, v: float) -> None:
        """One sample (added before) leaves the window."""
        x = self._scaled(v)
        self.n -= 1
        self.st -= t
        self.stt -= t * t
        self.sv -= x
        self.stv -= t * x

    def mean(self) -> float | None:
        """The mean value (None without samples): ``math.fsum(values) / len(values)``."""
        if not self.n:
            return None
        return (self.sv / (1 << self.scale)) / self.n

    def slope_per_s(self) -> float | None:
        """The least-squares slope, per second; None with fewer than two distinct times."""
        den = self.n * self.stt - self.st * self.st  # n^2 x the variance of the times: >= 0
        if self.n < 2 or den <= 0:
            return None
        num = self.n * self.stv - self.st * self.sv
        return (num * 1000) / (den << self.scale)  # per ms -> per s; one rounding


class Window(Protocol):
    """One series' samples in a rule's window, oldest first."""

    @property
    def count(self) -> int:
        """How many samples."""
        ...

    @property
    def last(self) -> float:
        """The newest value (only when ``count``)."""
        ...

    def values(self) -> Sequence[float]:
        """The values, oldest first."""
        ...

    def stats(self) -> Stats:
        """The window's sums."""
        ...


class PointsWindow:
    """A :class:`Window` over a list of (time, value) points, as any series reader returns."""

    def __init__(self, points: Sequence[tuple[int, float]]) -> None:
        self.points = points

    @property
    def count(self) -> int:
        """How many samples."""
        return len(self.points)

    @property
    def last(self) -> float:
        """The newest value."""
        return float(self.points[-1][1])

    def values(self) -> list[float]:
        """The values, oldest first."""
        return [float(v) for _, v in self.points]

    def stats(self) -> Stats:
        """The sums, counted now."""
        return Stats.of([t for t, _ in self.points], self.values())


def time_to_full(window: Window, limit: float) -> float | None:
    """Seconds until the window's fitted line reaches ``limit`` (inf when not rising)."""
    slope = window.stats().slope_per_s()
    if slope is None:
        return None
    if slope <= 0:
        return math.inf
    return max(0.0, (limit - window.last) / slope)
