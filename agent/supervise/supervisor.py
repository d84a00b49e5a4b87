"""Keeps the ``[[process]]`` model servers running: the supervisor's orchestration.

Each process runs its own state machine (:mod:`agent.supervise.process`); the supervisor owns
them all: it applies config changes without touching unchanged processes, keeps the records
the next agent adopts from (:mod:`agent.supervise.adoption`), rotates their logs, routes probe
results and operator actions to them, and answers what involves several processes: which
dependencies block one, which incident is the root of another's trouble, the order to stop
them in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from agent.config import ProcessConfig
from agent.health.incidents import IncidentBook
from agent.supervise.adoption import RECORDS_FILE, ProcessRecord, read_records, write_records
from agent.supervise.core import ProcessCore
from agent.supervise.planned import PlannedWindow
from agent.supervise.process import OPERATOR_STATES, ManagedProcess
from agent.supervise.requests import OPERATOR_REQUESTS, RequestKind
from probes.base import now_ms
from storage.records import Event, ProbeRun, ProcessState, ProcessStatus

log = logging.getLogger("vigil.supervisor")

ROTATE_EVERY_S = 5.0
PROCESS_INCIDENTS = (
    "process_exited",
    "process_hung",
    "process_restart_failed",
    "process_quarantined",
    "process_blocked",
)
HEALTHY = frozenset({ProcessState.RUNNING})

# ManagedProcess, PlannedWindow and RECORDS_FILE are named here too: the supervisor's callers
# (the daemon, tests) see the room's supervision through this one module.
__all__ = [
    "RECORDS_FILE",
    "ActionError",
    "ManagedProcess",
    "PlannedWindow",
    "Supervisor",
]


class ActionError(Exception):
    """An operator action that does not apply (unknown process, wrong state)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class Supervisor:
    """All managed processes; applies config changes without touching unchanged ones."""

    def __init__(
        self,
        data_dir: Path,
        emit: Callable[[Event], None],
        book: IncidentBook | None = None,
        *,
        gpu_pids: Callable[[], set[int]] | None = None,
        probe_now: Callable[[list[str]], Awaitable[None]] | None = None,
        on_planned: Callable[[list[str], PlannedWindow], None] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self._on_planned = on_planned
        self.log_dir = data_dir / "logs"
        self.emit = emit
        self.book = book
        self.gpu_pids = gpu_pids
        self._probe_now = probe_now
        self.processes: dict[str, ManagedProcess] = {}
        self.links: dict[str, list[str]] = {}
        self._records = read_records(self.records_path)
        self._rotator: asyncio.Task[None] | None = None
        self.state_listeners: list[Callable[[ProcessCore], None]] = []
        """Called on every process state change, in order (a deploy waits on its restart)."""
        self.probes_elsewhere: set[str] = set()
        """Models whose probes go, for now, to a copy this supervisor does not run (a
        blue-green deploy's new copy during its bake): they tell nothing about their process
        (no readiness, no hang), which a restart then gates on its port instead."""

    # --- records (adoption across agent restarts) ------------------------------------

    @property
    def records_path(self) -> Path:
        """Where pids and start times are kept for the next agent."""
        return self.data_dir / RECORDS_FILE

    def save_records(self) -> None:
        """Write pids and start times atomically; a full disk is logged, never fatal."""
        records: dict[str, ProcessRecord] = {
            n: r for n, mp in self.processes.items() if (r := mp.record()) is not None
        }
        try:
            write_records(self.records_path, records)
        except OSError as exc:
            log.error("cannot save process records error=%r", str(exc))

    # --- config ----------------------------------------------------------------------

    async def apply(
        self,
        configs: tuple[ProcessConfig, ...],
        links: dict[str, list[str]] | None = None,
        *,
        reason: str = "config change",
    ) -> None:
        """Start new processes, stop removed ones, restart changed ones.

        Args:
            links: process name -> names of the models probing it (readiness and hangs).
            reason: why (``agent start``, ``config change``): the starts are planned.
        """
        self.links = dict(links or {})
        wanted = {c.name: c for c in configs}
        fresh: list[ManagedProcess] = []
        for name in list(self.processes):
            if name not in wanted:
                await self.processes.pop(name).stop("config change")
            elif wanted[name] != self.processes[name].config:
                # The replacement is in place (and its planned window open) before the old
                # one stops, so the models never see a gap that nobody planned.
                old = self.processes[name]
                mp = self.processes[name] = ManagedProcess(wanted[name], self)
                mp.plan(reason)
                fresh.append(mp)
                await old.stop("config change")
        for name, cfg in wanted.items():
            if name not in self.processes:
                mp = ManagedProcess(cfg, self)
                self.processes[name] = mp
                # Told lazily: an adopted process (an agent restart) was never down.
                mp.plan(reason, tell=False)
                fresh.append(mp)
        for mp in fresh:
            mp.start_task(self._records.pop(mp.config.name, None))
        if self._rotator is None:
            self._rotator = asyncio.create_task(self._rotate_logs(), name="log-rotation")

    async def hand_over(
        self, config: ProcessConfig, record: ProcessRecord, reason: str, timeout_s: float
    ) -> ManagedProcess | None:
        """Make process ``config.name`` the running process ``record`` names, with ``config``
        (a blue-green deploy's new copy, once the traffic is switched to it): a new state
        machine adopts it, as after an agent restart. The old state machine is detached, its
        process left running, and returned for the caller to drain and stop (None when
        there was none). Returns once the new one is adopted and running.

        Raises:
            ActionError: the process was not running within ``timeout_s``.
        """
        old = self.processes.get(config.name)
        if old is not None:
            await old.detach()
        mp = ManagedProcess(config, self)
        self.processes[config.name] = mp
        mp.plan(reason, tell=False)
        mp.start_task(record)
        try:
            await asyncio.wait_for(mp.ready.wait(), timeout_s)
        except TimeoutError:
            raise ActionError(
                f"{config.name}: the new copy (pid {record.pid}) was not adopted as running "
                f"within {timeout_s:g}s ({mp.state}: {mp.detail or 'no detail'})"
            ) from None
        # Not adopted (it had exited): the new state machine started the new version afresh
        # on the same port, which is where the traffic now goes. ``mp.adopted`` says which.
        log.info(
            "process handed over name=%s pid=%s adopted=%s reason=%r",
            config.name,
            mp.pid,
            mp.adopted,
            reason,
        )
        return old

    async def _rotate_logs(self) -> None:
        while True:
            await asyncio.sleep(ROTATE_EVERY_S)
            for mp in list(self.processes.values()):
                try:
                    await asyncio.to_thread(mp.plog.rotate_if_needed)
                except OSError as exc:  # a full disk must not stop the supervisor
                    log.error("log rotation failed name=%s error=%r", mp.config.name, str(exc))

    async def stop_all(self) -> None:
        """Stop every process (``on_exit = "stop"``), dependents first."""
        await self._stop_rotator()
        order = self._stop_order()
        for name in order:
            await self.processes[name].stop()
        self.save_records()

    async def detach_all(self) -> None:
        """Leave every process running for the next agent (``on_exit = "keep"``)."""
        await self._stop_rotator()
        for mp in self.processes.values():
            await mp.detach()
        self.save_records()
        kept = [n for n, mp in self.processes.items() if mp.pid is not None]
        if kept:
            log.info("leaving processes running for the next agent names=%s", ",".join(kept))

    async def _stop_rotator(self) -> None:
        if self._rotator is not None:
            self._rotator.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rotator
            self._rotator = None

    def _stop_order(self) -> list[str]:
        done: list[str] = []

        def visit(name: str) -> None:
            if name in done or name not in self.processes:
                return
            for other, mp in self.processes.items():
                if name in mp.config.depends_on:
                    visit(other)
            done.append(name)

        for name in self.processes:
            visit(name)
        return done

    # --- what processes ask of the supervisor ------------------------------------------

    def blockers(self, mp: ProcessCore) -> list[str]:
        """The dependencies of ``mp`` that are not running."""
        return [
            d
            for d in mp.config.depends_on
            if d in self.processes and self.processes[d].state not in HEALTHY
        ]

    def state_changed(self, mp: ProcessCore) -> None:
        """Wake the dependents of ``mp`` so they re-check their dependencies; tell the
        listeners."""
        for other in self.processes.values():
            if mp.config.name in other.config.depends_on:
                other.wake()
        for listener in list(self.state_listeners):
            try:
                listener(mp)
            except Exception:  # a listener's bug must not stop the process's state machine
                log.exception("state listener failed name=%s", mp.config.name)

    def linked_models(self, process: str) -> list[str]:
        """Names of the models whose probes tell about ``process``."""
        return [m for m in self.links.get(process, []) if m not in self.probes_elsewhere]

    def planned(self, mp: ProcessCore, window: PlannedWindow) -> None:
        """Tell the models of ``mp`` that a planned window opened or closed."""
        log.info(
            "planned window name=%s what=%s reason=%r", mp.config.name, window.what, window.reason
        )
        if self._on_planned is not None:
            self._on_planned(self.linked_models(mp.config.name), window)

    async def probe_now(self, models: list[str]) -> None:
        """Probe these models now (the startup gate)."""
        if self._probe_now is not None:
            await self._probe_now(models)

    def root_incident(self, names: list[str]) -> int | None:
        """The root incident behind these processes' trouble, following their own roots."""
        if self.book is None:
            return None
        for name in names:
            inc = self.book.current(f"process:{name}")
            if inc is not None:
                return inc.root_id or inc.id
        return None

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
        """Open an incident about ``mp``, at ``opened_ms`` (default now), the fault having
        begun at ``began_ms`` (default: when it was opened)."""
        if self.book is None:
            return
        if root_id is None:
            root_id = self.root_incident([d for d in mp.config.depends_on if d in self.processes])
        self.book.open(
            mp.subject,
            kind,
            severity=severity,
            cause=cause,
            evidence=evidence if evidence is not None else mp.evidence(),
            root_id=root_id,
            opened_ms=opened_ms,
            began_ms=began_ms,
        )

    def resolve_incidents(self, mp: ProcessCore, at_ms: int | None = None) -> None:
        """The process is healthy again: its incidents resolve with their time to recover."""
        if self.book is not None:
            self.book.resolve(mp.subject, kinds=PROCESS_INCIDENTS, resolved_ms=at_ms)

    def root_for_model(self, model: str) -> int | None:
        """For a model's incident: the incident of its process, or that process's root."""
        for proc, models in self.links.items():
            if model in models and proc in self.processes:
                names = [proc, *self.processes[proc].config.depends_on]
                return self.root_incident(names)
        return None

    # --- probes, actions, status ---------------------------------------------------------

    def on_probe(self, model: str, run: ProbeRun) -> None:
        """Route a model's probe result to the process it belongs to."""
        if model in self.probes_elsewhere:
            return
        for proc, models in self.links.items():
            if model in models and proc in self.processes:
                self.processes[proc].on_probe(run)

    def act(self, name: str, action: str, by: str, *, reason: str | None = None) -> ProcessStatus:
        """An operator action: ``start``, ``stop``, ``restart`` or ``release``; ``reason`` is
        what its planned window says (default ``"<action> by <by>"``).

        Raises:
            ActionError: unknown process (404) or an action that does not apply (409).
        """
        mp = self.processes.get(name)
        if mp is None:
            known = ", ".join(sorted(self.processes)) or "none"
            raise ActionError(f"no process named {name!r}; known: {known}", 404)
        if action not in OPERATOR_REQUESTS:
            raise ActionError(
                f"unknown action {action!r}; expected start, stop, restart or release", 400
            )
        kind = RequestKind(action)
        if kind == RequestKind.RELEASE and not mp.quarantined:
            raise ActionError(f"{name} is {mp.state}, not quarantined: nothing to release")
        if kind == RequestKind.START and mp.state not in OPERATOR_STATES:
            raise ActionError(f"{name} is {mp.state}: already started")
        self.emit(
            Event(
                ts_ms=now_ms(),
                kind="process.action",
                subject=mp.subject,
                message=f"{action} requested by {by}" + (f" ({reason})" if reason else ""),
                data={
                    "action": action,
                    "by": by,
                    "state": mp.state,
                    **({"reason": reason} if reason else {}),
                },
            )
        )
        mp.request(kind, by, reason=reason)
        return mp.status()

    def logs(self, name: str, lines: int) -> list[str]:
        """The last ``lines`` lines of a process's captured output."""
        mp = self.processes.get(name)
        if mp is None:
            raise ActionError(f"no process named {name!r}", 404)
        return mp.plog.tail(lines)

    def statuses(self) -> list[ProcessStatus]:
        """Records for the API."""
        return [mp.status() for mp in self.processes.values()]

    def pids(self) -> dict[str, int]:
        """name -> pid of the running processes (for the process collector)."""
        return {name: mp.pid for name, mp in self.processes.items() if mp.pid is not None}
