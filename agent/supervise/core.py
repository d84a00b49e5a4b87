"""What a managed process is and what it hears: its state, its status record, its audit
events, and what the outside tells it (requests, probe results, wake-ups).

:class:`ProcessCore` holds that; :class:`~agent.supervise.process.ManagedProcess` builds the
state machine that acts on it. Both ask their supervisor (an :class:`Overseer`) for what
involves the other processes: dependencies, incidents, records, the models to probe or tell.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from agent.config import ProcessConfig
from agent.health.incidents import IncidentBook
from agent.supervise.adoption import ProcessRecord
from agent.supervise.backoff import RestartHistory
from agent.supervise.planned import PlannedStart, PlannedWindow
from agent.supervise.proclogs import ProcessLog
from agent.supervise.requests import Request, RequestKind
from agent.supervise.targets import Target, make_target
from agent.supervise.tree import Handle
from probes.base import now_ms
from storage.records import Event, ProbeRun, ProcessState, ProcessStatus

log = logging.getLogger("vigil.supervisor")

EVIDENCE_LOG_LINES = 20
EVIDENCE_RUNS = 5
SOFT_FAILURES = ("slow", "wrong_output")
"""Probe categories that are answers (bad ones, the model monitor's business), not failures."""

__all__ = ["Overseer", "ProcessCore"]


class Overseer(Protocol):
    """What a managed process asks of its supervisor (:class:`~agent.supervise.Supervisor`)."""

    log_dir: Path
    book: IncidentBook | None
    gpu_pids: Callable[[], set[int]] | None
    emit: Callable[[Event], None]

    def blockers(self, mp: ProcessCore) -> list[str]:
        """The dependencies of ``mp`` that are not running."""

    def state_changed(self, mp: ProcessCore) -> None:
        """``mp`` changed state: its dependents re-check their dependencies."""

    def linked_models(self, process: str) -> list[str]:
        """Names of the models whose probes tell about ``process``."""

    def planned(self, mp: ProcessCore, window: PlannedWindow) -> None:
        """Tell the models of ``mp`` that a planned window opened or closed."""

    async def probe_now(self, models: list[str]) -> None:
        """Probe these models now (the startup gate)."""

    def save_records(self) -> None:
        """Write every process's adoption record."""

    def root_incident(self, names: list[str]) -> int | None:
        """The root incident behind these processes' trouble."""

    def open_incident(
        self,
        mp: ProcessCore,
        kind: str,
        severity: str,
        cause: str,
        *,
        root_id: int | None = None,
        evidence: dict[str, Any] | None = None,
        opened_ms: int | None = None,
        began_ms: int | None = None,
    ) -> None:
        """Open an incident about ``mp``."""

    def resolve_incidents(self, mp: ProcessCore, at_ms: int | None = None) -> None:
        """``mp`` is healthy again: resolve its incidents."""


class ProcessCore:
    """One supervised process's state, status and inputs (the state machine is a subclass's)."""

    """One supervised process: its target, state machine and restart history."""

    def __init__(self, config: ProcessConfig, sup: Overseer) -> None:
        self.config = config
        self.sup = sup
        self.plog = ProcessLog(sup.log_dir, config.name, config.log_max_bytes, config.log_keep)
        self.target: Target = make_target(config, self.plog)
        self.subject = f"process:{config.name}"
        self.state = ProcessState.STARTING
        self.since_ms = now_ms()
        self.detail: str | None = None
        self.handle: Handle | None = None
        self.restarts = 0
        self.last_exit: str | None = None
        self.last_reason: str | None = None
        self.adopted = False
        self.want = "run"
        self.quarantined = False
        self.ready = asyncio.Event()
        self.recent_runs: deque[ProbeRun] = deque(maxlen=EVIDENCE_RUNS)
        self.hard_failures = 0
        self.history = RestartHistory(config)
        self._request: Request | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._record: ProcessRecord | None = None
        self._found: Handle | None = None
        self.window = PlannedStart(lambda window: sup.planned(self, window))
        """The planned start (or stop) in progress, if any."""
        self.failing_since_ms: int | None = None

    # --- status ----------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The running process's pid, if any."""
        h = self.handle
        return h.pid if h is not None and not h.exited.done() else None

    def status(self) -> ProcessStatus:
        """The record the API serves."""
        inc = self.sup.book.current(self.subject) if self.sup.book else None
        return ProcessStatus(
            name=self.config.name,
            state=self.state,
            since_ms=self.since_ms,
            pid=self.pid,
            restarts=self.restarts,
            last_exit=self.last_exit,
            argv=self.config.command,
            kind=self.config.kind,
            target=self.target.describe(),
            detail=self.detail,
            last_reason=self.last_reason,
            adopted=self.adopted,
            depends_on=self.config.depends_on,
            incident=inc.id if inc else None,
        )

    def _set_state(self, state: ProcessState, detail: str | None = None) -> None:
        self.detail = detail
        if state != self.state:
            old, self.state = self.state, state
            self.since_ms = now_ms()
            log.info(
                "process state name=%s from=%s to=%s detail=%r",
                self.config.name,
                old,
                state,
                detail,
            )
            if state == ProcessState.RUNNING:
                self.ready.set()
            else:
                self.ready.clear()
            self.sup.state_changed(self)

    def _event(self, kind: str, message: str, **data: Any) -> None:
        self._event_at(None, kind, message, **data)

    def _event_at(self, at_ms: int | None, kind: str, message: str, /, **data: Any) -> None:
        """An audit event stamped ``at_ms``: when its decision was taken (default now)."""
        self.sup.emit(
            Event(
                ts_ms=at_ms if at_ms is not None else now_ms(),
                kind=kind,
                subject=self.subject,
                message=message,
                data=data,
            )
        )

    def plan(self, reason: str, *, stopping: bool = False, tell: bool = True) -> None:
        """Mark the coming start (or stop) as asked for; ``tell`` the models now, or at the
        first moment they could see the server missing (blocked or launched, not adopted)."""
        self.window.plan(reason, stopping=stopping, tell=tell)

    def evidence(self) -> dict[str, Any]:
        """What an event or incident about this process carries: recent output and probes."""
        out: dict[str, Any] = {"log_tail": self.plog.tail(EVIDENCE_LOG_LINES)}
        if self.recent_runs:
            out["last_runs"] = [r.to_json() for r in self.recent_runs]
        return out

    # --- control from outside --------------------------------------------------------

    def request(
        self,
        kind: RequestKind,
        by: str,
        *,
        decided_ms: int | None = None,
        began_ms: int | None = None,
        evidence: Mapping[str, Any] | None = None,
        reason: str | None = None,
    ) -> None:
        """Ask the state machine to stop, start, restart, release, or heal a hang.

        Everything but a hang comes from an operator, and is planned from this moment, for
        ``reason`` (default ``"<kind> by <by>"``; a deploy says which deploy).
        """
        req = Request(
            RequestKind(kind), by, decided_ms, began_ms, MappingProxyType(dict(evidence or {}))
        )
        if req.planned:
            self.plan(reason or f"{req.kind} by {by}", stopping=req.kind == RequestKind.STOP)
        self._request = req
        self._wake.set()

    @property
    def pending(self) -> Request | None:
        """The request the state machine has not taken yet."""
        return self._request

    def wake(self) -> None:
        """Re-check the dependencies (one of them changed state)."""
        self._wake.set()

    def on_probe(self, run: ProbeRun) -> None:
        """A linked model's probe result: readiness while starting, hang detection after."""
        self.recent_runs.append(run)
        hard = not run.ok and run.category not in SOFT_FAILURES
        if self.state == ProcessState.STARTING:
            if not hard:
                self._wake.set()  # the gate re-checks readiness
            return
        if not hard:
            self.hard_failures = 0
            self.failing_since_ms = None
            return
        self.hard_failures += 1
        if self.failing_since_ms is None:
            self.failing_since_ms = run.ts_ms
        if self.state != ProcessState.RUNNING or self.sup.blockers(self):
            return  # a failing dependency explains it; restarting this one would not help
        limit = self.config.hang_after_failures
        if run.category == "stalled" or (limit and self.hard_failures >= limit):
            what = (
                "generation stalled"
                if run.category == "stalled"
                else f"{self.hard_failures} failed probes in a row"
            )
            self.request(
                RequestKind.HANG,
                f"hung: {what} ({run.model}: {run.error or run.category})",
                decided_ms=run.observed_ms,
                began_ms=self.failing_since_ms,
            )

    # --- the state machine -----------------------------------------------------------

    async def _wait(self, *futures: asyncio.Future[Any], within: float | None = None) -> None:
        """Until a request/wake, one of ``futures`` completes, or ``within`` seconds."""
        self._wake.clear()
        if self._request is not None:
            return
        waker = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({waker, *futures}, timeout=within, return_when="FIRST_COMPLETED")
        finally:
            waker.cancel()

    def _take_request(self) -> Request | None:
        req, self._request = self._request, None
        return req

    def record(self) -> ProcessRecord | None:
        """What the next agent needs to adopt this process."""
        h = self.handle
        if h is None or h.pid is None or h.exited.done() or self.config.kind != "command":
            return None
        return ProcessRecord(
            pid=h.pid,
            create_time=h.create_time,
            argv=tuple(self.config.command),
            restarts=self.restarts,
            saved_ms=now_ms(),
        )
