"""Maintenance windows: planned work during which notifications are muted.

A window is one-off (``starts_ms`` and a duration) or recurring (a 5-field cron expression
with a duration and a time zone: ``"0 2 * * sun"``, ``2h``, ``Europe/Berlin``). It covers the
whole host or only the subjects matching its patterns (``model:llama*``, ``process:vllm``).
Inside one, monitoring and records go on; notifications about covered subjects are muted, and
the daemon asks :meth:`MaintenanceCalendar.in_maintenance` when it opens an incident, so that
incidents inside a window are marked planned. Each window's start and end are audited
(``maintenance.started``, ``maintenance.ended``) and, with ``notify``, announced.

The window itself (plain data, validated when the config is read) lives in
:mod:`agent.config.alerting.windows`, below this room, so the config schema can build it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from agent.config.alerting.windows import MaintenanceWindow, validate_window
from storage.records import Event

__all__ = ["MaintenanceCalendar", "MaintenanceWindow", "WindowChange", "validate_window"]


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
