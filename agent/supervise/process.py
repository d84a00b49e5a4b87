"""One supervised process: its state machine, from start to exit and back.

One task per process runs it::

    blocked ──deps healthy──▶ starting ──ready──▶ running ──exit / hang──▶ backoff ─┐
       ▲                         │ timeout                                         │
       └─────────────────────────┴──────────── (loop) ◀──────────────────────────────┘
    quarantined / stopped / exited / failed: wait for an operator (start, release)

- **Exit detection** is immediate: the loop awaits the target's exit future (asyncio reaps our
  children; adopted processes are watched through a pidfd), no polling. Workers an exited
  process leaves in its process group are stopped before anything else. A systemd unit or a
  found process that its owner already brought back is adopted again, not restarted on top.
  ``restart = "never"`` retries neither an exit nor a launch that failed.
- **Backoff and crash-loop quarantine**: :mod:`agent.supervise.backoff`.
- **Startup gate**: :mod:`agent.supervise.gate`.
- **Hang**: ``hang_after_failures`` hard probe failures in a row of a linked model, or one
  ``stalled`` run, restart the process: stop signal to its whole tree, SIGKILL after
  ``stop_timeout``, wait for the tree, its port and its GPU memory to be gone, start again.
- **Dependencies**: ``depends_on`` processes must be ``running`` first; until then the process is
  ``blocked`` (not restarted in a loop, no hang restarts), and its incident's root is the
  dependency's.
- **Agent restarts**: children run in their own session and survive the agent; the next agent
  adopts them (:mod:`agent.supervise.adoption`).
- **Planned starts** (:mod:`agent.supervise.planned`): a start the agent (its own start, a config
  change) or an operator (start, restart, release, stop) asked for is a planned window for the
  process's models, from the request until the startup gate opens; a start that misses the
  gate, or dies starting, ends the window as failed at that moment. Restarts after a crash or
  hang are never planned.
- **Times** are those of the observations: an exit when it was seen, a hang when it was
  decided (the deciding probe's end), readiness when the good answer arrived.

The process's state, status and inputs are :class:`~agent.supervise.core.ProcessCore`'s; it
asks its supervisor (an :class:`~agent.supervise.core.Overseer`) for what involves the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from typing import Any

from agent.supervise.adoption import ProcessRecord
from agent.supervise.core import ProcessCore
from agent.supervise.gate import GateOutcome, StartupGate
from agent.supervise.requests import Request, RequestKind
from agent.supervise.targets import LaunchError
from agent.supervise.tree import (
    ExitInfo,
    Handle,
    group_empty,
    leftovers,
    process_create_time,
)
from probes.base import now_ms
from storage.records import ProcessState

log = logging.getLogger("vigil.supervisor")

OPERATOR_STATES = frozenset(
    {ProcessState.STOPPED, ProcessState.EXITED, ProcessState.FAILED, ProcessState.QUARANTINED}
)
"""States that wait for an operator: only they can be started."""

__all__ = ["OPERATOR_STATES", "ManagedProcess"]


class ManagedProcess(ProcessCore):
    """One supervised process: its target, state machine and restart history."""

    def start_task(self, record: ProcessRecord | None) -> None:
        """Run the state machine (adopting ``record``'s process when it is still ours)."""
        self._record = record
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name=f"proc:{self.config.name}")

    # --- the state machine -----------------------------------------------------------

    async def _loop(self) -> None:
        first = True
        while True:
            req = self._take_request()
            if req is not None:
                self._idle_request(req)
            if self.want == "stop":
                if self.state not in (ProcessState.EXITED, ProcessState.FAILED):
                    self._set_state(ProcessState.STOPPED, self.detail)
                await self._wait()
                continue
            if self.quarantined:
                self._set_state(ProcessState.QUARANTINED, self.detail)
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
                        self._set_state(ProcessState.FAILED, self.last_exit)
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
        if self._record is not None and self._record.restarts is not None:
            # The count survives the agent's restart with the process.
            self.restarts = self._record.restarts
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
        if rec is None or not self.target.adoptable_by_record:
            return
        pid = rec.pid
        # Only when it is still the same process (start time): the pid may have been reused.
        created = process_create_time(pid)
        if created is not None and abs(created - (rec.create_time or 0.0)) < 0.05:
            self._event(
                "process.stale_stopped",
                f"stopping pid {pid} started under an older config",
                pid=pid,
            )
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)

    async def _launch(self) -> Handle | None:
        self.window.tell()
        self._set_state(ProcessState.STARTING, f"starting {self.target.describe()}")
        self.adopted = False
        try:
            handle = await self.target.launch()
        except LaunchError as exc:
            self.last_exit = f"start failed: {exc}"
            self.window.end(f"could not start: {exc}", now_ms())
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
            gate = StartupGate(
                self.config,
                self.sup.linked_models(self.config.name),
                runs=self.recent_runs,
                probe_now=self.sup.probe_now,
                wait=self._wait,
                interrupted=lambda: self._request is not None,
            )
            outcome = await gate.run(handle)
            if outcome == GateOutcome.TIMEOUT:
                await self._start_timed_out(handle, min(deadline_ms, now_ms()))
                return
            if outcome == GateOutcome.EXITED:
                await self._exited(handle)
                return
            if outcome == GateOutcome.REQUEST:
                await self._running_request(handle)
                return
            self._became_ready(gate.ready_ms if gate.ready_ms is not None else now_ms())
        await self._watch(handle)

    async def _watch(self, handle: Handle, *, running: bool = False) -> None:
        """Until the running process exits or is asked to stop (``running``: a start or a
        release asked of it is nothing to do)."""
        while True:
            await self._wait(handle.exited)
            if self._request is not None:
                if running and self._request.kind in (RequestKind.START, RequestKind.RELEASE):
                    self._request = None
                    continue
                await self._running_request(handle)
                return
            if handle.exited.done():
                await self._exited(handle)
                return

    async def _start_timed_out(self, handle: Handle, at: int) -> None:
        """Not ready by the deadline ``at``: stamped so, however long the stop takes."""
        msg = f"not ready within {self.config.startup_timeout_s:g}s"
        self.sup.open_incident(self, "process_restart_failed", "critical", msg, opened_ms=at)
        self.window.end(msg, at)
        info = await self.target.terminate(handle, self.sup.gpu_pids)
        self.last_exit = msg
        self._event_at(at, "process.start_timeout", msg, **info, **self.evidence())
        await self._after_failure(msg, None)

    def _became_ready(self, at_ms: int) -> None:
        """Ready as of ``at_ms`` (when the answer that showed it arrived)."""
        self.window.end(None, at_ms)
        self.failing_since_ms = None
        self._set_state(ProcessState.RUNNING, None)
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
        self.window.end(info.description, at)
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
        extra = await self._end_leftovers(handle)
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
            self._set_state(ProcessState.EXITED if clean else ProcessState.FAILED, info.description)
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

    async def _end_leftovers(self, handle: Handle) -> dict[str, Any]:
        """Stop the workers an exited process left in its group; what happened, for the event.

        They would hold its port and GPU memory: a restart next to them fails ("address in
        use") or, worse, passes a port-based startup gate on the old workers' socket; and
        nothing would ever stop them. Ended as the stop of a running process would be
        (systemd's KillMode=control-group does the same when a service's main process exits).
        """
        left = set() if group_empty(handle) else await asyncio.to_thread(leftovers, handle)
        if not left:
            return {}
        log.warning(
            "process left workers behind name=%s pids=%s; stopping them",
            self.config.name,
            sorted(left),
        )
        cleanup = await self.target.terminate(handle, self.sup.gpu_pids)
        return {"leftovers": sorted(left), "cleanup": cleanup}

    async def _after_failure(self, reason: str, uptime: float | None) -> None:
        """Quarantine, or back off and count the restart the loop then makes."""
        self.history.ran_for(uptime)
        count = self.history.crash_loop(time.monotonic())
        if count is not None:
            self.quarantined = True
            msg = (
                f"{count} restarts within {self.config.quarantine_window_s:g}s; "
                f"last: {reason}. Release it to try again"
            )
            self._event("process.quarantined", msg, **self.evidence())
            self.sup.open_incident(self, "process_quarantined", "critical", msg)
            self._set_state(ProcessState.QUARANTINED, msg)
            return
        delay = self.history.next_delay()
        self._set_state(ProcessState.BACKOFF, f"restart in {delay:.2f}s: {reason}")
        if delay > 0:
            await self._wait(within=delay)
            req = self._take_request()
            if req is not None:
                self._idle_request(req)
                if self.want == "stop" or self.quarantined:
                    return
        self.history.restarted(time.monotonic())
        self.restarts += 1
        self.last_reason = reason
        self._event(
            "process.restarting",
            f"restart #{self.restarts} after {delay:.2f}s: {reason}",
            reason=reason,
            delay_s=round(delay, 3),
        )

    def _idle_request(self, req: Request) -> None:
        """A request while nothing runs (stopped, quarantined, blocked, backing off)."""
        by = req.by
        if req.kind == RequestKind.STOP:
            self.want = "stop"
            self._event("process.stopped", f"stopped by {by}", by=by)
            self._set_state(ProcessState.STOPPED, f"stopped by {by}")
        elif req.kind in (RequestKind.START, RequestKind.RESTART, RequestKind.RELEASE):
            if self.quarantined:
                self._event("process.released", f"released by {by}", by=by)
                self.history.clear()
            self.quarantined = False
            self.want = "run"

    async def _running_request(self, handle: Handle) -> None:
        req = self._take_request()
        assert req is not None
        kind, by = req.kind, req.by
        if kind in (RequestKind.START, RequestKind.RELEASE):
            # Nothing to do for a running process; go back to watching it.
            await self._watch(handle, running=True)
            return
        self._set_state(ProcessState.STOPPING, f"{kind}: {by}")
        ev = self.evidence()
        info = await self.target.terminate(handle, self.sup.gpu_pids)
        exit_info = handle.exited.result() if handle.exited.done() else None
        self.last_exit = exit_info.description if exit_info else "stopped"
        self.handle = None
        self.sup.save_records()
        if kind == RequestKind.STOP:
            self.want = "stop"
            self._event("process.stopped", f"stopped by {by}", by=by, **info)
            self._set_state(ProcessState.STOPPED, f"stopped by {by}")
            return
        if kind == RequestKind.HANG:
            await self._hung(handle, req, info, ev)
            return
        # An operator's restart: immediate, and not counted toward the crash loop.
        self.restarts += 1
        self.last_reason = f"restarted by {by}"
        self._event("process.restarting", f"restart #{self.restarts} by {by}", by=by, **info)

    async def _hung(
        self, handle: Handle, req: Request, info: dict[str, object], ev: dict[str, Any]
    ) -> None:
        """The hung process was stopped (``info``); ``ev`` is the evidence from before."""
        by, decided, began = req.by, req.decided_ms, req.began_ms
        self.last_reason = by
        # Stamped when the hang was decided, not when the stop finished.
        when = {"decided_ms": decided, "began_ms": began}
        self._event_at(decided, "process.hung", by, **info, **ev, **when, **req.evidence)
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

    def _blocked(self, blockers: list[str]) -> None:
        self.window.tell()  # waiting for a dependency is part of a planned start
        root = self.sup.root_incident(blockers)
        detail = "waiting for " + ", ".join(blockers)
        if (self.state, self.detail) != (ProcessState.BLOCKED, detail):
            # Every other state change is in the audit trail; without this one, a process
            # that was never started (or not restarted) would have no recorded reason.
            self._event("process.blocked", detail, waiting_for=blockers, root_incident=root)
        self._set_state(ProcessState.BLOCKED, detail)
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
        self._set_state(ProcessState.STOPPED, f"stopped by {by}")

    async def detach(self) -> None:
        """Stop watching without touching the process (the next agent adopts it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
