"""Pacing for delivery: a token bucket per channel and exponential backoff with jitter.

Both run on the clock they are given (milliseconds), so tests drive them without sleeping.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


class TokenBucket:
    """At most ``burst`` sends at once, refilled at ``rate_per_s`` tokens a second."""

    def __init__(self, rate_per_s: float, burst: int, now_ms: int) -> None:
        self.rate_per_s = max(rate_per_s, 1e-6)
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._at_ms = now_ms

    def _refill(self, now_ms: int) -> None:
        if now_ms > self._at_ms:
            self._tokens = min(
                self.burst, self._tokens + (now_ms - self._at_ms) / 1000 * self.rate_per_s
            )
            self._at_ms = now_ms

    def take(self, now_ms: int) -> bool:
        """Take a token if there is one."""
        self._refill(now_ms)
        if self._tokens >= 1.0 - 1e-9:  # float dust must not hold back a token that is due
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def ready_at_ms(self, now_ms: int) -> int:
        """When the next token will be there (``now_ms`` if one is)."""
        self._refill(now_ms)
        if self._tokens >= 1.0 - 1e-9:
            return now_ms
        return now_ms + math.ceil((1.0 - self._tokens) / self.rate_per_s * 1000)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When to try again, and when to give up.

    The n-th failed attempt waits ``base_s * 2**(n-1)`` capped at ``max_s``, of which a random
    ``jitter`` fraction is taken off so that channels recovering together do not retry in
    lockstep. A receiver's ``Retry-After`` replaces the computed wait (capped at
    ``max_retry_after_s``). After ``max_attempts`` attempts or ``give_up_after_s`` since the
    notification was made, it is given up as undelivered.
    """

    base_s: float = 2.0
    max_s: float = 300.0
    jitter: float = 0.5
    max_attempts: int = 30
    give_up_after_s: float = 24 * 3600.0
    max_retry_after_s: float = 3600.0

    def delay_s(self, attempts: int, rng: random.Random, retry_after_s: float | None) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt."""
        if retry_after_s is not None:
            return min(max(retry_after_s, 0.0), self.max_retry_after_s)
        full = min(self.max_s, self.base_s * 2 ** max(0, attempts - 1))
        return full * (1.0 - self.jitter * rng.random())

    def gives_up(self, attempts: int, created_ms: int, now_ms: int) -> bool:
        """Whether to stop trying."""
        return attempts >= self.max_attempts or now_ms - created_ms >= self.give_up_after_s * 1000
