"""Maintenance windows as the config declares them: plain data and its validation.

A window is one-off (``starts_ms`` and a duration) or recurring (a 5-field cron expression
with a duration and a time zone: ``"0 2 * * sun"``, ``2h``, ``Europe/Berlin``). It covers the
whole host or only the subjects matching its patterns (``model:llama*``, ``process:vllm``).
What a window does while in force (muting, planned incidents, notices) is
:mod:`agent.alerting.maintenance`'s business.
"""

from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass

from agent.config.alerting.cron import Cron, zone
from agent.config.alerting.rules import RuleError


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """One maintenance window (see the module docstring)."""

    name: str
    duration_s: float
    schedule: str = ""
    """A cron expression; empty for a one-off window at ``starts_ms``."""
    starts_ms: int | None = None
    timezone: str = "UTC"
    subjects: tuple[str, ...] = ()
    """Subject patterns (``fnmatch``) it covers; empty covers the whole host."""
    notify: bool = False
    comment: str = ""

    def covers(self, subject: str) -> bool:
        """Whether ``subject`` is inside this window's scope."""
        return not self.subjects or any(fnmatch.fnmatchcase(subject, p) for p in self.subjects)

    def current(self, now_ms: int) -> tuple[int, int] | None:
        """The (start, end) of the occurrence in force at ``now_ms``, or None."""
        length = int(self.duration_s * 1000)
        if not self.schedule:
            if self.starts_ms is not None and self.starts_ms <= now_ms < self.starts_ms + length:
                return self.starts_ms, self.starts_ms + length
            return None
        start = _cron(self.schedule).latest_start(now_ms, zone(self.timezone), length)
        return (start, start + length) if start is not None else None


@functools.lru_cache(maxsize=64)
def _cron(expr: str) -> Cron:
    return Cron.parse(expr)


def validate_window(w: MaintenanceWindow) -> list[RuleError]:
    """Every problem with a window, each naming its field."""
    errors: list[RuleError] = []
    if w.duration_s <= 0:
        errors.append(RuleError(w.name, "duration", "expected a duration > 0"))
    if bool(w.schedule) == (w.starts_ms is not None):
        errors.append(RuleError(w.name, "schedule", "expected either a schedule or a start"))
    if w.schedule:
        try:
            Cron.parse(w.schedule)
        except ValueError as exc:
            errors.append(RuleError(w.name, "schedule", str(exc)))
    try:
        zone(w.timezone)
    except ValueError as exc:
        errors.append(RuleError(w.name, "timezone", str(exc)))
    return errors
