"""Maintenance windows: planned work during which notifications are muted.

A window is one-off (``starts_ms`` and a duration) or recurring (a 5-field cron expression
with a duration and a time zone: ``"0 2 * * sun"``, ``2h``, ``Europe/Berlin``). It covers the
whole host or only the subjects matching its patterns (``model:llama*``, ``process:vllm``).
Inside one, monitoring and records go on; notifications about covered subjects are muted, and
the daemon asks :meth:`MaintenanceCalendar.in_maintenance` when it opens an incident, so that
incidents inside a window are marked planned. Each window's start and end are audited
(``maintenance.started``, ``maintenance.ended``) and, with ``notify``, announced.
"""

from __future__ import annotations

import fnmatch
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.alerting.cron import Cron, zone
from agent.alerting.rules import RuleError
from storage.records import Event


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


@dataclass(frozen=True, slots=True)
class WindowChange:
    """A window started or ended at ``at_ms``."""

    window: MaintenanceWindow
    started: bool
    at_ms: int
    ends_ms: int


class MaintenanceCalendar:
    """The configured windows, which are in force, and their starts and ends."""

    def __init__(self, windows: Iterable[MaintenanceWindow], emit: Callable[[Event], None]) -> None:
        self.windows = list(windows)
        self.emit = emit
        self._open: dict[str, tuple[int, int]] = {}

    def set_windows(self, windows: Iterable[MaintenanceWindow]) -> None:
        """Take a new set (config reload); a removed window ends at the next step."""
        self.windows = list(windows)

    def in_maintenance(self, subject: str, now_ms: int) -> MaintenanceWindow | None:
        """The window covering ``subject`` at ``now_ms``, if any (the daemon marks incidents
        opened then as planned)."""
        for w in self.windows:
            if w.covers(subject) and w.current(now_ms) is not None:
                return w
        return None

    def step(self, now_ms: int) -> list[WindowChange]:
        """Notice windows that started or ended since the last step; audit each change."""
        changes: list[WindowChange] = []
        by_name = {w.name: w for w in self.windows}
        for name, (start, end) in list(self._open.items()):
            w = by_name.get(name)
            now = w.current(now_ms) if w is not None else None
            if now != (start, end):
                del self._open[name]
                ended = min(end, now_ms)
                window = w or MaintenanceWindow(name=name, duration_s=(end - start) / 1000)
                changes.append(self._change(window, False, ended, end))
        for w in self.windows:
            occ = w.current(now_ms)
            if occ is not None and w.name not in self._open:
                self._open[w.name] = occ
                changes.append(self._change(w, True, occ[0], occ[1]))
        return changes

    def _change(
        self, w: MaintenanceWindow, started: bool, at_ms: int, ends_ms: int
    ) -> WindowChange:
        what = "started" if started else "ended"
        scope = ", ".join(w.subjects) or "the whole host"
        self.emit(
            Event(
                ts_ms=at_ms,
                kind=f"maintenance.{what}",
                subject="alerts",
                message=f"maintenance {w.name} {what} ({scope})",
                data={"window": w.name, "subjects": list(w.subjects), "ends_ms": ends_ms},
            )
        )
        return WindowChange(w, started, at_ms, ends_ms)
