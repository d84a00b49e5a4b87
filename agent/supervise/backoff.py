"""When to restart a process again, and when to give up: backoff and crash-loop quarantine.

- The first restart after a healthy period (``backoff_reset``) is immediate; the next ones wait
  ``backoff_initial`` times ``backoff_factor`` per further restart, capped at ``backoff_max``,
  stretched by up to ``backoff_jitter`` at random.
- ``quarantine_after`` restarts within ``quarantine_window`` and the next failure quarantines
  the process (no more restarts until an operator releases it).
"""

from __future__ import annotations

import random
from collections import deque

from agent.config import ProcessConfig

__all__ = ["RestartHistory"]


class RestartHistory:
    """One process's recent restarts (monotonic seconds) and its streak of quick failures."""

    def __init__(self, config: ProcessConfig) -> None:
        self.config = config
        self._times: deque[float] = deque()
        self._streak = 0

    def ran_for(self, uptime_s: float | None) -> None:
        """The incarnation that just failed ran ``uptime_s`` (None: it never started)."""
        if uptime_s is not None and uptime_s >= self.config.backoff_reset_s:
            self._streak = 0

    def crash_loop(self, now: float) -> int | None:
        """The restarts within the quarantine window when they are enough to quarantine at
        ``now``; None when the process may be restarted."""
        window = self.config.quarantine_window_s
        while self._times and now - self._times[0] > window:
            self._times.popleft()
        after = self.config.quarantine_after
        return len(self._times) if after and len(self._times) >= after else None

    def next_delay(self) -> float:
        """Seconds to wait before the coming restart (and count it into the streak)."""
        cfg = self.config
        streak, self._streak = self._streak, self._streak + 1
        if streak == 0:
            return 0.0  # the first restart after a healthy run is immediate
        base = min(cfg.backoff_max_s, cfg.backoff_initial_s * cfg.backoff_factor ** (streak - 1))
        return base * (1 + random.uniform(0, cfg.backoff_jitter))  # noqa: S311 - not secrecy

    def restarted(self, at: float) -> None:
        """A restart (not an operator's) happened at ``at`` (monotonic seconds)."""
        self._times.append(at)

    def clear(self) -> None:
        """Forget the history: an operator released the process from quarantine."""
        self._times.clear()
        self._streak = 0
