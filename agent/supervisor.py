"""Starts the ``[[process]]`` model servers, watches them, restarts them by policy.

Each child runs in its own session (its own process group), so stopping it reaches the workers
it forked, and a signal aimed at the agent's terminal does not reach it. A child's exit is seen
the moment it happens: a task awaits ``Process.wait()`` for each child, there is no polling loop.

Restarts back off exponentially (``backoff_initial`` doubling up to ``backoff_max``); the delay
resets once a process has stayed up for :data:`HEALTHY_RESET_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from agent.config import ProcessConfig
from storage.records import Event, ProcessStatus

log = logging.getLogger("vigil.supervisor")

HEALTHY_RESET_S = 600.0


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def describe_exit(returncode: int) -> str:
    """``exit 3`` or ``signal SIGKILL`` from a returncode (negative means killed by signal)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


class ManagedProcess:
    """One supervised child and its restart state."""

    def __init__(self, config: ProcessConfig, log_dir: Path, emit: Callable[[Event], None]) -> None:
        self.config = config
        self.log_dir = log_dir
        self.emit = emit
        self.state = "stopped"
        self.since_ms = _now_ms()
        self.proc: asyncio.subprocess.Process | None = None
        self.restarts = 0
        self.last_exit: str | None = None
        self.started_at = 0.0
        self.backoff_s = config.backoff_initial_s
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        """The running child's pid, if any."""
        return self.proc.pid if self.proc is not None and self.proc.returncode is None else None

    def status(self) -> ProcessStatus:
        """The record the API serves."""
        return ProcessStatus(
            name=self.config.name,
            state=self.state,
            since_ms=self.since_ms,
            pid=self.pid,
            restarts=self.restarts,
            last_exit=self.last_exit,
            argv=self.config.command,
        )

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.since_ms = _now_ms()

    def _event(self, kind: str, message: str, **data: object) -> None:
        self.emit(
            Event(
                ts_ms=_now_ms(),
                kind=kind,
                subject=f"process:{self.config.name}",
                message=message,
                data=data,
            )
        )

    def start(self) -> None:
        """Start the watch loop (spawn, wait, restart by policy) as a task."""
        self._stopping = False
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name=f"proc:{self.config.name}")

    async def _spawn(self) -> bool:
        cfg = self.config
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **cfg.env}
        try:
            # Opening an append-mode file is a local, non-blocking-in-practice syscall; the
            # child inherits the descriptor and we close our copy right after the spawn.
            out = open(self.log_dir / f"{cfg.name}.log", "ab")  # noqa: ASYNC230, SIM115
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *cfg.command,
                    cwd=cfg.cwd,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                )
            finally:
                out.close()
        except OSError as exc:
            self.last_exit = f"spawn failed: {exc.strerror or exc}"
            log.error("process spawn failed name=%s error=%r", cfg.name, str(exc))
            self._event("process.spawn_failed", f"could not start: {exc}", argv=list(cfg.command))
            return False
        self.started_at = time.monotonic()
        self._set_state("running")
        log.info("process started name=%s pid=%d", cfg.name, self.proc.pid)
        self._event(
            "process.started",
            f"started pid {self.proc.pid}",
            pid=self.proc.pid,
            argv=list(cfg.command),
        )
        return True

    async def _loop(self) -> None:
        cfg = self.config
        while not self._stopping:
            self._set_state("starting")
            if await self._spawn():
                assert self.proc is not None
                code = await self.proc.wait()
                if self._stopping:
                    break
                self.last_exit = describe_exit(code)
                uptime = time.monotonic() - self.started_at
                log.warning(
                    "process exited name=%s pid=%d how=%r uptime_s=%.1f",
                    cfg.name,
                    self.proc.pid,
                    self.last_exit,
                    uptime,
                )
                self._event(
                    "process.exited",
                    f"{self.last_exit} after {uptime:.1f}s",
                    pid=self.proc.pid,
                    returncode=code,
                    uptime_s=round(uptime, 3),
                )
                if uptime >= HEALTHY_RESET_S:
                    self.backoff_s = cfg.backoff_initial_s
                if cfg.restart == "never" or (cfg.restart == "on-failure" and code == 0):
                    self._set_state("exited" if code == 0 else "failed")
                    return
            elif cfg.restart == "never":
                self._set_state("failed")
                return
            self._set_state("backoff")
            delay = self.backoff_s
            self.backoff_s = min(cfg.backoff_max_s, self.backoff_s * 2)
            await asyncio.sleep(delay)
            if self._stopping:
                break
            self.restarts += 1
            self._event(
                "process.restarting",
                f"restart #{self.restarts} after {delay:.1f}s",
                reason=self.last_exit,
                delay_s=delay,
            )

    async def stop(self) -> None:
        """Stop the child: its stop signal to the whole group, SIGKILL after the timeout."""
        self._stopping = True
        proc = self.proc
        if proc is not None and proc.returncode is None:
            sig = getattr(signal, self.config.stop_signal, signal.SIGTERM)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(proc.wait(), self.config.stop_timeout_s)
            except TimeoutError:
                log.warning(
                    "process ignored stop signal name=%s pid=%d; killing",
                    self.config.name,
                    proc.pid,
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
            self._event(
                "process.stopped", f"stopped ({describe_exit(proc.returncode or 0)})", pid=proc.pid
            )
        # Workers that outlived their parent keep the group alive: finish them too.
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set_state("stopped")


class Supervisor:
    """All managed processes; applies config changes without touching unchanged ones."""

    def __init__(self, log_dir: Path, emit: Callable[[Event], None]) -> None:
        self.log_dir = log_dir
        self.emit = emit
        self.processes: dict[str, ManagedProcess] = {}

    async def apply(self, configs: tuple[ProcessConfig, ...]) -> None:
        """Start new processes, stop removed ones, restart changed ones."""
        wanted = {c.name: c for c in configs}
        for name in list(self.processes):
            if name not in wanted or wanted[name] != self.processes[name].config:
                await self.processes.pop(name).stop()
        for name, cfg in wanted.items():
            if name not in self.processes:
                mp = ManagedProcess(cfg, self.log_dir, self.emit)
                self.processes[name] = mp
                mp.start()

    async def stop_all(self) -> None:
        """Stop every process (on agent shutdown), concurrently."""
        await asyncio.gather(*(mp.stop() for mp in self.processes.values()))

    def statuses(self) -> list[ProcessStatus]:
        """Records for the API."""
        return [mp.status() for mp in self.processes.values()]

    def pids(self) -> dict[str, int]:
        """name -> pid of the running children (for the process collector)."""
        return {name: mp.pid for name, mp in self.processes.items() if mp.pid is not None}
