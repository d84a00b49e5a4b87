"""Stalled-generation detection from two scraped numbers: requests running, and a progress counter.

A model server that hangs mid-generation (a wedged CUDA kernel, a deadlocked scheduler) often
still answers ``/metrics``: its gauges say requests are running while its generated-token (or
decode-step) counter stops moving. :class:`StallDetector` turns a sequence of scrapes into that
verdict. It is pure (no I/O, no clock): the caller passes each scrape's timestamp.

Rules:

- a scrape with requests running and the counter equal to the previous scrape's is *flat*;
  ``after`` flat scrapes in a row are a stall, and every further flat scrape still is;
- the counter going up ends it; going down is a counter reset (the server restarted), never a
  stall, and starts a new baseline;
- no request running resets everything, and the next busy scrape is only the new baseline: so a
  stall always spans ``after`` whole intervals during which requests were running.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Stall:
    """A stall verdict: what the last scrape saw and how long the counter has been flat."""

    running: float
    tokens: float
    flat_scrapes: int
    flat_ms: int
    """From the scrape that first saw ``tokens`` to the latest one."""

    def describe(self, running_metric: str, tokens_metric: str) -> str:
        """The run's error text: ``3 requests running (R), T flat at 1234 for 3 scrapes (15s)``.

        The category already says ``stalled``; incidents show ``stalled: <this text>``.
        """
        n = _number(self.running)
        noun = "request" if self.running == 1 else "requests"
        return (
            f"{n} {noun} running ({running_metric}), {tokens_metric} flat at "
            f"{_number(self.tokens)} for {self.flat_scrapes} scrapes ({_seconds(self.flat_ms)})"
        )


class StallDetector:
    """Feeds on one (running, tokens) pair per scrape; says when generation has stalled."""

    def __init__(self, after: int) -> None:
        """Start with no baseline.

        Args:
            after: flat scrapes in a row (each compared with the one before) that make a stall.
        """
        if after < 1:
            raise ValueError(f"after must be at least 1, got {after}")
        self.after = after
        self._baseline: float | None = None
        self._baseline_ms = 0
        self._flat = 0

    @property
    def flat_scrapes(self) -> int:
        """Flat scrapes in a row so far (0 while the counter moves or nothing runs)."""
        return self._flat

    def reset(self) -> None:
        """Forget everything (nothing running, or a caller that lost track)."""
        self._baseline = None
        self._flat = 0

    def observe(self, ts_ms: int, running: float, tokens: float) -> Stall | None:
        """Take one scrape; return the stall it completes or continues, else None.

        Args:
            ts_ms: when the scrape was taken (epoch ms; only differences matter).
            running: requests running (a gauge); NaN or <= 0 means none.
            tokens: the progress counter's value; NaN means unknown and resets.
        """
        if not running > 0 or math.isnan(tokens):  # `not >` so NaN counts as nothing running
            self.reset()
            return None
        if self._baseline is None or tokens != self._baseline:
            # First busy scrape, progress, or a counter reset (tokens < baseline): either way
            # this value is the new baseline and nothing is flat yet.
            self._baseline, self._baseline_ms, self._flat = tokens, ts_ms, 0
            return None
        self._flat += 1
        if self._flat < self.after:
            return None
        return Stall(running, tokens, self._flat, ts_ms - self._baseline_ms)


def _number(value: float) -> str:
    """Counter and gauge values as people write them: 1234, not 1234.0 or 1.234e+03."""
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return f"{value:g}"


def _seconds(ms: int) -> str:
    seconds = ms / 1000
    if seconds < 10:
        return f"{seconds:.1f}s".replace(".0s", "s")
    return f"{seconds:.0f}s"
