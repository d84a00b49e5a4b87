"""A deploy's planned restart of the model's process, and waiting for its startup gate.

The restart is the supervisor's own operator restart (a planned window, so the models' failed
probes while it lasts are planned downtime, not an outage), with the deploy as its reason. The
deploy then follows the process's state changes, in order, through the supervisor's listeners:
the new incarnation is **ready** when the process is ``running`` with a pid other than the one
it had (the startup gate opened: a linked model's probe answered), and **failed** when the
process falls into ``backoff``, ``quarantined``, ``failed``, ``exited`` or ``stopped`` after the
restart began (it died starting, missed its gate, or someone stopped it), or when nothing
happened within its stop and startup timeouts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.supervise.core import ProcessCore
from agent.supervise.supervisor import ActionError, Supervisor
from probes.base import now_ms
from storage.records import ProcessState

__all__ = [
    "FAILED_START",
    "StartResult",
    "process_identity",
    "restart_and_wait",
    "same_process",
    "settled",
]

FAILED_START = frozenset(
    {
        ProcessState.BACKOFF,
        ProcessState.QUARANTINED,
        ProcessState.FAILED,
        ProcessState.EXITED,
        ProcessState.STOPPED,
    }
)
"""States that, after a deploy's restart began, mean the new incarnation did not come up."""

MARGIN_S = 5.0
"""Slack over the process's own stop and startup timeouts before the deploy stops waiting."""


@dataclass(frozen=True, slots=True)
class StartResult:
    """How a restart ended: ``ok`` (ready at ``at_ms``, pid ``pid``) or not (``detail``)."""

    ok: bool
    at_ms: int
    detail: str
    process: Mapping[str, Any] | None = None
    """The ready incarnation (:func:`process_identity`)."""

    def to_json(self) -> dict[str, object]:
        """JSON form, for evidence."""
        return {
            "ok": self.ok,
            "at_ms": self.at_ms,
            "detail": self.detail,
            "process": None if self.process is None else dict(self.process),
        }


def process_identity(mp: ProcessCore) -> dict[str, Any] | None:
    """The running incarnation as ``{"pid", "create_time"}`` (None when none runs): what a
    resuming deploy compares to tell the process it restarted from the one it replaced (a
    pid alone may be reused; the start time, as psutil reads it, is stable per process)."""
    h = mp.handle
    if h is None or mp.pid is None:
        return None
    return {"pid": h.pid, "create_time": h.create_time}


def same_process(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two identities name the same incarnation."""
    if a is None or b is None:
        return a is b
    ta, tb = a.get("create_time"), b.get("create_time")
    times = ta is None or tb is None or abs(float(ta) - float(tb)) < 0.05
    return a.get("pid") == b.get("pid") and times


async def restart_and_wait(sup: Supervisor, name: str, by: str, reason: str) -> StartResult:
    """Restart process ``name`` as a planned restart for ``reason``, and wait for its gate.

    Raises:
        ActionError: no such process.
    """
    mp = sup.processes.get(name)
    if mp is None:
        raise ActionError(f"no process named {name!r}", 404)
    old_pid = mp.pid
    changes: asyncio.Queue[tuple[ProcessState, int | None, str | None, int]] = asyncio.Queue()

    def listen(p: ProcessCore) -> None:
        if p.config.name == name:
            changes.put_nowait((p.state, p.pid, p.detail or p.last_exit, p.since_ms))

    cfg = mp.config
    budget = cfg.stop_timeout_s + cfg.startup_timeout_s + MARGIN_S
    deadline = time.monotonic() + budget
    sup.state_listeners.append(listen)
    try:
        sup.act(name, "restart", by, reason=reason)
        left_running = old_pid is None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return StartResult(False, now_ms(), f"not ready within {budget:g}s")
            try:
                state, pid, detail, since = await asyncio.wait_for(changes.get(), left)
            except TimeoutError:
                continue
            if state != ProcessState.RUNNING:
                left_running = True
            if state == ProcessState.RUNNING and left_running and pid is not None:
                return StartResult(True, since, f"pid {pid} is running", process_identity(mp))
            if state in FAILED_START and left_running and state != ProcessState.RUNNING:
                if state == ProcessState.STOPPED and detail and "config change" in detail:
                    continue  # a reload replaced the process: its new incarnation follows
                return StartResult(False, since, f"{state}: {detail or 'no detail'}")
    finally:
        sup.state_listeners.remove(listen)


async def settled(sup: Supervisor, name: str, timeout_s: float) -> ProcessCore | None:
    """Process ``name`` once it is ``running`` or in a state that waits (after an agent
    restart, adoption takes a moment); None when it is not there or not settled in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        mp = sup.processes.get(name)
        if mp is not None and (mp.state == ProcessState.RUNNING or mp.state in FAILED_START):
            return mp
        await asyncio.sleep(0.1)
    return sup.processes.get(name)
