"""What the supervisor acts on: its own child, a systemd unit, or a process found by pidfile or
by its command line.

Every target answers the same four questions, so the managed process's state machine
(``agent.supervise.process``) is written once: *is it already running?* (:meth:`Target.find`),
*start it* (:meth:`Target.launch`), *stop it, whole tree* (:meth:`Target.terminate`), and,
through the :class:`~agent.supervise.tree.Handle` both return, *tell me the moment it exits*
(``Handle.exited``).

Exit detection never polls for our own children (asyncio reaps them, the kernel wakes us) nor
for adopted processes (a pidfd becomes readable when its process exits, Linux >= 5.3). Only a
systemd unit is polled, through ``systemctl show``, because systemd offers its state changes to
us only over D-Bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import re
import signal
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil

from agent.config import ProcessConfig
from agent.supervise.adoption import ProcessRecord
from agent.supervise.childenv import child_environ
from agent.supervise.proclogs import ProcessLog
from agent.supervise.tree import (
    ExitInfo,
    Handle,
    alive,
    describe_exit,
    process_create_time,
    terminate_tree,
    watch_pidfd,
)
from storage import private

__all__ = [
    "CommandTarget",
    "FoundTarget",
    "LaunchError",
    "SystemdTarget",
    "Target",
    "make_target",
    "run_command",
]

log = logging.getLogger("vigil.supervisor")


class LaunchError(Exception):
    """The target could not be started; the message says why."""


class Target:
    """How to find, start and stop one ``[[process]]``."""

    adoptable_by_record = False
    """Whether the agent's own records (pid + start time) say what to adopt: true for
    children the agent started; other targets are found afresh."""

    def __init__(self, config: ProcessConfig, plog: ProcessLog) -> None:
        self.config = config
        self.log = plog

    async def find(self, record: ProcessRecord | None) -> Handle | None:
        """The running incarnation, if there is one to adopt."""
        raise NotImplementedError

    async def launch(self) -> Handle:
        """Start it; raises LaunchError."""
        raise NotImplementedError

    async def terminate(
        self, handle: Handle, gpu_pids: Callable[[], set[int]] | None
    ) -> dict[str, object]:
        """Stop it and its tree."""
        return await terminate_tree(
            handle,
            getattr(signal, self.config.stop_signal),
            self.config.stop_timeout_s,
            port=self.config.port,
            gpu_pids=gpu_pids,
        )

    def describe(self) -> str:
        """What the target is, for status and events."""
        return " ".join(self.config.command)


class CommandTarget(Target):
    """A child the agent starts itself, in its own session, output into its log file."""

    adoptable_by_record = True

    async def find(self, record: ProcessRecord | None) -> Handle | None:
        if record is None or record.create_time is None:
            return None
        pid = record.pid
        actual = process_create_time(pid)
        # The start time guards against pid reuse: a different process with the same pid
        # after a reboot or a long outage is not ours.
        if actual is None or abs(actual - record.create_time) > 0.05:
            return None
        if record.argv != tuple(self.config.command):
            return None  # the config changed while the agent was away: not this incarnation
        with contextlib.suppress(psutil.Error):
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return None
        return Handle(
            pid=pid,
            exited=watch_pidfd(pid),
            create_time=actual,
            adopted=True,
            pgid=pid if _pgid(pid) == pid else None,
        )

    async def launch(self) -> Handle:
        cfg = self.config
        env = child_environ(cfg.env)
        user_kw: dict[str, object] = {}
        if cfg.user is not None:
            entry = pwd.getpwnam(cfg.user)
            if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
                raise LaunchError(f"cannot run as user {cfg.user!r}: the agent is not root")
            user_kw = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
            env.update(HOME=entry.pw_dir, USER=cfg.user, LOGNAME=cfg.user)
        if self.log.over_size():
            # Only a rotation itself (a copy of up to log_max_bytes) is worth a thread; the
            # stat() that says whether one is due is not, on the way to a restart.
            await asyncio.to_thread(self.log.rotate_if_needed)
        out = self.log.open_for_child()
        try:
            proc = await asyncio.create_subprocess_exec(
                *cfg.command,
                cwd=cfg.cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                umask=private.child_umask(),
                **user_kw,  # type: ignore[arg-type]
            )
        except (OSError, ValueError) as exc:
            raise LaunchError(f"could not start {cfg.command[0]!r}: {exc}") from None
        finally:
            os.close(out)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ExitInfo] = loop.create_future()

        async def reap() -> None:
            code = await proc.wait()
            if not fut.done():
                fut.set_result(ExitInfo(code, describe_exit(code)))

        # The event loop keeps only weak references to tasks: hold this one until it is done.
        task = asyncio.create_task(reap(), name=f"reap:{cfg.name}")
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        return Handle(
            pid=proc.pid,
            exited=fut,
            create_time=process_create_time(proc.pid),
            pgid=proc.pid,
            proc=proc,
        )


_TASKS: set[asyncio.Task[None]] = set()


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


class FoundTarget(Target):
    """A process someone else starts, found by its pidfile or by a regex on its command line.

    It is not ours to start: :meth:`launch` runs the configured ``remediation`` command and
    then waits for the process to appear.
    """

    async def find(self, record: ProcessRecord | None) -> Handle | None:
        pid = await asyncio.to_thread(self._lookup)
        if pid is None:
            return None
        return Handle(
            pid=pid,
            exited=watch_pidfd(pid),
            create_time=process_create_time(pid),
            adopted=True,
        )

    def _lookup(self) -> int | None:
        cfg = self.config
        if cfg.pidfile is not None:
            try:
                pid = int(cfg.pidfile.read_text().strip())
            except (OSError, ValueError):
                return None
            return pid if alive([pid]) else None
        assert cfg.match is not None
        pattern = re.compile(cfg.match)
        me = os.getpid()
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            info = p.info
            if info["pid"] == me or info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmdline = " ".join(info["cmdline"] or [])
            if cmdline and pattern.search(cmdline):
                return int(info["pid"])
        return None

    async def launch(self) -> Handle:
        cfg = self.config
        if not cfg.remediation:
            # Watch only (restart = "never"): an operator's start adopts the process if
            # someone has started it again since.
            handle = await self.find(None)
            if handle is not None:
                return handle
            raise LaunchError(f"not running ({self.describe()}) and no remediation configured")
        await run_command(cfg.remediation, self.log, cfg.startup_timeout_s, cfg.env, cfg.cwd)
        end = time.monotonic() + cfg.startup_timeout_s
        while time.monotonic() < end:
            handle = await self.find(None)
            if handle is not None:
                return handle
            await asyncio.sleep(0.1)
        raise LaunchError(
            f"remediation ran, but no process appeared within {cfg.startup_timeout_s:g}s"
        )

    def describe(self) -> str:
        cfg = self.config
        return f"pidfile {cfg.pidfile}" if cfg.pidfile else f"match {cfg.match!r}"


async def run_command(
    argv: tuple[str, ...],
    plog: ProcessLog,
    timeout_s: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Run a remediation or systemctl command, its output into the process log; return stdout.

    Raises:
        LaunchError: it could not run, timed out, or exited non-zero (with its output).
    """
    plog.append(f"[vigil] running: {' '.join(argv)}")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=child_environ(env),
            cwd=cwd,
            umask=private.child_umask(),
        )
    except OSError as exc:
        raise LaunchError(f"could not run {argv[0]!r}: {exc.strerror or exc}") from None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise LaunchError(f"{argv[0]} did not finish within {timeout_s:g}s") from None
    text = out.decode("utf-8", errors="replace")
    if text.strip():
        plog.append(text)
    if proc.returncode != 0:
        last = text.strip().splitlines()[-1:] or [""]
        raise LaunchError(f"{' '.join(argv)} failed ({describe_exit(proc.returncode)}): {last[0]}")
    return text


SYSTEMCTL = "systemctl"


class SystemdTarget(Target):
    """A systemd unit: systemd runs it, the agent watches ``systemctl show`` and restarts it
    with ``systemctl restart``."""

    async def show(self) -> dict[str, str]:
        """The unit's properties the supervisor reads."""
        cfg = self.config
        assert cfg.systemd_unit is not None
        text = await run_command(
            (
                SYSTEMCTL,
                "show",
                cfg.systemd_unit,
                "--property=ActiveState,SubState,MainPID,ExecMainStatus,NRestarts",
            ),
            _NullLog(),
            30.0,
        )
        props = {}
        for line in text.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                props[key.strip()] = value.strip()
        return props

    async def find(self, record: ProcessRecord | None) -> Handle | None:
        try:
            props = await self.show()
        except LaunchError as exc:
            log.warning(
                "systemctl show failed unit=%s error=%r", self.config.systemd_unit, str(exc)
            )
            return None
        if props.get("ActiveState") not in ("active", "activating", "reloading"):
            return None
        pid = int(props.get("MainPID") or 0) or None
        fut = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._watch(pid, fut), name=f"systemd:{self.config.name}")
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        fut.add_done_callback(lambda _f: task.cancel())
        return Handle(pid=pid, exited=fut, create_time=None, adopted=True)

    async def _watch(self, pid: int | None, fut: asyncio.Future[ExitInfo]) -> None:
        while not fut.done():
            await asyncio.sleep(self.config.poll_interval_s)
            try:
                props = await self.show()
            except LaunchError:
                continue  # systemctl itself failing says nothing about the unit
            state = props.get("ActiveState")
            now_pid = int(props.get("MainPID") or 0) or None
            if state in ("active", "activating", "reloading") and now_pid == pid:
                continue
            status = props.get("ExecMainStatus")
            code = int(status) if status and status.lstrip("-").isdigit() else None
            how = f"unit {state}/{props.get('SubState')}"
            if now_pid != pid and state == "active":
                how = f"main pid changed {pid} -> {now_pid} (restarted by systemd)"
            if not fut.done():
                fut.set_result(ExitInfo(code, how))

    async def launch(self) -> Handle:
        cfg = self.config
        assert cfg.systemd_unit is not None
        await run_command((SYSTEMCTL, "restart", cfg.systemd_unit), self.log, cfg.startup_timeout_s)
        end = time.monotonic() + cfg.startup_timeout_s
        while time.monotonic() < end:
            handle = await self.find(None)
            if handle is not None:
                return handle
            await asyncio.sleep(min(cfg.poll_interval_s, 0.5))
        raise LaunchError(
            f"{cfg.systemd_unit} is not active {cfg.startup_timeout_s:g}s after restart"
        )

    async def terminate(
        self, handle: Handle, gpu_pids: Callable[[], set[int]] | None
    ) -> dict[str, object]:
        cfg = self.config
        assert cfg.systemd_unit is not None
        t0 = time.monotonic()
        await run_command((SYSTEMCTL, "stop", cfg.systemd_unit), self.log, cfg.stop_timeout_s + 5)
        if not handle.exited.done():
            handle.exited.set_result(ExitInfo(None, "stopped with systemctl stop"))
        return {"systemctl": "stop", "stop_ms": round((time.monotonic() - t0) * 1000, 1)}

    def describe(self) -> str:
        return f"systemd unit {self.config.systemd_unit}"


class _NullLog(ProcessLog):
    """``systemctl show`` output is read, not logged."""

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"), "null", 1, 0)

    def append(self, text: str) -> None:
        return None


def make_target(config: ProcessConfig, plog: ProcessLog) -> Target:
    """The target for a process's config."""
    kind = config.kind
    if kind == "systemd":
        return SystemdTarget(config, plog)
    if kind in ("pidfile", "match"):
        return FoundTarget(config, plog)
    return CommandTarget(config, plog)
