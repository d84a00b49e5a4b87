"""Keeps the ``[[process]]`` model servers running: starts, watches, heals, and says why.

One task per process runs a small state machine::

    blocked ──deps healthy──▶ starting ──ready──▶ running ──exit / hang──▶ backoff ─┐
       ▲                         │ timeout                                         │
       └─────────────────────────┴──────────── (loop) ◀──────────────────────────────┘
    quarantined / stopped / exited / failed: wait for an operator (start, release)

- **Exit detection** is immediate: the loop awaits the target's exit future (asyncio reaps our
  children; adopted processes are watched through a pidfd), no polling. Workers an exited
  process leaves in its process group are stopped before anything else. A systemd unit or a
  found process that its owner already brought back is adopted again, not restarted on top.
  ``restart = "never"`` retries neither an exit nor a launch that failed.
- **Backoff**: the first restart after a healthy period (``backoff_reset``) is immediate, the
  next ones wait ``backoff_initial`` times ``backoff_factor`` per further restart, capped at
  ``backoff_max``, stretched by up to ``backoff_jitter`` at random.
- **Crash-loop quarantine**: ``quarantine_after`` restarts within ``quarantine_window`` and the
  next exit quarantines the process (an incident; no more restarts until released).
- **Startup gate**: ``starting`` until a linked model's probe answers (the supervisor asks for
  probes right away rather than waiting for the schedule), a configured ``port`` accepts
  connections, or, with neither, at once; ``startup_timeout`` without that is a failed start.
- **Hang**: ``hang_after_failures`` hard probe failures in a row of a linked model, or one
  ``stalled`` run, restart the process: stop signal to its whole tree, SIGKILL after
  ``stop_timeout``, wait for the tree, its port and its GPU memory to be gone, start again.
- **Dependencies**: ``depends_on`` processes must be ``running`` first; until then the process is
  ``blocked`` (not restarted in a loop, no hang restarts), and its incident's root is the
  dependency's.
- **Agent restarts**: children run in their own session and survive the agent; their pid and
  start time are kept in ``supervisor.json`` in the data dir, and the next agent adopts them.
- **Planned starts**: a start the agent (its own start, a config change) or an operator (start,
  restart, release, stop) asked for is a *planned window* for the process's models, from the
  request until the startup gate opens; a start that misses the gate, or dies starting, ends the
  window as failed at that moment. Restarts after a crash or hang are never planned. The
  model monitors hear of each window (``on_planned``) and keep its failed probes out of
  incidents and availability.
- **Times** are those of the observations: an exit when it was seen, a hang when it was
  decided (the deciding probe's end), readiness when the good answer arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import ProcessConfig
from agent.health.incidents import IncidentBook
from agent.supervise.proclogs import ProcessLog
from agent.supervise.targets import (
    ExitInfo,
    Handle,
    LaunchError,
    Target,
    describe_exit,
    group_empty,
    leftovers,
    make_target,
    port_free,
    process_create_time,
)
from probes.base import now_ms
from storage.records import Event, ProbeRun, ProcessStatus

log = logging.getLogger("vigil.supervisor")

RECORDS_FILE = "supervisor.json"
EVIDENCE_LOG_LINES = 20
EVIDENCE_RUNS = 5
READY_POLL_S = 0.25
ROTATE_EVERY_S = 5.0
PROCESS_INCIDENTS = (
    "process_exited",
    "process_hung",
    "process_restart_failed",
    "process_quarantined",
    "process_blocked",
)
HEALTHY = frozenset({"running"})

__all__ = ["ManagedProcess", "PlannedWindow", "Supervisor", "describe_exit"]


@dataclass(frozen=True, slots=True)
class PlannedWindow:
    """A planned start or stop of a process, as its models hear of it.

    ``what`` is ``start`` or ``stop`` (the window opens), ``ready`` (it closed: the gate
    opened) or ``failed`` (it closed as an unplanned outage; ``reason`` says why).
    """

    what: str
    reason: str
    at_ms: int


class ActionError(Exception):
    """An operator action that does not apply (unknown process, wrong state)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class ManagedProcess:
    """One supervised process: its target, state machine and restart history."""

    def __init__(self, config: ProcessConfig, sup: Supervisor) -> None:
        self.config = config
        self.sup = sup
        self.plog = ProcessLog(sup.log_dir, config.name, config.log_max_bytes, config.log_keep)
        self.target: Target = make_target(config, self.plog)
        self.subject = f"process:{config.name}"
        self.state = "starting"
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
        self._restart_times: deque[float] = deque()
        self._streak = 0
        self._request: tuple[str, str, dict[str, Any]] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._record: dict[str, Any] | None = None
        self._found: Handle | None = None
        self.planned: str | None = None
        """Why the current start (or stop) is planned, until it is over."""
        self._planned_since_ms = now_ms()
        self._planned_told = False
        self.failing_since_ms: int | None = None
        self._ready_ms: int | None = None

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

    def _set_state(self, state: str, detail: str | None = None) -> None:
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
            if state == "running":
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

    # --- planned windows -------------------------------------------------------------

    def plan(self, reason: str, *, stopping: bool = False, tell: bool = True) -> None:
        """Mark the coming start (or stop) as asked for; ``tell`` the models now, or at the
        first moment they could see the server missing (blocked or launched, not adopted)."""
        self.planned = reason
        self._planned_since_ms = now_ms()
        self._planned_told = False
        if tell:
            self._tell_planned(stopping=stopping)

    def _tell_planned(self, *, stopping: bool = False) -> None:
        if self.planned is None or self._planned_told:
            return
        self._planned_told = True
        what = "stop" if stopping else "start"
        self.sup.planned(self, PlannedWindow(what, self.planned, self._planned_since_ms))

    def _end_planned(self, failed: str | None, at_ms: int) -> None:
        """The planned start is over: ready (``failed`` None) or failed at ``at_ms``."""
        if self.planned is None:
            return
        told, self.planned, self._planned_told = self._planned_told, None, False
        if told:
            what = "ready" if failed is None else "failed"
            self.sup.planned(self, PlannedWindow(what, failed or "", at_ms))

    def evidence(self) -> dict[str, Any]:
        """What an event or incident about this process carries: recent output and probes."""
        out: dict[str, Any] = {"log_tail": self.plog.tail(EVIDENCE_LOG_LINES)}
        if self.recent_runs:
            out["last_runs"] = [r.to_json() for r in self.recent_runs]
        return out

    # --- control from outside --------------------------------------------------------

    def start_task(self, record: dict[str, Any] | None) -> None:
        """Run the state machine (adopting ``record``'s process when it is still ours)."""
        self._record = record
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name=f"proc:{self.config.name}")

    def request(self, kind: str, by: str, **evidence: Any) -> None:
        """Ask the state machine to stop, start, restart, release, or heal a hang.

        Everything but a hang comes from an operator, and is planned from this moment.
        """
        if kind != "hang":
            self.plan(f"{kind} by {by}", stopping=kind == "stop")
        self._request = (kind, by, evidence)
        self._wake.set()

    def wake(self) -> None:
        """Re-check the dependencies (one of them changed state)."""
        self._wake.set()

    def on_probe(self, run: ProbeRun) -> None:
        """A linked model's probe result: readiness while starting, hang detection after."""
        self.recent_runs.append(run)
        hard = not run.ok and run.category not in ("slow", "wrong_output")
        if self.state == "starting":
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
        if self.state != "running" or self.sup.blockers(self):
            return  # a failing dependency explains it; restarting this one would not help
        limit = self.config.hang_after_failures
        if run.category == "stalled" or (limit and self.hard_failures >= limit):
            what = (
                "generation stalled"
                if run.category == "stalled"
                else f"{self.hard_failures} failed probes in a row"
            )
            self.request(
                "hang",
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

    def _take_request(self) -> tuple[str, str, dict[str, Any]] | None:
        req, self._request = self._request, None
        return req

    async def _loop(self) -> None:
        first = True
        while True:
            req = self._take_request()
            if req is not None:
                await self._idle_request(req)
            if self.want == "stop":
                if self.state not in ("exited", "failed"):
                    self._set_state("stopped", self.detail)
                await self._wait()
                continue
            if self.quarantined:
                self._set_state("quarantined", self.detail)
                await self._wait()
                continue
            blockers = self.sup.blockers(self)
            if blockers:
                self._blocked(blockers)
                await self._wait()
                continue
            handle = None
            if first or self._found is not None:
                first = False
                handle = await self._adopt()
            if handle is None:
                handle = await self._launch()
                if handle is None:
                    if self.config.restart == "never":
                        # "never" means no retries of a failed start either: a watch-only
                        # pidfile/match process (valid without a remediation) that is not
                        # running would otherwise loop on "no remediation" into quarantine.
                        self.want = "stop"
                        self._set_state("failed", self.last_exit)
                        continue
                    await self._after_failure(self.last_exit or "start failed", None)
                    continue
            await self._supervise(handle)

    async def _adopt(self) -> Handle | None:
        handle, self._found = self._found, None
        try:
            if handle is None:
                handle = await self.target.find(
                    self._record if self.target.adoptable_by_record else None
                )
        except Exception:  # adoption is an optimisation; a fresh start is always correct
            log.exception("adoption failed name=%s", self.config.name)
            return None
        if handle is None:
            await self._clear_stale_record()
            return None
        self.handle = handle
        self.adopted = True
        restarts = (self._record or {}).get("restarts")
        if isinstance(restarts, int):
            self.restarts = restarts  # the count survives the agent's restart with the process
        self._event(
            "process.adopted",
            f"adopted running pid {handle.pid} ({self.target.describe()})",
            pid=handle.pid,
            create_time=handle.create_time,
        )
        self.sup.save_records()
        return handle

    async def _clear_stale_record(self) -> None:
        """A recorded child that is not ours any more: make sure its group is gone."""
        rec = self._record
        self._record = None
        if not rec or not self.target.adoptable_by_record:
            return
        pid = rec.get("pid")
        if isinstance(pid, int):
            # Only when it is still the same process (start time): the pid may have been reused.
            created = process_create_time(pid)
            if created is not None and abs(created - float(rec.get("create_time") or 0)) < 0.05:
                self._event(
                    "process.stale_stopped",
                    f"stopping pid {pid} started under an older config",
                    pid=pid,
                )
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)

    async def _launch(self) -> Handle | None:
        self._tell_planned()
        self._set_state("starting", f"starting {self.target.describe()}")
        self.adopted = False
        try:
            handle = await self.target.launch()
        except LaunchError as exc:
            self.last_exit = f"start failed: {exc}"
            self._end_planned(f"could not start: {exc}", now_ms())
            log.error("process start failed name=%s error=%r", self.config.name, str(exc))
            self._event("process.spawn_failed", f"could not start: {exc}", **self.evidence())
            self.sup.open_incident(
                self,
                "process_restart_failed",
                "critical",
                f"could not start: {exc}",
            )
            return None
        self.handle = handle
        self._event(
            "process.started",
            f"started pid {handle.pid}",
            pid=handle.pid,
            argv=list(self.config.command),
            target=self.target.describe(),
        )
        self.sup.save_records()
        return handle

    async def _supervise(self, handle: Handle) -> None:
        """From started (or adopted) to the end of this incarnation."""
        self.hard_failures = 0
        if self.adopted:
            self._became_ready(now_ms())
        else:
            deadline_ms = now_ms() + int(self.config.startup_timeout_s * 1000)
            outcome = await self._startup_gate(handle)
            if outcome == "timeout":
                # Decided at the deadline: stamp it so, however long the stop takes.
                at = min(deadline_ms, now_ms())
                msg = f"not ready within {self.config.startup_timeout_s:g}s"
                self.sup.open_incident(
                    self, "process_restart_failed", "critical", msg, opened_ms=at
                )
                self._end_planned(msg, at)
                info = await self.target.terminate(handle, self.sup.gpu_pids)
                self.last_exit = msg
                self._event_at(at, "process.start_timeout", msg, **info, **self.evidence())
                await self._after_failure(msg, None)
                return
            if outcome == "exited":
                await self._exited(handle)
                return
            if outcome == "request":
                await self._running_request(handle)
                return
            self._became_ready(self._ready_ms if self._ready_ms is not None else now_ms())
        while True:
            await self._wait(handle.exited)
            if self._request is not None:
                await self._running_request(handle)
                return
            if handle.exited.done():
                await self._exited(handle)
                return

    async def _startup_gate(self, handle: Handle) -> str:
        """``ready``, ``timeout``, ``exited`` or ``request``."""
        cfg = self.config
        deadline = time.monotonic() + cfg.startup_timeout_s
        linked = self.sup.linked_models(cfg.name)
        while True:
            if self._request is not None:
                return "request"
            if handle.exited.done():
                return "exited"
            if not linked and cfg.port is None:
                return "ready"
            if linked and self._ready_run(handle):
                return "ready"
            if (
                not linked
                and cfg.port is not None
                and not await asyncio.to_thread(port_free, cfg.port)
            ):
                return "ready"
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            if linked:
                # Ask for probes now instead of waiting out the schedule: readiness is then
                # known within a probe's round trip of the server being up.
                t0 = time.monotonic()
                probe = asyncio.ensure_future(self.sup.probe_now(linked))
                await self._wait(handle.exited, probe, within=left)
                if not probe.done():
                    probe.cancel()
                    continue
                pause = READY_POLL_S - (time.monotonic() - t0)
                if pause > 0 and not self._ready_run(handle):
                    # A refused connection answers in microseconds: pace the retries.
                    await self._wait(handle.exited, within=min(pause, max(left, 0.0)))
            else:
                await self._wait(handle.exited, within=min(left, READY_POLL_S))

    def _ready_run(self, handle: Handle) -> bool:
        """Whether a probe that started after this incarnation got an answer (even a slow or
        wrong one: the server is up; judging the answer is the model monitor's job)."""
        started_ms = int(time.time() * 1000 - (time.monotonic() - handle.started_mono) * 1000)
        answered = [
            r.observed_ms
            for r in self.recent_runs
            if r.ts_ms >= started_ms and (r.ok or r.category in ("slow", "wrong_output"))
        ]
        self._ready_ms = min(answered) if answered else None
        return bool(answered)

    def _became_ready(self, at_ms: int) -> None:
        """Ready as of ``at_ms`` (when the answer that showed it arrived)."""
        self._end_planned(None, at_ms)
        self.failing_since_ms = None
        self._set_state("running", None)
        self.sup.resolve_incidents(self, at_ms)
        self._event(
            "process.ready",
            f"pid {self.pid} is {'adopted and ' if self.adopted else ''}running",
            pid=self.pid,
            adopted=self.adopted,
        )

    async def _exited(self, handle: Handle) -> None:
        at = now_ms()  # seen now: the exit future completes as the child is reaped
        info: ExitInfo = handle.exited.result()
        self._end_planned(info.description, at)
        uptime = time.monotonic() - handle.started_mono
        self.last_exit = info.description
        self.handle = None
        log.warning(
            "process exited name=%s pid=%s how=%r uptime_s=%.1f",
            self.config.name,
            handle.pid,
            info.description,
            uptime,
        )
        evidence = self.evidence()
        extra: dict[str, Any] = {}
        # Workers the process forked outlive it in its process group, holding its port and
        # GPU memory: a restart next to them fails ("address in use") or, worse, passes a
        # port-based startup gate on the old workers' socket; and nothing would ever stop
        # them. End them as the stop of a running process would (systemd's KillMode=
        # control-group does the same when a service's main process exits).
        left = set() if group_empty(handle) else await asyncio.to_thread(leftovers, handle)
        if left:
            log.warning(
                "process left workers behind name=%s pids=%s; stopping them",
                self.config.name,
                sorted(left),
            )
            extra["leftovers"] = sorted(left)
            extra["cleanup"] = await self.target.terminate(handle, self.sup.gpu_pids)
        self._event_at(
            at,
            "process.exited",
            f"{info.description} after {uptime:.1f}s",
            pid=handle.pid,
            returncode=info.returncode,
            uptime_s=round(uptime, 3),
            **extra,
            **evidence,
        )
        # After this turn of the loop: a restart forks first (a file write can take
        # milliseconds on a busy disk) and saves the new pid itself.
        asyncio.get_running_loop().call_soon(self.sup.save_records)
        if not self.target.adoptable_by_record:
            # Whoever runs a unit or a found process (systemd's Restart=, another supervisor)
            # may have brought it back already: watch the new incarnation instead of
            # restarting it again on top, or, after a clean exit, of no longer watching a
            # process that runs.
            with contextlib.suppress(Exception):  # a failed look is a normal restart
                self._found = await self.target.find(None)
            if self._found is not None:
                return
        cfg = self.config
        clean = info.returncode == 0
        if cfg.restart == "never" or (cfg.restart == "on-failure" and clean):
            self.want = "stop"
            self._set_state("exited" if clean else "failed", info.description)
            if not clean:
                self.sup.open_incident(
                    self,
                    "process_exited",
                    "critical",
                    f"{info.description}; restart is never",
                    opened_ms=at,
                )
            return
        self.sup.open_incident(self, "process_exited", "warning", info.description, opened_ms=at)
        await self._after_failure(info.description, uptime)

    async def _after_failure(self, reason: str, uptime: float | None) -> bool:
        """Back off, or quarantine; True when the loop should start the process again."""
        cfg = self.config
        now = time.monotonic()
        if uptime is not None and uptime >= cfg.backoff_reset_s:
            self._streak = 0
        window = cfg.quarantine_window_s
        while self._restart_times and now - self._restart_times[0] > window:
            self._restart_times.popleft()
        if cfg.quarantine_after and len(self._restart_times) >= cfg.quarantine_after:
            self.quarantined = True
            msg = (
                f"{len(self._restart_times)} restarts within {window:g}s; "
                f"last: {reason}. Release it to try again"
            )
            self._event("process.quarantined", msg, **self.evidence())
            self.sup.open_incident(self, "process_quarantined", "critical", msg)
            self._set_state("quarantined", msg)
            return False
        delay = self._next_delay()
        self._set_state("backoff", f"restart in {delay:.2f}s: {reason}")
        if delay > 0:
            await self._wait(within=delay)
            req = self._take_request()
            if req is not None:
                await self._idle_request(req)
                if self.want == "stop" or self.quarantined:
                    return False
        self._restart_times.append(time.monotonic())
        self.restarts += 1
        self.last_reason = reason
        self._event(
            "process.restarting",
            f"restart #{self.restarts} after {delay:.2f}s: {reason}",
            reason=reason,
            delay_s=round(delay, 3),
        )
        return True

    def _next_delay(self) -> float:
        cfg = self.config
        streak, self._streak = self._streak, self._streak + 1
        if streak == 0:
            return 0.0  # the first restart after a healthy run is immediate
        base = min(cfg.backoff_max_s, cfg.backoff_initial_s * cfg.backoff_factor ** (streak - 1))
        return base * (1 + random.uniform(0, cfg.backoff_jitter))  # noqa: S311 - not secrecy

    async def _idle_request(self, req: tuple[str, str, dict[str, Any]]) -> None:
        """A request while nothing runs (stopped, quarantined, blocked, backing off)."""
        kind, by, _ = req
        if kind == "stop":
            self.want = "stop"
            self._event("process.stopped", f"stopped by {by}", by=by)
            self._set_state("stopped", f"stopped by {by}")
        elif kind in ("start", "restart", "release"):
            if self.quarantined:
                self._event("process.released", f"released by {by}", by=by)
                self._restart_times.clear()
                self._streak = 0
            self.quarantined = False
            self.want = "run"

    async def _running_request(self, handle: Handle) -> None:
        req = self._take_request()
        assert req is not None
        kind, by, evidence = req
        if kind in ("start", "release"):
            # Nothing to do for a running process; go back to watching it.
            await self._supervise_again(handle)
            return
        self._set_state("stopping", f"{kind}: {by}")
        ev = self.evidence()
        info = await self.target.terminate(handle, self.sup.gpu_pids)
        exit_info = handle.exited.result() if handle.exited.done() else None
        self.last_exit = exit_info.description if exit_info else "stopped"
        self.handle = None
        self.sup.save_records()
        if kind == "stop":
            self.want = "stop"
            self._event("process.stopped", f"stopped by {by}", by=by, **info)
            self._set_state("stopped", f"stopped by {by}")
            return
        if kind == "hang":
            self.last_reason = by
            # Stamped when the hang was decided, not when the stop finished.
            decided = evidence.get("decided_ms")
            began = evidence.get("began_ms")
            self._event_at(decided, "process.hung", by, **info, **ev, **evidence)
            self.sup.open_incident(
                self,
                "process_hung",
                "critical",
                by,
                evidence={**ev, "failing_since_ms": began},
                opened_ms=decided,
                began_ms=began,
            )
            # Its uptime, as for an exit: a hang after a healthy period restarts at once
            # rather than after the backoff left from an earlier restart.
            await self._after_failure(by, time.monotonic() - handle.started_mono)
            return
        # An operator's restart: immediate, and not counted toward the crash loop.
        self.restarts += 1
        self.last_reason = f"restarted by {by}"
        self._event("process.restarting", f"restart #{self.restarts} by {by}", by=by, **info)

    async def _supervise_again(self, handle: Handle) -> None:
        while True:
            await self._wait(handle.exited)
            if self._request is not None:
                if self._request[0] in ("start", "release"):
                    self._request = None
                    continue
                await self._running_request(handle)
                return
            if handle.exited.done():
                await self._exited(handle)
                return

    def _blocked(self, blockers: list[str]) -> None:
        self._tell_planned()  # waiting for a dependency is part of a planned start
        root = self.sup.root_incident(blockers)
        detail = "waiting for " + ", ".join(blockers)
        if (self.state, self.detail) != ("blocked", detail):
            # Every other state change is in the audit trail; without this one, a process
            # that was never started (or not restarted) would have no recorded reason.
            self._event("process.blocked", detail, waiting_for=blockers, root_incident=root)
        self._set_state("blocked", detail)
        if root is not None:
            self.sup.open_incident(
                self, "process_blocked", "warning", f"blocked: {detail}", root_id=root
            )

    # --- shutdown --------------------------------------------------------------------

    async def stop(self, by: str = "agent") -> None:
        """Stop the process (whole tree) and the state machine."""
        await self.detach()
        handle = self.handle
        if handle is not None and not handle.exited.done():
            info = await self.target.terminate(handle, self.sup.gpu_pids)
            self._event("process.stopped", f"stopped by {by}", by=by, pid=handle.pid, **info)
        self.handle = None
        self._set_state("stopped", f"stopped by {by}")

    async def detach(self) -> None:
        """Stop watching without touching the process (the next agent adopts it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def record(self) -> dict[str, Any] | None:
        """What the next agent needs to adopt this process."""
        h = self.handle
        if h is None or h.pid is None or h.exited.done() or self.config.kind != "command":
            return None
        return {
            "pid": h.pid,
            "create_time": h.create_time,
            "argv": list(self.config.command),
            "restarts": self.restarts,
            "saved_ms": now_ms(),
        }


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
        self._records = self._load_records()
        self._rotator: asyncio.Task[None] | None = None

    # --- records (adoption across agent restarts) ------------------------------------

    @property
    def records_path(self) -> Path:
        """Where pids and start times are kept for the next agent."""
        return self.data_dir / RECORDS_FILE

    def _load_records(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.records_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def save_records(self) -> None:
        """Write pids and start times atomically; a full disk is logged, never fatal."""
        data = {n: r for n, mp in self.processes.items() if (r := mp.record()) is not None}
        tmp = self.records_path.with_suffix(".tmp")
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
            tmp.replace(self.records_path)
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

    def blockers(self, mp: ManagedProcess) -> list[str]:
        """The dependencies of ``mp`` that are not running."""
        return [
            d
            for d in mp.config.depends_on
            if d in self.processes and self.processes[d].state not in HEALTHY
        ]

    def state_changed(self, mp: ManagedProcess) -> None:
        """Wake the dependents of ``mp`` so they re-check their dependencies."""
        for other in self.processes.values():
            if mp.config.name in other.config.depends_on:
                other.wake()

    def linked_models(self, process: str) -> list[str]:
        """Names of the models whose probes tell about ``process``."""
        return self.links.get(process, [])

    def planned(self, mp: ManagedProcess, window: PlannedWindow) -> None:
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
        mp: ManagedProcess,
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

    def resolve_incidents(self, mp: ManagedProcess, at_ms: int | None = None) -> None:
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
        for proc, models in self.links.items():
            if model in models and proc in self.processes:
                self.processes[proc].on_probe(run)

    def act(self, name: str, action: str, by: str) -> ProcessStatus:
        """An operator action: ``start``, ``stop``, ``restart`` or ``release``.

        Raises:
            ActionError: unknown process (404) or an action that does not apply (409).
        """
        mp = self.processes.get(name)
        if mp is None:
            known = ", ".join(sorted(self.processes)) or "none"
            raise ActionError(f"no process named {name!r}; known: {known}", 404)
        if action not in ("start", "stop", "restart", "release"):
            raise ActionError(
                f"unknown action {action!r}; expected start, stop, restart or release", 400
            )
        if action == "release" and not mp.quarantined:
            raise ActionError(f"{name} is {mp.state}, not quarantined: nothing to release")
        if action == "start" and mp.state not in ("stopped", "exited", "failed", "quarantined"):
            raise ActionError(f"{name} is {mp.state}: already started")
        self.emit(
            Event(
                ts_ms=now_ms(),
                kind="process.action",
                subject=mp.subject,
                message=f"{action} requested by {by}",
                data={"action": action, "by": by, "state": mp.state},
            )
        )
        mp.request(action, by)
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
