"""Planned windows: a start or stop that the agent or an operator asked for.

From the request until the startup gate opens, a process's models are in a *planned window*:
their failed probes open no incident and count against no availability. A start that misses
the gate, or dies starting, ends the window as failed at that moment. Restarts after a crash or
hang are never planned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from probes.base import now_ms

__all__ = ["PlannedStart", "PlannedWhat", "PlannedWindow"]


class PlannedWhat(StrEnum):
    """What a :class:`PlannedWindow` says: it opens (``start``, ``stop``) or closes."""

    START = "start"
    STOP = "stop"
    READY = "ready"
    """It closed: the startup gate opened."""
    FAILED = "failed"
    """It closed as an unplanned outage (the start missed its gate or died)."""


@dataclass(frozen=True, slots=True)
class PlannedWindow:
    """A planned start or stop of a process, as its models hear of it.

    ``what`` is ``start`` or ``stop`` (the window opens), ``ready`` (it closed: the gate
    opened) or ``failed`` (it closed as an unplanned outage; ``reason`` says why).
    """

    what: PlannedWhat
    reason: str
    at_ms: int


class PlannedStart:
    """The planned window of one process: open from :meth:`plan` until :meth:`end`.

    The models hear of it once (``tell``), either at once or at the first moment they could
    see the server missing: an adopted process (an agent restart) was never down.
    """

    def __init__(self, tell: Callable[[PlannedWindow], None]) -> None:
        self._tell = tell
        self.reason: str | None = None
        """Why the current start (or stop) is planned, until it is over."""
        self._since_ms = now_ms()
        self._told = False

    def plan(self, reason: str, *, stopping: bool = False, tell: bool = True) -> None:
        """Mark the coming start (or stop) as asked for; ``tell`` the models now or later."""
        self.reason = reason
        self._since_ms = now_ms()
        self._told = False
        if tell:
            self.tell(stopping=stopping)

    def tell(self, *, stopping: bool = False) -> None:
        """Tell the models the window is open, unless they know or there is none."""
        if self.reason is None or self._told:
            return
        self._told = True
        what = PlannedWhat.STOP if stopping else PlannedWhat.START
        self._tell(PlannedWindow(what, self.reason, self._since_ms))

    def end(self, failed: str | None, at_ms: int) -> None:
        """The planned start is over: ready (``failed`` None) or failed at ``at_ms``."""
        if self.reason is None:
            return
        told, self.reason, self._told = self._told, None, False
        if told:
            what = PlannedWhat.READY if failed is None else PlannedWhat.FAILED
            self._tell(PlannedWindow(what, failed or "", at_ms))
